"""The application layer: commands, sagas, queries, audit and projections, over the ports."""
