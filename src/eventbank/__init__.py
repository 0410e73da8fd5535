"""eventbank: an event-sourced core-banking ledger in which every money movement is ACID."""

__version__ = "0.1.0"
