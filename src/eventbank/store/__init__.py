"""The event-store port (contract.py) and its engines, one self-contained module each."""
