"""The embedded engine's fixture: a fresh SQLite file per test."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def sqlite_store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'events.db'}"


@pytest.fixture
def sqlite_read_store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'events.read.db'}"
