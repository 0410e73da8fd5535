"""The HTTP interface: a thin FastAPI layer over the same service and queries as the CLI."""
