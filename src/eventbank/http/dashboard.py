"""The operator dashboard: a small page at ``/``, served without a token.

The page (``static/``: one HTML file, one script, one stylesheet; no build step, nothing fetched
from elsewhere) holds no data. It asks for a bearer token, keeps it in the browser tab's
``sessionStorage`` and calls the JSON API with it like any client: ``/whoami``, ``/accounts``,
``/accounts/{id}/events``, ``/stats``, ``/audits/latest`` and ``POST /audits``.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Response
from starlette.exceptions import HTTPException

STATIC = resources.files("eventbank.http") / "static"
_ASSETS = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css"}
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}


def dashboard_routes() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    def index() -> Response:
        return asset("index.html")

    @router.get("/assets/{name}")
    def asset(name: str) -> Response:
        if name not in _ASSETS:
            raise HTTPException(404, f"no asset named {name!r}")
        return Response((STATIC / name).read_bytes(), headers=_HEADERS,
                        media_type=f"{_ASSETS[name]}; charset=utf-8")  # fmt: skip

    return router
