output "table_name" {
  description = "Name of the event table."
  value       = aws_dynamodb_table.events.name
}

output "table_arn" {
  description = "ARN of the event table."
  value       = aws_dynamodb_table.events.arn
}

output "stream_arn" {
  description = "ARN of the table's stream, which the projection feed reads."
  value       = aws_dynamodb_table.events.stream_arn
}

output "store_url" {
  description = "Event store URL for eventbank (--store or EVENTBANK_STORE)."
  value       = "dynamodb://${aws_dynamodb_table.events.name}?region=${var.region}"
}
