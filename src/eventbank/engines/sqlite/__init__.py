"""The embedded engine: one SQLite file for events, another for read models."""
