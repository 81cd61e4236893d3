"""The studio's web app: one page and a JSON API over a :class:`~cnnkit.studio.catalog.Catalog`.

Safety: no route takes a file-system path (models and inputs are addressed by ids the server
gave); uploads are read into memory up to a byte cap and decoded by the safe image loader;
errors come back as ``{"error": message}`` with a 4xx/5xx status, never a traceback; the page
may only talk to its own origin (Content-Security-Policy), and requests must name a host the
server answers to (no DNS rebinding onto 127.0.0.1).
"""

from __future__ import annotations

import sys
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ..errors import CnnkitError
from . import views
from .catalog import Catalog
from .inputs import MAX_UPLOAD_BYTES, InputStore, prepare_upload

__all__ = ["LOCAL_HOSTS", "create_app"]

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
# The page and its two files, served from the package (no CDN, no external font).
_STATIC = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def _static(name: str) -> bytes:
    return resources.files("cnnkit.studio").joinpath("static", name).read_bytes()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(catalog: Catalog, *, allowed_hosts: tuple[str, ...] | None = LOCAL_HOSTS) -> FastAPI:
    """The app serving ``catalog``.

    Args:
        catalog: the models, by id.
        allowed_hosts: Host header values accepted (None: any, for ``--host`` other than local).
    """
    app = FastAPI(title="cnnkit studio", docs_url=None, redoc_url=None, openapi_url=None)
    store = InputStore()
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_UPLOAD_BYTES):
            return _error(413, f"request body over the {MAX_UPLOAD_BYTES:,}-byte limit")
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(LookupError)
    async def not_found(_r: Request, exc: LookupError) -> JSONResponse:
        return _error(404, str(exc.args[0]) if exc.args else "not found")

    @app.exception_handler(CnnkitError)
    async def bad_input(_r: Request, exc: CnnkitError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_request(_r: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()]
        return _error(422, "; ".join(parts) or "bad request")

    @app.exception_handler(HTTPException)
    async def http_error(_r: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def failure(request: Request, exc: Exception) -> JSONResponse:
        print(f"cnnkit studio: {request.url.path}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return _error(500, f"the server failed on this request ({type(exc).__name__}); see its console")

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        return Response(_static("index.html"), media_type=_STATIC["index.html"])

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in _STATIC or name == "index.html":
            raise LookupError(f"no file {name!r}")
        return Response(_static(name), media_type=_STATIC[name])

    @app.get("/api/models")
    def models() -> dict[str, Any]:
        return {"models": [entry.describe() for entry in catalog]}

    @app.get("/api/models/{model_id}")
    def model(model_id: str) -> dict[str, Any]:
        entry = catalog.get(model_id)
        return {**entry.describe(), "layers": entry.layers(), "cam_layers": views.cam_layers(entry)}

    @app.post("/api/models/{model_id}/inputs")
    async def upload(model_id: str, request: Request, top: int = 5) -> dict[str, Any]:
        entry = catalog.get(model_id)
        body = bytearray()
        async for chunk in request.stream():  # a body without Content-Length is capped here
            body += chunk
            if len(body) > MAX_UPLOAD_BYTES:
                return _error(413, f"request body over the {MAX_UPLOAD_BYTES:,}-byte limit")

        def answer() -> dict[str, Any]:  # one trip to the worker threads: each costs a wake-up
            pixels, tensor, size = prepare_upload(entry, bytes(body), "upload")
            return views.predict(entry, store.add(entry.id, pixels, tensor, size), max(1, min(top, 20)))

        return await run_in_threadpool(answer)

    @app.get("/api/models/{model_id}/inputs/{input_id}/predict")
    def predict(model_id: str, input_id: str, top: int = 5) -> dict[str, Any]:
        entry = catalog.get(model_id)
        return views.predict(entry, store.get(input_id, entry.id), top=max(1, min(top, 20)))

    @app.get("/api/models/{model_id}/inputs/{input_id}/layers/{index}/maps")
    def maps(model_id: str, input_id: str, index: int) -> dict[str, Any]:
        entry = catalog.get(model_id)
        return views.feature_maps(entry, store.get(input_id, entry.id), index)

    @app.get("/api/models/{model_id}/inputs/{input_id}/layers/{index}/pixel")
    def pixel(model_id: str, input_id: str, index: int, channel: int, row: int, col: int) -> dict[str, Any]:
        entry = catalog.get(model_id)
        return views.pixel(entry, store.get(input_id, entry.id), index, channel, row, col)

    @app.get("/api/models/{model_id}/layers/{index}/weights")
    def weights(model_id: str, index: int, in_channel: int = 0) -> dict[str, Any]:
        return views.weights(catalog.get(model_id), index, in_channel)

    @app.get("/api/models/{model_id}/inputs/{input_id}/gradcam")
    def gradcam(model_id: str, input_id: str, target: int | None = None, layer: int | None = None) -> dict:
        entry = catalog.get(model_id)
        return views.gradcam(entry, store.get(input_id, entry.id), target, layer)

    @app.get("/api/models/{model_id}/history")
    def history(model_id: str) -> dict[str, Any]:
        return views.history(catalog.get(model_id))

    return app
