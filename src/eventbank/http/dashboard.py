"""The operator dashboard: a small page at ``/``, served without a token.

The page (``static/``: one HTML file, a stylesheet and a few ES modules, one per page; no build
step, nothing fetched from elsewhere) holds no data. It asks for a bearer token, keeps it in the
browser tab's ``sessionStorage`` and calls the JSON API with it like any client; the API enforces
the roles, the page only hides what a role may not do.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Response
from starlette.exceptions import HTTPException

STATIC = resources.files("eventbank.http") / "static"
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
_ASSETS = {f.name: _TYPES[f.name[f.name.rindex(".") :]] for f in STATIC.iterdir()
           if "." in f.name and f.name[f.name.rindex(".") :] in _TYPES}  # fmt: skip
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
