variable "region" {
  description = "AWS region of the event table."
  type        = string
  default     = "us-east-1"
}

variable "table_name" {
  description = "Name of the event table; the store URL is dynamodb://<table_name>."
  type        = string
  default     = "eventbank-events"
}

variable "deletion_protection" {
  description = "Refuse to delete the table (the ledger's source of truth) by accident."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags for the table."
  type        = map(string)
  default     = {}
}
