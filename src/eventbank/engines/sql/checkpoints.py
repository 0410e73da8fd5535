"""Moving a projection's checkpoint: the same statements on SQLite and PostgreSQL."""

from __future__ import annotations


def move_checkpoint(
    projection: str, position: int, only_from: int | None, mark: str
) -> tuple[str, tuple[str | int, ...]]:
    """The statement and parameters that move ``projection``'s checkpoint to ``position``:
    only forward, or (``only_from``) only if it stands at ``only_from`` (a missing row stands
    at 0). ``mark`` is the engine's parameter placeholder."""
    upsert = (
        f"INSERT INTO projection_checkpoints (projection, position) VALUES ({mark}, {mark})"
        " ON CONFLICT (projection) DO UPDATE SET position = excluded.position"
    )
    if only_from is None:
        return f"{upsert} WHERE excluded.position > projection_checkpoints.position", (
            projection, position,
        )  # fmt: skip
    if only_from == 0:
        return f"{upsert} WHERE projection_checkpoints.position = 0", (projection, position)
    return (
        f"UPDATE projection_checkpoints SET position = {mark}"
        f" WHERE projection = {mark} AND position = {mark}",
        (position, projection, only_from),
    )
