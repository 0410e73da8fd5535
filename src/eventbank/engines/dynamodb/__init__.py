"""The DynamoDB engine: events and read models in two tables."""
