"""One error shape for every HTTP answer that is not a success: `{"error": "...", "type": "..."}`.

Our own errors (`ReasonRecError` -> its `http_status`), FastAPI's validation errors (422, plus a
`detail` list), Starlette's 404/405 and body-parsing 400s, the body guard's 413/415 and bugs (500)
all come out alike, so a client parses every failure the same way. No message may reveal where the
server keeps its files: `Redactor` replaces the server's own folders with `<server path>`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterable
from http import HTTPStatus
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from reasonrec.errors import ReasonRecError

log = logging.getLogger(__name__)

JSON_TYPES = ("application/json",)  # plus any `application/<x>+json`


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: str = Field(description="What went wrong and how to fix it, in one sentence.")
    type: str = Field(description="A stable name for the kind of error, e.g. UnknownUserError, ValidationError.")
    detail: list[dict[str, Any]] | None = Field(None, description="422 only: one entry per invalid field.")


class ServerBusyError(ReasonRecError):
    """The model queue is full; the client should retry after `retry_after_s` seconds."""

    http_status = 429

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


_WHEN = {
    400: "A request that breaks a rule the schema cannot express, or a body that is not UTF-8 JSON.",
    404: "Unknown user, item, session or route.",
    409: "Valid, not satisfiable: fewer unseen items match than `k`, the body names an unknown item, or "
    "another message to the chat session was answered meanwhile (send it again).",
    413: "The body is larger than the server's limit.",
    415: "The body is not JSON (send `content-type: application/json`).",
    422: "The body or a parameter does not match the schema.",
    429: "The model queue is full; retry after `Retry-After` seconds.",
    503: "The model or the vector store is unavailable.",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry of a route: each status with the `ErrorBody` model and when it happens."""
    out: dict[int | str, dict[str, Any]] = {}
    for s in statuses:
        out[s] = {"model": ErrorBody, "description": _WHEN[s]}
        if s == 429:
            out[s]["headers"] = _RETRY_AFTER
    return out


class Redactor:
    """Replace the server's own folders (home, cwd, caches, stores, temp, Python) in a message.

    Args:
        extra: more folders or files to hide, e.g. the session database and the Chroma store.
    """

    def __init__(self, extra: Iterable[str | Path | None] = ()):
        roots = {str(Path.home()), os.getcwd(), tempfile.gettempdir(), sys.prefix, sys.base_prefix}
        roots |= {
            str(Path(os.environ[v]).expanduser()) for v in ("REASONREC_HOME", "REASONREC_MODELS") if v in os.environ
        }
        roots |= {str(Path(p).expanduser()) for p in extra if p}
        roots |= {str(Path(r).resolve()) for r in list(roots)}
        roots = {r.rstrip("/") for r in roots if len(r.rstrip("/")) > 1}  # never "/" itself: URLs start with it
        alternatives = "|".join(re.escape(r) for r in sorted(roots, key=len, reverse=True))
        self._re = re.compile(rf"(?:{alternatives})(?:/[^\s'\"),;]*)?") if alternatives else None

    def __call__(self, text: str) -> str:
        return self._re.sub("<server path>", text) if self._re else text


def validation_message(errors: list[dict[str, Any]]) -> str:
    """'k: Input should be a valid integer; user_id: ...' from pydantic/FastAPI error dicts."""
    parts = []
    for err in errors[:20]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = f"; and {len(errors) - 20} more" if len(errors) > 20 else ""
    return "invalid request: " + "; ".join(parts) + more


def error_json(status: int, message: str, kind: str, headers: dict[str, str] | None = None, **extra: Any) -> Any:
    """A JSONResponse in the one error shape."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message, "type": kind, **extra}, status, headers=headers)


def status_kind(status: int) -> str:
    """'NotFound' for 404, 'MethodNotAllowed' for 405, ... (the `type` of framework errors)."""
    try:
        return HTTPStatus(status).phrase.title().replace(" ", "").replace("-", "")
    except ValueError:
        return f"Http{status}"


def install_error_handlers(app: Any, redact: Redactor) -> None:
    """Register the handlers that turn every failure into `ErrorBody` JSON."""
    from fastapi import Request
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(ReasonRecError)
    async def _ours(_: Request, exc: ReasonRecError) -> Any:
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, ServerBusyError) else None
        return error_json(exc.http_status, redact(str(exc)), type(exc).__name__, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Any:
        # `input` would echo the body back (megabytes, or someone's history); `ctx`/`url` are noise.
        errors = [{k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in exc.errors()[:50]]
        errors = jsonable_encoder(errors)
        return error_json(422, redact(validation_message(errors)), "ValidationError", detail=errors)

    @app.exception_handler(HTTPException)
    async def _framework(request: Request, exc: HTTPException) -> Any:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        if exc.status_code == 404 and exc.detail == "Not Found":
            message = f"no route {request.method} {request.url.path}; see /openapi.json for the API"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; allowed: {headers['Allow']}"
        else:
            message = str(exc.detail)
        return error_json(exc.status_code, redact(message), status_kind(exc.status_code), headers or None)

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> Any:
        # A bug in reasonrec, not the client's fault: logged here, and still JSON for the client.
        log.exception("unhandled error while serving a request")
        return error_json(500, f"internal error ({type(exc).__name__}); see the server log", "InternalError")


def allowed_methods(request: Any) -> list[str]:
    """Every method some route accepts on this request's path (Starlette alone names only the first route's)."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "__none__"})
        if match is Match.PARTIAL and getattr(route, "methods", None):
            methods |= set(route.methods)
    return sorted(methods)


class BodyGuard:
    """ASGI middleware: bodies over `max_bytes` get 413, non-JSON bodies 415, before any route runs.

    Why read the body here: a chunked upload has no Content-Length to check, and a route must never
    start parsing (or echo back) megabytes. Bodies of this API are small, so holding one is cheap.
    """

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        declared = headers.get("content-length", "")
        if declared.strip().isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
        if body and not is_json(headers.get("content-type", "")):
            got = headers.get("content-type") or "none"
            await error_json(
                415, f"the body must be JSON (content-type: application/json), got {got}", "UnsupportedMediaType"
            )(scope, receive, send)
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = f"the body is larger than {self.max_bytes} bytes; send less (see the limits in /openapi.json)"
        await error_json(413, message, "PayloadTooLarge", {"Connection": "close"})(scope, receive, send)


def is_json(content_type: str) -> bool:
    """application/json or application/<x>+json, with any parameters."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))
