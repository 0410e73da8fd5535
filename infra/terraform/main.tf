# The eventbank event table: the same table `eventbank init` creates on DynamoDB.
#
# PK = aggregate id, SK = version, so two writers at one version collide on one key and the
# store's `attribute_not_exists(PK)` lets exactly one land. It replaces the seed's EventId-keyed
# table (and its AggregateIdIndex GSI), on which two racing events at one version both landed.
# Items with SK = 0 are bookkeeping (EVENT#, CMD#, SNAP# keys); see docs/dynamodb.md.

terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

provider "aws" {
  region = var.region
}

resource "aws_dynamodb_table" "events" {
  name                        = var.table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "PK"
  range_key                   = "SK"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "PK"
    type = "S"
  }

  attribute {
    name = "SK"
    type = "N"
  }

  # The projection feed (read_all) reads this stream.
  stream_enabled   = true
  stream_view_type = "NEW_IMAGE"

  point_in_time_recovery {
    enabled = true
  }

  tags = var.tags
}
