"""The contracts the application needs from storage: the event store and the read store."""
