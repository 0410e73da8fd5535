"""What the SQL engines (SQLite and PostgreSQL) share: group commit and append screening."""
