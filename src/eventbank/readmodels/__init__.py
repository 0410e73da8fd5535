"""Read models (the query side): the port in contract.py and one store module per engine."""
