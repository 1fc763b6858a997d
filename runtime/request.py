"""One recommendation request: the options, their limits and the strategy names, defined once.

The Python API (``Recommender.recommend``) takes a :class:`Request` (or builds one from keyword
arguments), the CLI builds one from its options, and the HTTP server derives its JSON body schema
from the same fields (:func:`field_limits`), so a limit changed here changes everywhere. ``None``
means "the bundle's default" for every optional option.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field

from .errors import RequestError

STRATEGIES = ("content", "cf", "hybrid", "query")
MAX_K = 1000
MAX_HISTORY = 10000
MAX_QUERY_CHARS = 2000
MAX_CATEGORIES = 100
MAX_SESSION_ID = 200
MAX_YEAR = 10000
MAX_TIME = 2**62
MAX_SEED = 2**63 - 1


def _opt(default, *, lo=None, hi=None, max_len=None, min_len=None, choices=None, doc=""):
    """A request option with its limits (read by :meth:`Request.validate` and the HTTP schema)."""
    meta = {"lo": lo, "hi": hi, "max_len": max_len, "min_len": min_len, "choices": choices, "doc": doc}
    if isinstance(default, tuple):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Request:
    """What to recommend: a history and/or a free-text query, with filters and re-ranking knobs."""

    history: tuple[str, ...] = _opt((), max_len=MAX_HISTORY, doc="item ids, oldest first")
    query: str | None = _opt(None, max_len=MAX_QUERY_CHARS, doc="free-text instruction")
    parse_query: bool = _opt(True, doc="turn the query's explicit constraints (years, decades, categories, "
                                        "negations) into filters and embed the rest")
    k: int = _opt(10, lo=1, hi=MAX_K, doc="how many items")
    strategy: str | None = _opt(None, choices=STRATEGIES, doc="default: query with a query, else the bundle's")
    query_weight: float | None = _opt(None, lo=0.0, hi=1.0, doc="share of the query in the user vector")
    include_categories: tuple[str, ...] = _opt((), max_len=MAX_CATEGORIES, doc="only items of these categories")
    exclude_categories: tuple[str, ...] = _opt((), max_len=MAX_CATEGORIES, doc="never items of these categories")
    year_min: int | None = _opt(None, lo=0, hi=MAX_YEAR)
    year_max: int | None = _opt(None, lo=0, hi=MAX_YEAR)
    since: int | None = _opt(None, lo=0, hi=MAX_TIME, doc="first seen at or after (unix seconds)")
    until: int | None = _opt(None, lo=0, hi=MAX_TIME, doc="first seen at or before (unix seconds)")
    exclude_seen: bool = _opt(True, doc="leave out the history's items")
    mmr_lambda: float | None = _opt(None, lo=0.0, hi=1.0, doc="MMR diversity: 1 = relevance only")
    freshness_half_life_days: float | None = _opt(None, lo=0.0, hi=1e6, doc="0 = off")
    popularity_penalty: float | None = _opt(None, lo=0.0, hi=100.0)
    exploration: float | None = _opt(None, lo=0.0, hi=10.0, doc="seeded Gumbel noise; 0 = deterministic")
    seed: int | None = _opt(None, lo=0, hi=MAX_SEED)
    explain: bool = _opt(False, doc="say which history items / the query drove each pick")
    session_id: str | None = _opt(None, min_len=1, max_len=MAX_SESSION_ID, doc="interactive session (feedback)")
    now: int | None = _opt(None, lo=0, hi=MAX_TIME, doc="request time (unix seconds) for freshness (default: newest item) "
                                                     "and trending popularity (default: newest event counted)")

    def __post_init__(self):
        # lists become tuples (frozen, hashable); a lone string counts as a one-element list
        for name in ("history", "include_categories", "exclude_categories"):
            v = getattr(self, name)
            if v is None:
                v = ()
            elif isinstance(v, str) and name != "history":
                v = (v,)
            elif isinstance(v, list):
                v = tuple(v)
            object.__setattr__(self, name, v)
        if isinstance(self.query, str) and not self.query.strip():
            object.__setattr__(self, "query", None)
        self.validate()

    @classmethod
    def create(cls, history=None, **options) -> "Request":
        """A request from keyword options, naming an unknown option and the valid ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise RequestError(f"unknown request option {unknown[0]!r}; valid options are: {', '.join(sorted(names))}")
        return cls(history=history, **options)

    def validate(self) -> None:
        if not isinstance(self.history, tuple) or not all(isinstance(h, str) for h in self.history):
            raise RequestError("history must be a list of item id strings")
        if len(self.history) > MAX_HISTORY:
            raise RequestError(f"history has {len(self.history)} items; at most {MAX_HISTORY}")
        check_text("\x7f".join(self.history), "history item ids")  # DEL joins: not a control character here
        if self.query is not None and (not isinstance(self.query, str) or len(self.query) > MAX_QUERY_CHARS):
            raise RequestError(f"query must be a string of at most {MAX_QUERY_CHARS} characters")
        if self.query is not None:
            check_text(self.query, "query", allow_newlines=True)
        if _not_int(self.k) or not 1 <= self.k <= MAX_K:
            raise RequestError(f"k must be an integer in 1..{MAX_K}, got {self.k!r}")
        if self.strategy is not None and self.strategy not in STRATEGIES:
            raise RequestError(f"strategy {self.strategy!r} is not valid; choose one of: {', '.join(STRATEGIES)}")
        if self.strategy == "query" and not self.query:
            raise RequestError("strategy 'query' needs a query text")
        for name in ("include_categories", "exclude_categories"):
            v = getattr(self, name)
            if not isinstance(v, tuple) or not all(isinstance(x, str) for x in v) or len(v) > MAX_CATEGORIES:
                raise RequestError(f"{name} must be a list of at most {MAX_CATEGORIES} strings")
            check_text("\x7f".join(v), name)
        for f in dataclasses.fields(self):
            v, lo, hi = getattr(self, f.name), f.metadata["lo"], f.metadata["hi"]
            if v is None or lo is None or f.name == "k":
                continue
            if f.type == "int | None" and _not_int(v):
                raise RequestError(f"{f.name} must be an integer, got {v!r}")
            if f.type == "float | None" and (_not_number(v) or math.isnan(v)):
                raise RequestError(f"{f.name} must be a number in [{lo}, {hi}], got {v!r}")
            if not lo <= v <= hi:
                raise RequestError(f"{f.name} must be in [{lo}, {hi}], got {v!r}")
        # a range no item can fall in is a mistake to name, not an empty answer (a query's parsed years that
        # miss the request's range do give one: both were asked for)
        for lo_name, hi_name in (("year_min", "year_max"), ("since", "until")):
            a, b = getattr(self, lo_name), getattr(self, hi_name)
            if a is not None and b is not None and a > b:
                raise RequestError(f"{lo_name} ({a}) is after {hi_name} ({b}): no item can match; swap them or drop one")
        for name in ("exclude_seen", "explain", "parse_query"):
            if not isinstance(getattr(self, name), bool):
                raise RequestError(f"{name} must be true or false")
        sid = self.session_id
        if sid is not None and (not isinstance(sid, str) or not sid or len(sid) > MAX_SESSION_ID):
            raise RequestError(f"session_id must be a non-empty string of at most {MAX_SESSION_ID} characters")
        if sid is not None:
            check_text(sid, "session_id")


_CONTROL = re.compile(r"[\x00-\x1f]")
_CONTROL_BUT_WHITESPACE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def check_text(s: str, what: str, allow_newlines: bool = False) -> None:
    """Refuse what cannot be stored or sent back as UTF-8 JSON (lone surrogates) and control characters.
    (A list is checked in one call on its items joined: C-speed for a 10,000-id history.)"""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(f"{what} must be valid Unicode text (it holds a lone surrogate)") from None
    if (_CONTROL_BUT_WHITESPACE if allow_newlines else _CONTROL).search(s):
        raise RequestError(f"{what} must not contain control characters")


def _not_int(v) -> bool:
    return isinstance(v, bool) or not isinstance(v, int)


def _not_number(v) -> bool:
    return isinstance(v, bool) or not isinstance(v, (int, float))


def field_limits() -> dict[str, dict]:
    """Each option's default and limits, for schemas built elsewhere (the HTTP body)."""
    out = {}
    for f in dataclasses.fields(Request):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out[f.name] = {"type": f.type, "default": default, **f.metadata}
    return out
