"""HTTP API over the Recommender (FastAPI + uvicorn, the 'server' extra).

Every bad request gets a 4xx JSON error ``{"error": ..., "detail": ...}``; the server keeps serving.
"""
# No "from __future__ import annotations" here: FastAPI must see the request models (defined
# inside create_app) as real classes, not strings it cannot resolve.
import logging
from typing import Optional

from .errors import GenreError, RequestError
from .recommender import MAX_HISTORY, MAX_K, MAX_QUERY_CHARS, Recommender

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20  # 1 MiB
MAX_ITEMS_PER_REQUEST = 1000


def create_app(rec: Recommender):
    from typing import Literal

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.exceptions import HTTPException as StarletteHTTPException

    class RecommendBody(BaseModel):
        model_config = ConfigDict(extra="forbid")
        history: list[str] = Field(default_factory=list, max_length=MAX_HISTORY)
        query: Optional[str] = Field(default=None, max_length=MAX_QUERY_CHARS)
        k: int = Field(default=10, ge=1, le=MAX_K)
        strategy: Optional[Literal["content", "cf", "hybrid", "query"]] = None
        query_weight: Optional[float] = Field(default=None, ge=0, le=1)
        include_categories: list[str] = Field(default_factory=list, max_length=100)
        exclude_categories: list[str] = Field(default_factory=list, max_length=100)
        year_min: Optional[int] = Field(default=None, ge=0, le=10000)
        year_max: Optional[int] = Field(default=None, ge=0, le=10000)
        since: Optional[int] = Field(default=None, ge=0, le=2**62)
        until: Optional[int] = Field(default=None, ge=0, le=2**62)
        exclude_seen: bool = True
        mmr_lambda: Optional[float] = Field(default=None, ge=0, le=1)
        freshness_half_life_days: Optional[float] = Field(default=None, ge=0, le=1e6)
        popularity_penalty: Optional[float] = Field(default=None, ge=0, le=100)
        exploration: Optional[float] = Field(default=None, ge=0, le=10)
        seed: Optional[int] = Field(default=None, ge=0, le=2**63 - 1)
        explain: bool = False
        session_id: Optional[str] = Field(default=None, min_length=1, max_length=200)

    class Item(BaseModel):
        model_config = ConfigDict(extra="forbid")
        id: str = Field(min_length=1, max_length=200)
        title: str = Field(min_length=1, max_length=500)
        categories: list[str] = Field(default_factory=list, max_length=50)
        year: int = Field(default=0, ge=0, le=10000)
        text: str = Field(default="", max_length=4000)
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
    async def limit_body(request: Request, call_next):
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
        return rec.recommend(**body.model_dump()).to_dict()

    @app.post("/items")
    def add_items(body: ItemsBody):
        return {"added": rec.add_items([i.model_dump() for i in body.items])}

    @app.delete("/items/{item_id}")
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
