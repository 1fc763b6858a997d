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


def create_app(rec: Recommender):
    from fastapi import FastAPI, Request as HTTPRequest
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

    @app.middleware("http")
    async def limit_body(request: HTTPRequest, call_next):
        cl = request.headers.get("content-length")
        if cl is not None:
            try:
                too_big = int(cl) > MAX_BODY_BYTES
            except ValueError:
                return err(400, "bad_request", "invalid Content-Length header")
            if too_big:
                return err(413, "body_too_large", f"request body is over {MAX_BODY_BYTES} bytes")
        return await call_next(request)

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

    @app.get("/info")
    def info():
        return rec.info()

    @app.post("/recommend")
    def recommend(body: RecommendBody):
        return rec.recommend(Request(**body.model_dump())).to_dict()

    @app.post("/items")
    def add_items(body: ItemsBody):
        return {"added": rec.add_items([i.model_dump() for i in body.items])}

    @app.delete("/items/{item_id:path}")  # ids may hold '/' (a%2Fb arrives decoded)
    def remove_item(item_id: str):
        unknown = rec.remove_items([item_id])
        if unknown:
            return err(404, "not_found", f"item {item_id!r} is not in the catalog")
        return {"removed": [item_id]}

    @app.post("/feedback")
    def feedback(body: FeedbackBody):
        rec.feedback(body.session_id, body.item_id, body.event)
        return {"ok": True}

    return app
