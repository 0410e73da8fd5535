"""The API docs at ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), working offline.

FastAPI's own docs pages load their scripts, stylesheet and icon from a CDN, so without internet
they stay blank. These pages use the same FastAPI page builders with the assets that the
``fastapi-offline`` package ships (Swagger UI 5, ReDoc 2), served from this process under
``/docs/assets/``. Both pages also carry a Content-Security-Policy that keeps images, fonts and
fetches on this origin: ReDoc's sidebar credit would otherwise ask a CDN for its logo.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.exceptions import HTTPException

ASSETS_PATH = "/docs/assets"
_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
_HEADERS = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}
# scripts and styles are this origin's plus each page's inline ones (FastAPI's page builders)
_PAGE_HEADERS = {
    "Content-Security-Policy": "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
# no "validator.swagger.io" badge: Swagger UI would fetch it from the internet
_SWAGGER_UI_PARAMETERS = {"validatorUrl": None}


@cache
def _asset_bytes(name: str) -> bytes:
    return (resources.files("fastapi_offline") / "static" / name).read_bytes()


def api_docs_routes(app: FastAPI) -> APIRouter:
    """``/docs``, ``/redoc`` and their assets; pair with ``FastAPI(docs_url=None,
    redoc_url=None)`` so FastAPI's CDN pages are not registered as well."""
    router = APIRouter(include_in_schema=False)

    def urls(request: Request) -> tuple[str, str]:
        root = request.scope.get("root_path", "")
        return f"{root}{app.openapi_url}", f"{root}{ASSETS_PATH}"

    @router.get("/docs")
    def swagger_ui(request: Request) -> HTMLResponse:
        openapi_url, assets = urls(request)
        page = get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} API docs",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
            oauth2_redirect_url=None,
            swagger_ui_parameters=_SWAGGER_UI_PARAMETERS,
        )
        page.headers.update(_PAGE_HEADERS)
        return page

    @router.get("/redoc")
    def redoc(request: Request) -> HTMLResponse:
        openapi_url, assets = urls(request)
        page = get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} API reference",
            redoc_js_url=f"{assets}/redoc.standalone.js",
            redoc_favicon_url=f"{assets}/favicon.png",
            with_google_fonts=False,
        )
        page.headers.update(_PAGE_HEADERS)
        return page

    @router.get(ASSETS_PATH + "/{name}")
    def asset(name: str) -> Response:
        if name not in _ASSETS:
            raise HTTPException(404, f"no docs asset named {name!r}")
        return Response(_asset_bytes(name), headers=_HEADERS, media_type=_ASSETS[name])

    return router
