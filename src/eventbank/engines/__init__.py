"""Storage engines (SQLite, PostgreSQL, DynamoDB), each behind the contracts in ``ports``."""
