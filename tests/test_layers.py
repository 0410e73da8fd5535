"""The direction of imports inside ``src/eventbank``: dependencies point inward.

Layers, innermost first: the domain (pure rules, no I/O); the ports (the contracts storage must
keep); then, side by side and blind to each other, the engines (storage behind the ports) and the
application (commands, sagas, queries, projections, over the ports); the composition root
(``wiring``) that joins them; and the interfaces (CLI and HTTP) on top. A module may import its
own layer and the layers below it, never a layer above or beside it, and no modules import each
other in a circle. Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "eventbank"

RANK = {"domain": 0, "ports": 1, "engines": 2, "application": 2, "wiring": 3,
        "ledger_process": 3.5, "cli": 4, "http": 4, "webhooks": 0, "backoff": 0,
        "gc_tuning": 0}  # fmt: skip
"""What each layer may import: anything of a lower rank, and its own layer. ``webhooks`` is the
receivers' signature helper, ``backoff`` the retry loops' wait and ``gc_tuning`` a server
process's collector settings: standard library only, importable by any layer. ``ledger_process``
runs a ledger ``wiring`` opens in a child process, for the HTTP service."""


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def module_name(path: Path) -> str:
    relative = path.relative_to(SRC).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every ``eventbank`` module ``path`` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("eventbank.")}


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: {i for i in imports_of(path) if i in modules and i != name}
            for name, path in modules.items()}  # fmt: skip


def forbidden(importer: str, imported: str) -> bool:
    """Whether the layering forbids ``importer`` to import ``imported``."""
    mine, theirs = layer_of(importer), layer_of(imported)
    if mine is None or theirs is None or mine == theirs:
        return False
    if {mine, theirs} == {"cli", "http"}:
        return mine == "http"  # the CLI starts the HTTP service; HTTP never runs the CLI
    return RANK[theirs] >= RANK[mine]


def test_every_module_belongs_to_a_layer():
    loose = [m for m in graph() if m != "eventbank" and layer_of(m) is None]
    assert loose == [], f"modules outside every layer: {loose}"


def test_no_module_imports_a_layer_above_or_beside_its_own():
    wrong = sorted(f"{a} -> {b}" for a, targets in graph().items() for b in targets
                   if forbidden(a, b))  # fmt: skip
    assert wrong == []


def test_no_modules_import_each_other_in_a_circle():
    edges, circles = graph(), []
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                circles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert circles == []


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("eventbank.engines.sqlite.event_store", "eventbank.application.service"),
        ("eventbank.domain.account", "eventbank.ports.event_store"),
        ("eventbank.application.service", "eventbank.engines.urls"),
        ("eventbank.ports.event_store", "eventbank.wiring"),
        ("eventbank.http.app", "eventbank.cli.serve"),
    ],
)
def test_the_rule_refuses_an_arrow_pointing_up_or_sideways(importer, imported):
    """The check itself can fail: an engine importing the service is refused, and so on."""
    assert forbidden(importer, imported)


def test_the_rule_finds_a_planted_upward_import(tmp_path):
    """An engine module that imports the service makes the layering test fail."""
    planted = tmp_path / "eventbank" / "engines"
    planted.mkdir(parents=True)
    (planted / "bad.py").write_text("from eventbank.application.service import LedgerService\n")
    found = imports_of(planted / "bad.py")
    assert any(forbidden("eventbank.engines.bad", name) for name in found)
