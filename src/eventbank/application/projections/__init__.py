"""Projections: fold the event feed into read models, exactly once and in stream order."""
