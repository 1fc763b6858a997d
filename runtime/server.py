"""HTTP API over the Recommender (FastAPI + uvicorn, the 'server' extra).

Every bad request gets a 4xx JSON error ``{"error": ..., "detail": ...}``; the server keeps serving.
"""
# No "from __future__ import annotations" here: FastAPI must see the request models (defined
# inside create_app) as real classes, not strings it cannot resolve.
import logging
from typing import Literal, Optional

try:  # the 'server' extra; the module stays importable without it
    from pydantic import StrictBool, StrictInt
except ImportError:  # pragma: no cover
    StrictBool, StrictInt = bool, int

from .catalog import MAX_ID_LEN, MAX_TEXT_LEN, MAX_TITLE_LEN
from .errors import GenreError, RequestError
from .recommender import Recommender
from .request import Request, field_limits

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20  # 1 MiB
MAX_ITEMS_PER_REQUEST = 1000


# strict ints and bools: JSON true is not k = 1, and "yes" is not a bool (the Python API agrees)
_PY_TYPES = {"tuple[str, ...]": list[str], "str | None": Optional[str], "int": StrictInt,
             "int | None": Optional[StrictInt], "float | None": Optional[float], "bool": StrictBool}


def request_body_model():
    """The POST /recommend body: a pydantic model derived from :class:`~genre_edge.request.Request`'s
    fields and limits (one definition of the request; FastAPI publishes it in the OpenAPI schema)."""
    from pydantic import ConfigDict, Field, create_model

    fields = {}
    for name, lim in field_limits().items():
        tp = Optional[Literal[lim["choices"]]] if lim["choices"] else _PY_TYPES[lim["type"]]
        kw = {k: lim[m] for k, m in (("ge", "lo"), ("le", "hi"), ("max_length", "max_len"), ("min_length", "min_len"),
                                     ("description", "doc")) if lim[m] not in (None, "")}
        default = lim["default"]
        spec = Field(default_factory=list, **kw) if isinstance(default, tuple) else Field(default=default, **kw)
        fields[name] = (tp, spec)
    return create_model("RecommendBody", __config__=ConfigDict(extra="forbid"), **fields)


class _TooBig(Exception):
    pass


class BodyLimit:
    """ASGI middleware: at most ``limit`` body bytes per request, counted as they arrive, whatever the
    encoding (a chunked body has no Content-Length to check up front); the request gets a 413 and the
    rest of the body is never read into memory."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        cl = dict(scope.get("headers") or []).get(b"content-length")
        if cl is not None:
            try:
                n = int(cl)
            except ValueError:
                return await _send_json(send, 400, "bad_request", "invalid Content-Length header")
            if n > self.limit:
                return await _send_json(send, 413, "body_too_large", f"request body is over {self.limit} bytes")
        state = {"seen": 0, "too_big": False, "started": False}

        async def counted_receive():
            msg = await receive()
            if msg["type"] == "http.request":
                state["seen"] += len(msg.get("body", b""))
                if state["seen"] > self.limit:
                    state["too_big"] = True
                    raise _TooBig()
            return msg

        async def guarded_send(msg):
            if state["too_big"]:
                return  # whatever the app answers to the broken read, the client gets the 413 below
            if msg["type"] == "http.response.start":
                state["started"] = True
            await send(msg)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _TooBig:
            pass
        if state["too_big"] and not state["started"]:
            await _send_json(send, 413, "body_too_large", f"request body is over {self.limit} bytes")


class HostAllowList:
    """ASGI middleware: answer only requests whose Host header names an allowed host (``*``: any). A web
    page cannot then reach a loopback API through a DNS name it controls (DNS rebinding)."""

    def __init__(self, app, hosts: tuple[str, ...]):
        self.app, self.any = app, "*" in hosts
        self.hosts = {h.strip("[]").lower() for h in hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not self.any:
            raw = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1").lower()
            name = raw[1:raw.index("]")] if raw.startswith("[") and "]" in raw else raw.rsplit(":", 1)[0]
            if name not in self.hosts:
                return await _send_json(send, 400, "bad_host", f"Host {raw!r} is not served here; the server's "
                                        "--allow-host list names the accepted ones")
        await self.app(scope, receive, send)


async def _send_json(send, status: int, error: str, detail: str) -> None:
    import json

    body = json.dumps({"error": error, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def create_app(rec: Recommender, api_key: str | None = None, protect_reads: bool = False,
               allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS):
    """The app. With ``api_key``, writes (POST/DELETE /items) need it in the ``X-API-Key`` header, and
    with ``protect_reads`` every endpoint but /health does (compared in constant time; declared in
    OpenAPI). ``allowed_hosts`` is the Host-header allow-list (default: loopback names, which stops a
    web page from reaching the API through DNS rebinding; ``*`` allows any)."""
    import hmac

    from fastapi import Depends, FastAPI
    from fastapi.security import APIKeyHeader
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.exceptions import HTTPException as StarletteHTTPException

    RecommendBody = request_body_model()

    class Item(BaseModel):
        model_config = ConfigDict(extra="forbid")
        id: str = Field(min_length=1, max_length=MAX_ID_LEN)
        title: str = Field(min_length=1, max_length=MAX_TITLE_LEN)
        categories: list[str] = Field(default_factory=list, max_length=50)
        year: int = Field(default=0, ge=0, le=10000)
        text: str = Field(default="", max_length=MAX_TEXT_LEN)
        timestamp: int = Field(default=0, ge=0, le=2**62)

    class ItemsBody(BaseModel):
        model_config = ConfigDict(extra="forbid")
        items: list[Item] = Field(min_length=1, max_length=MAX_ITEMS_PER_REQUEST)

    class FeedbackBody(BaseModel):
        model_config = ConfigDict(extra="forbid")
        session_id: str = Field(min_length=1, max_length=200)
        item_id: str = Field(min_length=1, max_length=200)
        event: Literal["click", "skip"] = "click"

    app = FastAPI(title="genre-edge", version="1", description="Offline, on-device recommendation.")

    def err(status: int, error: str, detail) -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": error, "detail": detail})

    app.add_middleware(HostAllowList, hosts=tuple(allowed_hosts))
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)  # outermost: before anything reads the body
    key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's API key")

    def check_key(given: Optional[str]):
        if api_key is None:
            return
        if given is None or not hmac.compare_digest(given.encode(), api_key.encode()):
            from fastapi import HTTPException

            raise HTTPException(401, "missing or wrong X-API-Key")

    def write_access(given: Optional[str] = Depends(key_header)):
        check_key(given)

    def read_access(given: Optional[str] = Depends(key_header)):
        if protect_reads:
            check_key(given)

    @app.exception_handler(RequestValidationError)
    async def on_validation(_req, exc: RequestValidationError):
        detail = [{"loc": list(map(str, e.get("loc", ()))), "msg": str(e.get("msg", ""))} for e in exc.errors()]
        return err(422, "invalid_request", detail)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_req, exc: StarletteHTTPException):
        return err(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(GenreError)
    async def on_genre(_req, exc: GenreError):
        return err(400, "bad_request" if isinstance(exc, RequestError) else "error", str(exc))

    @app.exception_handler(Exception)
    async def on_any(_req, exc: Exception):  # never let a bug take the server down
        log.exception("unhandled error")
        return err(500, "internal_error", "internal error; see the server log")

    @app.get("/health")
    def health():
        return {"status": "ok", "items": len(rec.catalog)}

    @app.get("/info", dependencies=[Depends(read_access)])
    def info():
        return rec.info()

    @app.post("/recommend", dependencies=[Depends(read_access)])
    def recommend(body: RecommendBody):
        return rec.recommend(Request(**body.model_dump())).to_dict()

    @app.post("/items", dependencies=[Depends(write_access)])
    def add_items(body: ItemsBody):
        return {"added": rec.add_items([i.model_dump() for i in body.items])}

    @app.delete("/items/{item_id:path}", dependencies=[Depends(write_access)])  # ids may hold '/' (a%2Fb)
    def remove_item(item_id: str):
        unknown = rec.remove_items([item_id])
        if unknown:
            return err(404, "not_found", f"item {item_id!r} is not in the catalog")
        return {"removed": [item_id]}

    @app.post("/feedback", dependencies=[Depends(read_access)])  # session state, not the catalog
    def feedback(body: FeedbackBody):
        rec.feedback(body.session_id, body.item_id, body.event)
        return {"ok": True}

    return app
