"""The PostgreSQL engine: events and read models in one database."""
