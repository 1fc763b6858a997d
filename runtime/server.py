"""HTTP API over the Recommender (FastAPI + uvicorn, the 'server' extra).

Every bad request gets a 4xx JSON error ``{"error": ..., "detail": ...}``; the server keeps serving.
"""
# No "from __future__ import annotations" here: FastAPI must see the request models (defined
# inside create_app) as real classes, not strings it cannot resolve.
import asyncio
import json
import logging
from pathlib import Path
from typing import Literal, Optional

try:  # the 'server' extra; the module stays importable without it
    from pydantic import StrictBool, StrictInt
except ImportError:  # pragma: no cover
    StrictBool, StrictInt = bool, int

from .catalog import MAX_ID_LEN, MAX_TEXT_LEN, MAX_TITLE_LEN
from .errors import GenreError, RequestError, StorageError
from .fsutil import loads_strict
from .recommender import MAX_EVENTS, Recommender
from .request import MAX_TIME, Request, field_limits

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20  # 1 MiB
MAX_ITEMS_PER_REQUEST = 1000
# what a write answers when the state folder cannot take it (a full SD card, a read-only file system)
STORAGE_ERROR = {507: {"description": "Insufficient Storage: the state folder cannot take the change (full or "
                                      "read-only); nothing was changed"}}


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


# Requests this small (~0.5-2 ms here, explanations included) run on the event loop itself; larger ones
# (up to ~16 ms over HTTP: k = 1000 with a 10,000-item history, a query and explanations) on the recommend thread.
INLINE_MAX_K = 20
INLINE_MAX_HISTORY = 200


# A connection must deliver a whole request (headers and body) this soon after it opens or after its
# previous response; idle keep-alive connections close after KEEP_ALIVE_S. Before, partial and idle
# connections stayed open for good (an attack run kept 200 of them 13 s+ and counting).
REQUEST_READ_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5
MAX_CONNECTIONS = 1000  # more at once are answered 503 (uvicorn's limit_concurrency)

try:  # the 'server' extra's C HTTP parser
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpTools
except ImportError:  # pragma: no cover - httptools missing
    _HttpTools = None

if _HttpTools is not None:
    class GuardedHttpTools(_HttpTools):
        """uvicorn's httptools protocol with a deadline for reading each request: a connection that
        opens (or starts a request) and does not complete it within ``REQUEST_READ_TIMEOUT_S`` is
        closed, whatever it sent (nothing, part of the headers, part of the body)."""

        _deadline = None

        def _arm(self):
            if self._deadline is None:
                self._deadline = self.loop.call_later(REQUEST_READ_TIMEOUT_S, self._read_timeout)

        def _disarm(self):
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _read_timeout(self):
            self._deadline = None
            if not self.transport.is_closing():
                log.info("closing a connection that sent no complete request in %g s", REQUEST_READ_TIMEOUT_S)
                self.transport.close()

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self):
            super().on_message_begin()
            self._arm()

        def on_message_complete(self):
            self._disarm()
            super().on_message_complete()

        def on_response_complete(self):
            super().on_response_complete()  # arms uvicorn's keep-alive timeout when the connection idles

        def connection_lost(self, exc):
            self._disarm()
            super().connection_lost(exc)
else:  # pragma: no cover
    GuardedHttpTools = None


def uvicorn_options() -> dict:
    """How ``genre serve`` runs uvicorn: the guarded HTTP protocol, keep-alive and connection limits."""
    opts = {"timeout_keep_alive": KEEP_ALIVE_S, "limit_concurrency": MAX_CONNECTIONS}
    if GuardedHttpTools is not None:
        opts["http"] = GuardedHttpTools
    else:
        log.warning("httptools is not installed: partial requests are not timed out (pip install httptools)")
    return opts


def _json_type_ok(value, type_name: str, choices) -> bool:
    """Whether a JSON value has the exact type the body model declares for a field (no coercion)."""
    if value is None:
        return type_name.endswith("| None") or bool(choices)
    if choices:
        return isinstance(value, str)
    if type_name == "tuple[str, ...]":
        return isinstance(value, list)
    if type_name.startswith("str"):
        return isinstance(value, str)
    if type_name.startswith("int"):
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name.startswith("float"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if type_name == "bool":
        return isinstance(value, bool)
    return False


class FastRecommend:
    """ASGI: a valid ``POST /recommend`` answered without FastAPI's routing, dependency injection,
    pydantic validation and response encoder; everything else goes to the FastAPI app untouched.

    Why: those layers cost about 1 ms of the ~2 ms a 50-item-history request took over HTTP on this
    machine, while the recommendation is ~0.5 ms. What is answered here is answered as FastAPI would
    (the body read with the runtime's strict JSON reader, each field's JSON type exactly as the OpenAPI
    model declares it, then ``Request`` validation; the response encoded with FastAPI's JSON settings).
    A body that any of this refuses, a missing API key or an error is handed to the FastAPI app with the
    same bytes, so error answers stay FastAPI's own, byte for byte.
    """

    def __init__(self, app, serving: "Serving", key_check=None, sessions: bool = True):
        from concurrent.futures import ThreadPoolExecutor

        self.app, self.serving, self.key_check, self.sessions = app, serving, key_check, sessions
        self.fields = {name: (lim["type"], lim["choices"]) for name, lim in field_limits().items()}
        # one thread for the heavier requests: two of them at once would hold the GIL in turns and delay
        # the small requests on the event loop (measured: with 2 threads a 50-item request waited up to
        # 146 ms behind k = 1000 / 10,000-item requests; with one, 20 ms)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recommend")
        self.answered = 0  # requests answered here (the rest went to FastAPI)

    def _request(self, body: bytes, headers) -> Request | None:
        if self.key_check is not None and not self.key_check(headers.get(b"x-api-key")):
            return None
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if ctype != b"application/json":
            return None
        try:
            obj = loads_strict(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(obj, dict) or not all(k in self.fields and _json_type_ok(v, *self.fields[k])
                                                for k, v in obj.items()):
            return None
        if obj.get("session_id") is not None and not self.sessions:
            return None  # the app answers with the reason
        try:
            return Request.create(**obj)
        except (GenreError, TypeError):
            return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/recommend" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":  # the client went away
                return
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        body = b"".join(chunks)
        replayed = [False]

        async def replay():
            if not replayed[0]:
                replayed[0] = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        req = self._request(body, dict(scope.get("headers") or []))
        if req is None:
            return await self.app(scope, replay, send)
        try:
            rec = self.serving.rec  # the whole request runs on one recommender, even across a reload
            if req.k <= INLINE_MAX_K and len(req.history) <= INLINE_MAX_HISTORY:
                out = rec.recommend(req)  # ~1 ms: a thread hop would cost a tenth of it
            else:  # heavier work runs off the event loop, so it cannot hold up the other connections
                out = await asyncio.get_running_loop().run_in_executor(self.pool, rec.recommend, req)
            payload = json.dumps(out.to_dict(), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        except Exception:  # an error answer is FastAPI's (the app runs the request again and answers it)
            return await self.app(scope, replay, send)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(payload)).encode()), (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})
        self.answered += 1


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


ENDPOINTS = ("/recommend", "/items", "/feedback", "/events", "/health", "/info", "/metrics", "/openapi.json", "/", "/docs")
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Prometheus counters and latency histograms per endpoint (a fixed label set: a client cannot grow
    it with made-up paths), recorded by :meth:`middleware`, rendered by :meth:`render`."""

    def __init__(self):
        self.counts: dict[tuple[str, str, int], int] = {}
        self.hist: dict[str, list] = {}  # endpoint -> [bucket counts..., sum, count]

    @staticmethod
    def endpoint(path: str) -> str:
        if path in ENDPOINTS:
            return path
        return "/items/{id}" if path.startswith("/items/") else "/static/{file}" if path.startswith("/static/") else "other"

    def record(self, path: str, method: str, status: int, seconds: float) -> None:
        ep = self.endpoint(path)
        key = (ep, method, status)
        self.counts[key] = self.counts.get(key, 0) + 1
        h = self.hist.setdefault(ep, [0] * len(BUCKETS) + [0.0, 0])
        for i, b in enumerate(BUCKETS):
            if seconds <= b:
                h[i] += 1
        h[-2] += seconds
        h[-1] += 1

    def middleware(self, app):
        import time

        async def wrapped(scope, receive, send):
            if scope["type"] != "http":
                return await app(scope, receive, send)
            status = [500]
            t0 = time.perf_counter()

            async def send_status(msg):
                if msg["type"] == "http.response.start":
                    status[0] = msg["status"]
                await send(msg)
            try:
                await app(scope, receive, send_status)
            finally:
                self.record(scope.get("path", ""), scope.get("method", ""), status[0], time.perf_counter() - t0)
        return wrapped

    def render(self, gauges: dict[str, tuple[str, float]], info: dict[str, str]) -> str:
        out = ["# HELP genre_requests_total HTTP requests by endpoint, method and status.",
               "# TYPE genre_requests_total counter"]
        for (ep, m, st), n in sorted(self.counts.items()):
            out.append(f'genre_requests_total{{endpoint="{ep}",method="{m}",status="{st}"}} {n}')
        out += ["# HELP genre_request_seconds Time from request to response, by endpoint.",
                "# TYPE genre_request_seconds histogram"]
        for ep, h in sorted(self.hist.items()):
            for b, n in zip(BUCKETS, h):
                out.append(f'genre_request_seconds_bucket{{endpoint="{ep}",le="{b}"}} {n}')
            out += [f'genre_request_seconds_bucket{{endpoint="{ep}",le="+Inf"}} {h[-1]}',
                    f'genre_request_seconds_sum{{endpoint="{ep}"}} {h[-2]:.6f}',
                    f'genre_request_seconds_count{{endpoint="{ep}"}} {h[-1]}']
        for name, (doc, v) in gauges.items():
            out += [f"# HELP {name} {doc}", f"# TYPE {name} gauge", f"{name} {v}"]
        labels = ",".join(f'{k}="{v}"' for k, v in info.items())
        out += ["# HELP genre_model_info The bundle being served.", "# TYPE genre_model_info gauge",
                f"genre_model_info{{{labels}}} 1"]
        return "\n".join(out) + "\n"


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
    body = json.dumps({"error": error, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
NO_SESSIONS = ("session feedback is kept in one process, and this server runs several workers (--workers): "
               "send the session's clicks in 'history' instead, or serve with --workers 1")
WORKER_ENV = "GENRE_SERVE_WORKER_CONFIG"  # how `genre serve --workers N` hands its options to each worker


def app_from_env():
    """The app of one ``genre serve --workers N`` worker process (a uvicorn factory): the bundle, profile,
    state folder and access options come from the serving command through ``GENRE_SERVE_WORKER_CONFIG``.
    Every worker loads the bundle itself; catalog updates reach all of them through the shared state
    folder (each request checks the updates file's signature, one ``stat``)."""
    import os

    conf = json.loads(os.environ[WORKER_ENV])
    rec = Recommender.load(conf["bundle"], conf["profile"], state_dir=conf["state_dir"])
    return create_app(rec, conf.get("api_key"), conf["protect_reads"], tuple(conf["hosts"]),
                      sessions=conf["workers"] <= 1)


class Serving:
    """The recommender being served. A reload builds a new one from the same bundle folder, profile and
    state folder (every file verified again) and swaps it in whole: requests in flight finish on the one
    they started with, and a bundle that fails to load leaves the old one serving."""

    def __init__(self, rec: Recommender):
        import threading

        self.rec, self.reloads, self._lock = rec, 0, threading.Lock()

    def reload(self) -> dict:
        with self._lock:  # one reload at a time
            old = self.rec
            state = old.catalog.updates_path.parent if old.catalog.updates_path is not None else None
            new = Recommender.load(old.bundle.root, old.profile, state_dir=state)
            self.rec = new
            self.reloads += 1
            log.info("reloaded bundle %s (created %s, %d items)", Path(new.bundle.root).name,
                     new.bundle.manifest.created_at, len(new.catalog))
            return {"reloaded": True, "bundle": Path(new.bundle.root).name, "created_at": new.bundle.manifest.created_at,
                    "variant": new.variant, "items": len(new.catalog), "reloads": self.reloads}


# The page's files are read once, served from memory by name (nothing else on disk is reachable), with a
# policy that lets the page run only its own script and talk only to this server
PAGE_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
              "style.css": "text/css; charset=utf-8"}
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                                           "connect-src 'self'; img-src 'self' data:; form-action 'none'; "
                                           "base-uri 'none'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


def playground_files() -> dict[str, tuple[bytes, str]]:
    """The playground page's files (``genre_edge/static``, package data): name -> (bytes, media type)."""
    from importlib.resources import files

    root = files("genre_edge") / "static"
    return {name: ((root / name).read_bytes(), media) for name, media in PAGE_FILES.items()}


def create_app(rec: Recommender, api_key: str | None = None, protect_reads: bool = False,
               allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS, sessions: bool = True):
    """The app. With ``api_key``, writes (POST/DELETE /items) need it in the ``X-API-Key`` header, and
    with ``protect_reads`` every endpoint but /health does (compared in constant time; declared in
    OpenAPI). ``allowed_hosts`` is the Host-header allow-list (default: loopback names, which stops a
    web page from reaching the API through DNS rebinding; ``*`` allows any). ``sessions=False`` (several
    worker processes: session clicks would stay in the one that got them) refuses /feedback and
    ``session_id`` with a message instead of answering from a partial session."""
    import hmac

    from fastapi import Depends, FastAPI, HTTPException, Query
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

    class Event(BaseModel):
        model_config = ConfigDict(extra="forbid")
        item_id: str = Field(min_length=1, max_length=200)
        time: float = Field(ge=0, le=MAX_TIME, allow_inf_nan=False)

    class EventsBody(BaseModel):
        model_config = ConfigDict(extra="forbid")
        events: list[Event] = Field(min_length=1, max_length=MAX_EVENTS)

    import contextlib

    serving = Serving(rec)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        # SIGHUP reloads the bundle (one process; with --workers, uvicorn's supervisor takes SIGHUP and
        # restarts the workers one by one, keeping the old ones when a new one cannot start)
        import signal

        loop = asyncio.get_running_loop()
        hooked = False
        # the loop keeps only weak references to tasks: a reload task nobody holds may vanish mid-run
        reloads: set = set()
        if sessions and hasattr(signal, "SIGHUP"):
            def on_hup():
                async def run():
                    try:
                        await loop.run_in_executor(None, serving.reload)
                    except Exception as exc:  # a bad bundle: keep serving the old one
                        log.error("reload on SIGHUP failed, still serving the previous bundle: %s", exc)
                task = loop.create_task(run())
                reloads.add(task)
                task.add_done_callback(reloads.discard)
            try:
                loop.add_signal_handler(signal.SIGHUP, on_hup)
                hooked = True
            except (RuntimeError, ValueError, NotImplementedError):  # not the main thread (tests), or no signals
                pass
        yield
        if hooked:
            loop.remove_signal_handler(signal.SIGHUP)

    # no Swagger UI / ReDoc: they load from a CDN, which an offline device cannot reach; /docs is local
    app = FastAPI(title="genre-edge", version="1", description="Offline, on-device recommendation.",
                  docs_url=None, redoc_url=None, lifespan=lifespan)

    def err(status: int, error: str, detail) -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": error, "detail": detail})

    metrics = Metrics()
    key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's API key")

    def key_matches(given: bytes | None) -> bool:
        """Whether the X-API-Key header (bytes) is the server's key, compared in constant time."""
        return api_key is None or (given is not None and hmac.compare_digest(given, api_key.encode()))

    def check_key(given: Optional[str]):
        if not key_matches(given.encode() if given is not None else None):
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
        if isinstance(exc, StorageError):  # a full or read-only state folder: the change was not saved
            return err(507, "insufficient_storage", str(exc))
        return err(400, "bad_request" if isinstance(exc, RequestError) else "error", str(exc))

    @app.exception_handler(Exception)
    async def on_any(_req, exc: Exception):  # never let a bug take the server down
        log.exception("unhandled error")
        return err(500, "internal_error", "internal error; see the server log")

    @app.get("/health")
    def health():
        return {"status": "ok", "items": len(serving.rec.catalog)}

    @app.get("/docs", include_in_schema=False)
    def docs():
        """API docs from the OpenAPI schema, as one self-contained page (no scripts, nothing fetched)."""
        import html

        from fastapi.responses import HTMLResponse

        spec, rows = app.openapi(), []
        for path, ops in spec["paths"].items():
            for method, op in ops.items():
                body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
                ref = body.get("$ref", "").rsplit("/", 1)[-1]
                fields = spec.get("components", {}).get("schemas", {}).get(ref, {}).get("properties", {})
                args = ", ".join(f"{k}: {v.get('description', v.get('type', ''))}" for k, v in fields.items())
                lock = " (API key)" if op.get("security") else ""
                about = " ".join(op.get("description", "").split())  # the endpoint's docstring: what it answers
                rows.append(f"<h3>{method.upper()} {html.escape(path)}{lock}</h3><p>{html.escape(op.get('summary', ''))}"
                            f"</p>{f'<p>{html.escape(about)}</p>' if about else ''}<p><small>{html.escape(args)}</small></p>")
        page = (f"<!doctype html><meta charset=utf-8><title>genre-edge API</title><h1>genre-edge API</h1>"
                f"<p>Machine-readable: <a href='openapi.json'>openapi.json</a></p>{''.join(rows)}")
        return HTMLResponse(page)

    @app.get("/metrics", dependencies=[Depends(read_access)])
    async def prometheus():  # on the event loop: the counters are only touched there
        from fastapi.responses import PlainTextResponse

        r = serving.rec
        gauges = {"genre_catalog_items": ("Active items in the catalog (bundle + on-device).", len(r.catalog)),
                  "genre_reloads_total": ("Bundle reloads since start.", serving.reloads)}
        info = {"variant": r.variant, "profile": r.profile.name,
                "format_version": str(r.bundle.manifest.format_version)}
        return PlainTextResponse(metrics.render(gauges, info), media_type="text/plain; version=0.0.4")

    @app.get("/info", dependencies=[Depends(read_access)])
    def info():
        return {**serving.rec.info(), "reloads": serving.reloads}

    page_files = playground_files()

    def static(name: str):
        from fastapi.responses import Response

        if name not in page_files:
            raise HTTPException(404, f"no such file: {name!r}")
        body, media = page_files[name]
        return Response(body, media_type=media, headers=PAGE_HEADERS)

    @app.get("/", include_in_schema=False)
    def playground():
        """The playground page: form a history, type an instruction, move the knobs, see the top-k."""
        return static("index.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static_file(name: str):
        return static(name)

    @app.get("/items", dependencies=[Depends(read_access)])
    def search_items(q: str = Query("", max_length=200, description="an item id, or text a title contains"),
                     limit: int = Query(20, ge=1, le=200), offset: int = Query(0, ge=0, le=1 << 40)):
        """Search the catalog: the id q exactly, then titles containing q (case-insensitive)."""
        return serving.rec.search_items(q, limit, offset)

    @app.post("/recommend", dependencies=[Depends(read_access)])
    def recommend(body: RecommendBody):
        """Recommend for a history and/or a free-text query. Answers {items: [{id, title, score, categories,
        year, reasons}], strategy, unknown_ids (history ids not in the catalog, ignored), timings_ms (per
        stage), parsed (what the query parser understood, or null), unknown_categories (filter names no
        item has; names match ignoring case)}."""
        if body.session_id is not None and not sessions:
            raise RequestError(NO_SESSIONS)
        return serving.rec.recommend(Request(**body.model_dump())).to_dict()

    @app.post("/items", dependencies=[Depends(write_access)], responses=STORAGE_ERROR)
    def add_items(body: ItemsBody):
        return {"added": serving.rec.add_items([i.model_dump() for i in body.items])}

    # ids may hold '/' (a%2Fb)
    @app.delete("/items/{item_id:path}", dependencies=[Depends(write_access)], responses=STORAGE_ERROR)
    def remove_item(item_id: str):
        unknown = serving.rec.remove_items([item_id])
        if unknown:
            return err(404, "not_found", f"item {item_id!r} is not in the catalog")
        return {"removed": [item_id]}

    @app.post("/feedback", dependencies=[Depends(read_access)])  # session state, not the catalog
    def feedback(body: FeedbackBody):
        """A click or skip in a session: the next request with its session_id reflects it. 404 (nothing
        recorded) for an item id the catalog lacks."""
        if not sessions:
            raise RequestError(NO_SESSIONS)
        if not serving.rec.feedback(body.session_id, body.item_id, body.event):
            return err(404, "not_found", f"item {body.item_id!r} is not in the catalog (nothing recorded)")
        return {"ok": True}

    @app.post("/events", dependencies=[Depends(write_access)], responses=STORAGE_ERROR)  # changes every user's popularity
    def record_events(body: EventsBody):
        """Count interaction events into trending popularity (bundles calibrated with it); durable and shared
        with every worker through the state folder, as catalog changes are."""
        return serving.rec.record_events([e.model_dump() for e in body.events])

    @app.post("/admin/reload", dependencies=[Depends(write_access)])
    def reload_bundle():
        """Load the bundle folder again (after it was replaced) and serve it; a bad bundle is refused and
        the running one keeps serving."""
        if not sessions:
            raise RequestError("several workers serve this port: send SIGHUP to the `genre serve` supervisor "
                               "process instead (it restarts them one by one)")
        return serving.reload()

    def key_ok(given: bytes | None) -> bool:  # the fast path's read access (as read_access)
        return not protect_reads or key_matches(given)

    # outermost first: every answer is counted (413s and bad hosts too); the Host check and the body
    # limit come before anything reads the body; then the fast path, then FastAPI
    fast = FastRecommend(app, serving, key_ok, sessions)
    outer = metrics.middleware(HostAllowList(BodyLimit(fast, MAX_BODY_BYTES), tuple(allowed_hosts)))
    outer.fastapi, outer.fast = app, fast
    return outer
