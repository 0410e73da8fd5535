"""Many rows in one statement: an INSERT from one array parameter per column.

Why not ``executemany``: in pipeline mode it still sends and runs one statement per row, each
bound, executed and answered on its own (for a group-commit batch's read models, seven per
transfer); and not ``VALUES (%s, …), (%s, …)``: psycopg re-parses a query with more than 50
parameters at every execution (its cache refuses them), and every batch size would be a
statement of its own. This one has one text, parsed and prepared once, whatever the number of
rows. The arrays go in binary (``%b``): as text, every quote in a JSON payload would be
escaped by a regular expression in Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_JSON = ("json", "jsonb")  # sent as text[], each element cast


def unnest_insert(
    table: str, columns: tuple[str, ...], types: tuple[str, ...], then: str = "", where: str = ""
) -> str:
    """``INSERT INTO table (columns) SELECT … FROM unnest(arrays)``, in array order, the rows
    ``where`` holds (a condition on ``batch.<column>``) if given, followed by ``then`` (an
    ``ON CONFLICT`` or ``RETURNING`` clause). ``types``: each column's SQL type; a json or
    jsonb column's values are text."""
    typed = list(zip(columns, types, strict=True))
    arrays = ", ".join("%b::text[]" if kind in _JSON else f"%b::{kind}[]" for _, kind in typed)
    selected = ", ".join(f"{name}::{kind}" if kind in _JSON else name for name, kind in typed)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT {selected} FROM unnest({arrays})"
        f" WITH ORDINALITY AS batch({', '.join(columns)}, n){where and ' WHERE ' + where}"
        f" ORDER BY n{then and ' ' + then}"
    )


def columns_of(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Rows turned into one list per column: the array parameters of ``unnest_insert``."""
    return [list(column) for column in zip(*rows, strict=True)]
