"""Following a cursor-paged listing of the HTTP API to its end, as a client would."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi.testclient import TestClient


def every_item(
    client: httpx.Client | TestClient, path: str, cursor: str, **params: str
) -> list[dict[str, Any]]:
    """Every item of ``path``, the ``next`` of each page sent back as ``cursor``."""
    seen: list[dict[str, Any]] = []
    after = None
    while True:
        step = client.get(path, params={**params, **({cursor: after} if after else {})})
        assert step.status_code == 200, step.text
        seen += step.json()["items"]
        if (after := step.json()["next"]) is None:
            return seen
