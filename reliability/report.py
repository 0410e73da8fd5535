"""The chaos report: what happened (left) beside what the checker found (right), then details."""

from __future__ import annotations

from itertools import zip_longest

from reliability.checker import INVARIANTS, CheckReport

DETAILS_PER_INVARIANT = 10


def render(report: CheckReport, title: list[str]) -> str:
    counts = report.counts
    attempted = sum(n for key, n in counts.items() if key.startswith("transfer_"))
    left = [
        ("transfers attempted", attempted),
        ("  acknowledged", counts["transfer_ok"]),
        ("  refused (insufficient funds)", counts["transfer_refused"]),
        ("  indeterminate", counts["transfer_indeterminate"]),
        ("    of which applied", counts["indeterminate_applied"]),
        ("  failed unexpectedly", counts["transfer_error"]),
        ("indeterminate requests (answer lost)", counts["indeterminate_requests"]),
        ("answers lost (retried, same key)", counts["answers_lost"]),
        ("acknowledged after a lost answer", counts["ok_after_lost_answer"]),
        ("503 store_unavailable answers", counts["answers_503"]),
        ("pending transfers acknowledged", counts["hold_ok"]),
        (
            "  posted / voided / expired",
            f"{counts['post_ok']}/{counts['void_ok']}/{counts['expired']}",
        ),
        ("  post or void refused (closed)", counts["post_refused"] + counts["void_refused"]),
        ("balance reads", counts["read"]),
        ("crashes injected", counts["crash"]),
        *_kinds(report, "crash"),
        ("resource faults injected", counts["fault"]),
        *_kinds(report, "fault"),
    ]
    found = report.by_invariant()
    right = [(f"{n} {name}", len(found[n])) for n, name in INVARIANTS.items()]
    lines = [*title, "", f"  {'what happened':<36}{'':>8}    {'invariant':<48}violations"]
    for happened, checked in zip_longest(left, right):
        text = f"  {happened[0]:<36}{happened[1]:>8}" if happened else " " * 46
        if checked:
            text += f"    {checked[0]:<48}{checked[1]:>10}"
        lines.append(text.rstrip())
    verdict = "PASS" if report.ok else "FAIL"
    lines += ["", f"  {verdict}: {len(report.violations)} violation(s)"]
    for number, details in found.items():
        for detail in details[:DETAILS_PER_INVARIANT]:
            lines.append(f"  [{number}] {detail}")
        if len(details) > DETAILS_PER_INVARIANT:
            lines.append(f"  [{number}] … and {len(details) - DETAILS_PER_INVARIANT} more")
    return "\n".join(lines) + "\n"


def _kinds(report: CheckReport, op: str) -> list[tuple[str, int]]:
    prefix = f"{op}:"
    return sorted((f"  {key[len(prefix) :]}", n) for key, n in report.counts.items()
                  if key.startswith(prefix))  # fmt: skip
