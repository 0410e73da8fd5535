"""Shared fixtures. Every test that takes ``store_url``/``store``/``service`` runs once per engine.

An engine plugs in by providing a module under ``tests/engines/`` with a function-scoped fixture
named ``<engine>_store_url`` that yields the URL of a fresh, empty event store (and cleans up),
listed in ``ENGINES`` and ``pytest_plugins`` below. Nothing else changes: the contract suite,
the service tests and the concurrency scenarios then run against it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from eventbank.application.service import LedgerService
from eventbank.engines.urls import open_store
from eventbank.ports.event_store import EventStore

ENGINES = ["sqlite", "postgres", "dynamodb"]
ORDERED_ENGINES = ["sqlite", "postgres"]  # read_all follows commit order (docs/architecture.md)
pytest_plugins = [
    "tests.engines.sqlite_engine",
    "tests.engines.postgres_engine",
    "tests.engines.dynamodb_engine",
]


@pytest.fixture(params=ENGINES)
def store_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_store_url")


# One store per engine shared by the tests of a module that take it (``<engine>_module_store_url``):
# for many checks of one prepared state, each of which proves it left that state unchanged.
@pytest.fixture(scope="module", params=ENGINES)
def module_store_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_module_store_url")


# Read-model stores plug in the same way, with a ``<engine>_read_store_url`` fixture.
READ_ENGINES = ["sqlite", "postgres", "dynamodb"]


@pytest.fixture(params=READ_ENGINES)
def read_store_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_read_store_url")


@pytest.fixture(params=ORDERED_ENGINES)
def ordered_store(request: pytest.FixtureRequest) -> Iterator[EventStore]:
    handle = open_store(request.getfixturevalue(f"{request.param}_store_url"))
    yield handle
    handle.close()


@pytest.fixture
def make_store(store_url: str) -> Iterator[Callable[[], EventStore]]:
    """Opens further handles on the same store (another 'process' view); all closed afterwards."""
    opened: list[EventStore] = []

    def make() -> EventStore:
        opened.append(open_store(store_url))
        return opened[-1]

    yield make
    for handle in opened:
        handle.close()


@pytest.fixture
def store(make_store: Callable[[], EventStore]) -> EventStore:
    return make_store()


@pytest.fixture
def service(store: EventStore) -> LedgerService:
    return LedgerService(store)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Figures the tests measured (``record_property("figure", text)``), printed after the run;
    a test's own print would be lost in its xdist worker."""
    figures = [value for report in terminalreporter.stats.get("passed", [])
               if report.when == "call"
               for name, value in report.user_properties if name == "figure"]  # fmt: skip
    if figures:
        terminalreporter.section("figures")
        for figure in figures:
            terminalreporter.write_line(figure)
