"""The embedded engine's fixtures: a fresh SQLite file per test (or per module)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def sqlite_store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'events.db'}"


@pytest.fixture
def sqlite_read_store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'events.read.db'}"


@pytest.fixture(scope="module")
def sqlite_module_store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('module-store') / 'events.db'}"
