"""``eventbank transfer --batch FILE.csv [--atomic]``: a batch of transfers from a CSV file.

Each line is ``from_account_id,to_account_id,amount,idempotency_key``; a header line naming
those columns may come first. Every line is a transfer with its own key and outcome
(application/batch.py): a refused line does not stop the others, unless ``--atomic``. Exit
codes: 0 when every line was transferred (now or, replayed, before); 3 when any line was
refused (each is printed with its reason; running the file again is safe: lines done are
replayed); 2 for a file that cannot be read as a batch (nothing is attempted).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import typer

from eventbank.application.batch import (
    MAX_BATCH_ITEMS,
    BatchAborted,
    BatchItem,
    ItemResult,
    tally,
)
from eventbank.application.service import LedgerService
from eventbank.cli.common import Command, out, print_json
from eventbank.domain.errors import InvalidInput
from eventbank.ports.event_store import BatchTooLarge

COLUMNS = ("from_account_id", "to_account_id", "amount", "idempotency_key")
MAX_FILE_BYTES = 1024 * 1024
EXIT_REFUSED = 3  # as cli/__init__.py: refused by a business rule


class TransferCommand(Command):
    """``transfer``: FROM_ID TO_ID AMOUNT are required (and shown so), unless ``--batch``
    names a file of transfers instead."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._arguments = [p for p in self.params if p.param_type_name == "argument"]
        for param in self._arguments:
            param.required = True

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        batching = any(arg == "--batch" or arg.startswith("--batch=") for arg in args)
        for param in self._arguments:
            param.required = not batching
        return super().parse_args(ctx, args)


def read_batch(path: Path) -> tuple[list[BatchItem], list[int]]:
    """The transfers of a batch file, and the line each is on. A line with the wrong number of
    columns is an item refused on its own; a file that is no batch at all is refused whole
    (``InvalidInput``: exit 2)."""
    if not path.is_file():
        raise InvalidInput(f"{path} is not a readable file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise InvalidInput(f"{path} is over {MAX_FILE_BYTES // 1024} KiB")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not UTF-8 text") from None
    items: list[BatchItem] = []
    lines: list[int] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            cells = [cell.strip() for cell in row]
            if not any(cells):
                continue
            if not items and [cell.lower() for cell in cells] == list(COLUMNS):
                continue  # the header
            items.append(_item(cells))
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise InvalidInput(f"{path} line {reader.line_num}: {exc}") from None
    if not items:
        raise InvalidInput(f"{path} holds no transfers")
    if len(items) > MAX_BATCH_ITEMS:
        raise BatchTooLarge(
            f"{path} holds {len(items):,} transfers; a batch holds at most {MAX_BATCH_ITEMS:,}: "
            "split the file"
        )
    return items, lines


def _item(cells: list[str]) -> BatchItem:
    if len(cells) != len(COLUMNS):
        key = cells[3] if len(cells) > 3 else None
        problem = InvalidInput(
            f"expected {len(COLUMNS)} columns ({','.join(COLUMNS)}), got {len(cells)}"
        )
        return BatchItem("", "", "", key, problem)
    from_id, to_id, amount, key = cells
    return BatchItem(from_id, to_id, amount, key or None)


def run_batch(
    service: LedgerService,
    batch: tuple[list[BatchItem], list[int]],
    *,
    atomic: bool,
    as_json: bool,
) -> None:
    """Run a file's transfers (``read_batch``) and report them; exit 3 if any was refused."""
    items, lines = batch
    results = service.transfer_batch(items, atomic=atomic)
    counts = tally(results)
    if as_json:
        print_json({"results": [_as_json(r, lines[r.index]) for r in results], **counts})
    else:
        _print_report(results, lines, counts, atomic)
    if counts["refused"]:
        raise typer.Exit(EXIT_REFUSED)


def _as_json(result: ItemResult, line: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "index": result.index,
        "line": line,
        "idempotency_key": result.idempotency_key,
        "status": result.status,
    }
    if result.outcome is not None:
        body["transfer"] = dict(result.outcome)
    if result.error is not None:
        body["error"] = {"code": result.error.code, "detail": str(result.error)}
    return body


def _print_report(
    results: list[ItemResult], lines: list[int], counts: dict[str, int], atomic: bool
) -> None:
    replayed = f" ({counts['replayed']} replayed)" if counts["replayed"] else ""
    summary = (
        f"{counts['succeeded']} of {len(results)} transfers done{replayed}, "
        f"{counts['refused']} refused"
    )
    if atomic and counts["refused"]:
        summary += "; the batch is atomic, so none was written"
    out.print(summary, markup=False)
    for result in results:
        if result.error is None or isinstance(result.error, BatchAborted):
            continue  # an atomic batch's other lines: the summary says it
        key = f" ({result.idempotency_key})" if result.idempotency_key else ""
        out.print(
            f"  line {lines[result.index]}{key}: {result.error.code}: {result.error}",
            markup=False,
            soft_wrap=True,
        )
