"""Many rows in one statement: an INSERT from one JSON document holding every row.

Why not ``executemany``: in pipeline mode it still sends and runs one statement per row, each
bound, executed and answered on its own (for a group-commit batch's read models, seven per
transfer); and not ``VALUES (%s, …), (%s, …)``: psycopg re-parses a query with more than 50
parameters at every execution (its cache refuses them), and every batch size would be a
statement of its own. This one has one text, parsed and prepared once, whatever the number of
rows, and one parameter: the rows as a JSON array of arrays, made by ``json.dumps`` in C.
PostgreSQL takes each row's fields out of the document and casts them to their columns' types.
An array per column (``unnest``) made the same statement, but psycopg builds every array
element by element in Python: for a projected batch that was the largest part of the client's
CPU (docs/performance.md, "The event loop's share, and PostgreSQL's rows as one JSON
document").

Every value is text, an integer or None (null); a json or jsonb column's value is its JSON
text, which a ``json`` column keeps as it is (payloads read back byte for byte as written).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def insert_rows(
    table: str, columns: tuple[str, ...], types: tuple[str, ...], then: str = "", where: str = ""
) -> str:
    """``INSERT INTO table (columns) SELECT … FROM`` the rows of the document (``rows_param``),
    in their order, the rows ``where`` holds (a condition on ``batch.<column>``) if given,
    followed by ``then`` (an ``ON CONFLICT`` or ``RETURNING`` clause). ``types``: each
    column's SQL type, in the rows' order."""
    typed = enumerate(zip(columns, types, strict=True))
    fields = ", ".join(f"(item->>{index})::{kind} AS {name}" for index, (name, kind) in typed)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(columns)} FROM"
        f" (SELECT {fields}, n FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS"
        f" given(item, n)) AS batch{where and ' WHERE ' + where} ORDER BY n{then and ' ' + then}"
    )


def rows_param(rows: Sequence[Sequence[Any]]) -> tuple[str]:
    """The parameters of an ``insert_rows`` statement: the rows as one JSON document."""
    return (_encode(rows),)
