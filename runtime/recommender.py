"""The on-device recommender: a request reads top to bottom through
profile -> session -> encoder -> user model -> scorer -> re-ranker -> response.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .bundle import Bundle, Preset, open_bundle
from .catalog import Catalog, Filters, ItemInput, item_text, repeated
from .catalog_index import CatalogScorer, saturates_u8s8, top_n, uses_index
from .catalog_rows import rows_dot
from .encoder import Encoder
from .errors import BundleError, RequestError
from .profile import DeviceProfile, load_profile
from .query_parser import LIKE_PHRASE, QueryParser, named_items, title_keys
# the limits are the request's; re-exported here for callers of earlier versions
from .request import MAX_HISTORY, MAX_K, MAX_QUERY_CHARS, MAX_TIME, STRATEGIES, Request, check_text  # noqa: F401
from .rerank import Rerank, rerank
from .scorer import CFScorer, RowScores, blend
from .session import make_session
from .signing import trusted_key
from .user_model import UserModel
from .variants import SAME_FILE

log = logging.getLogger(__name__)

MAX_SESSIONS = 1024
# Explanations weigh the last this-many history items (and at least the user model's window): their cost
# stays bounded whatever the history's length (10,000 items x k = 1,000 took 59 s looping per item).
EXPLAIN_HISTORY = 200
# Mode ann: the history's best CF neighbours that join the candidate set (by |CF score|: a 50-item
# history with 200-neighbour tables reaches up to 10,000 items, most with a negligible score).
CF_CANDIDATES = 2000
# Per session: the last clicks and skips kept (bounds memory: 1024 sessions x 400 ids of <= 200 chars).
MAX_SESSION_EVENTS = 200
MAX_EVENTS = 10_000  # interaction events per record_events call (POST /events)
# Through a catalog index, the re-ranking pool is chosen from this many more rows, re-scored exactly
# (``Recommender._exact_pool``): index errors stay away from the pool's edge
POOL_MARGIN = 64
# "nothing like X": X and this many of its closest items by content are left out of the answer
UNLIKE_NEIGHBOURS = 20
# Mode ann, filtered requests: when fewer than k candidates pass the filters (and the seen, skipped and
# "nothing like" exclusions), the request looks where the passing rows are: every one of them, scored
# exactly, when they are at most FILTERED_EXACT_ROWS (gathering int8 rows from a memory-mapped catalog
# costs ~1 us a row here); else a wider index search for about FILTERED_WIDEN x k passing rows, and, where
# they sit away from the user's clusters, all of them (slow, but the answer holds what the request may get).
FILTERED_EXACT_ROWS = 20_000
FILTERED_WIDEN = 4
# title scans one request's "like X" phrases may make (each is a pass over the catalog's titles)
MAX_TITLE_SCANS = 8


@dataclass
class Recommendation:
    id: str
    title: str
    score: float
    categories: list[str]
    year: int
    reasons: list[dict] = field(default_factory=list)


# what a request with no (known) history and no query gets: the most popular items (Response.strategy)
POPULAR = "popular"
POPULAR_PRESET = Preset(content=0.0, cf=0.0, pop=1.0)


@dataclass
class Response:
    items: list[Recommendation]
    strategy: str  # the strategy served: one of STRATEGIES, or POPULAR for a request with nothing to personalise
    unknown_ids: list[str]
    timings_ms: dict
    parsed: dict | None = None  # what the request parser understood in the query (None: not parsed)
    # the request's include/exclude category names no catalog item has (they match nothing; names are
    # matched ignoring case, so these are misspellings or categories this catalog lacks)
    unknown_categories: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


MAX_SEARCH_CHARS = 200
MAX_SEARCH_LIMIT = 200


class Recommender:
    """Load with :meth:`load`; then :meth:`recommend`, :meth:`embed`, :meth:`add_items`,
    :meth:`remove_items`, :meth:`feedback`."""

    def __init__(self, bundle: Bundle, profile: DeviceProfile, variant: str, catalog: Catalog, encoder: Encoder,
                 user_model: UserModel, cf: CFScorer, head_session=None):
        self.bundle, self.profile, self.variant = bundle, profile, variant
        self.catalog, self.encoder, self.user_model, self.cf = catalog, encoder, user_model, cf
        self.head_session = head_session
        sc = bundle.manifest.scoring
        self.presets: dict[str, Preset] = sc.presets
        self.defaults = sc.defaults
        self.template: str = sc.template
        self.head_kind: str = sc.head
        self.rerank_top: int = sc.rerank_top
        self.sessions: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()
        years = catalog.years[catalog.years > 0]
        span = (int(years.min()), int(years.max())) if len(years) else None
        qp = bundle.manifest.query_parser
        # a catalog without years (news, products) takes no year filters from a query: they would pass nothing
        self.parser = (QueryParser(qp.vocabulary, span, dates=span is not None) if qp is not None
                       else QueryParser.for_categories(sorted(catalog.cat_names), years=span, dates=span is not None))
        self.catalog_scorer = CatalogScorer(profile.catalog_scoring, max(1, profile.threads.intra_op),
                                            ann_candidates=profile.ann_candidates, ann_nprobe=profile.ann_nprobe)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, bundle: str | Path, profile: str | Path | DeviceProfile = "auto", state_dir: str | Path | None = None,
             variant: str | None = None) -> "Recommender":
        """Verify the bundle (format version, every sha256), pick the profile's model variant,
        create sessions, and apply the on-device catalog updates found in ``state_dir``
        (default: ``<bundle>.state/`` beside the bundle)."""
        prof = profile if isinstance(profile, DeviceProfile) else load_profile(profile)
        b = open_bundle(bundle, verify=True, trusted_key=trusted_key(prof))  # a device may require a signature
        m = b.manifest
        need = memory_estimate(b, prof)
        if need["total_mib"] > prof.memory_budget_mib:
            raise BundleError(
                f"this bundle needs about {need['total_mib']:.0f} MiB on profile {prof.name}, whose memory_budget_mib "
                f"is {prof.memory_budget_mib} (" + ", ".join(f"{k} {v:.0f}" for k, v in need.items() if k != "total_mib")
                + " MiB); use a profile with a larger budget (a .toml of your own), or export a smaller bundle "
                "(--catalog-dtype int8, --cf-neighbors, fewer variants)")
        chosen = choose_variant(b, prof, variant)
        encoder = bundle_encoder(b, prof, chosen)
        um_file = b.model("user", chosen if chosen in b.variants("user") else "fp32").file
        um_sess = make_session(b.path(um_file), prof, b.sha256(um_file), model="user")
        head_sess = None
        if m.scoring.head == "mlp":
            head_file = b.model("head", chosen if chosen in b.variants("head") else "fp32").file
            head_sess = make_session(b.path(head_file), prof, b.sha256(head_file), model="head")
        # large catalogs scored by the int8 index keep only the int8 rows (memory-mapped), not float32
        n_items = m.catalog.n_items or 0
        lean = uses_index(prof.catalog_scoring, n_items) or prof.catalog_scoring == "ann"
        catalog = b.load_catalog(lean=lean)
        cf = b.load_cf(len(catalog.ids), lean=lean)
        rec = cls(b, prof, chosen, catalog, encoder, UserModel(um_sess, m.scoring.max_history), cf, head_sess)
        rec.memory = need
        state = Path(state_dir) if state_dir else Path(str(Path(bundle).resolve()) + ".state")
        applied = catalog.load_updates(state / "catalog-updates.json")
        if applied["added"] or applied["removed"]:
            log.info("applied on-device catalog updates: %s", applied)
        rec.rebuild_index()
        return rec

    def rebuild_index(self) -> None:
        """(Re)build the catalog scoring index (int8 for large catalogs; see catalog_index.py)."""
        with self.catalog.lock:
            self.catalog_scorer.build(self.catalog)

    # ------------------------------------------------------------------ API
    def embed(self, texts: list[str]) -> np.ndarray:
        """Encode texts with the bundle's encoder (L2-normalised, float32 [N, D])."""
        if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
            raise RequestError("texts must be a list of strings")
        if any(len(t) > MAX_QUERY_CHARS * 10 for t in texts):
            raise RequestError(f"each text must be at most {MAX_QUERY_CHARS * 10} characters")
        return self.encoder.embed(list(texts))

    def add_items(self, items: list[ItemInput | dict]) -> list[str]:
        """Add or update items (encoded on device with the bundle's encoder); durable on return.

        An update replaces the item whole (title, categories, year, text: fields left out take their
        defaults), as ``POST /items`` does; ``genre items add --id`` keeps the categories and year it
        is not given."""
        objs = [(ItemInput(**it) if isinstance(it, dict) else it) for it in items]
        for it in objs:
            it.validate()
        dup = repeated(o.id for o in objs)
        if dup:
            raise RequestError(f"duplicate item ids in one request: {dup} (give each item once)")
        emb = self.encoder.embed([item_text(self.template, o) for o in objs])
        self.catalog.add(objs, emb)
        return [o.id for o in objs]

    def search_items(self, query: str = "", limit: int = 20, offset: int = 0) -> dict:
        """Catalog items for a search box: the id ``query`` exactly, else titles containing it
        (case-insensitive; titles starting with it first, then by popularity); an empty query lists
        the most popular. ``{"items": [{id, title, categories, year, on_device}], "total": N}``."""
        if not isinstance(query, str) or len(query) > MAX_SEARCH_CHARS:
            raise RequestError(f"query must be a string of at most {MAX_SEARCH_CHARS} characters")
        check_text(query, "query")
        for name, v, lo, hi in (("limit", limit, 1, MAX_SEARCH_LIMIT), ("offset", offset, 0, 1 << 40)):
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise RequestError(f"{name} must be an integer in {lo}..{hi}, got {v!r}")
        c = self.catalog
        c.refresh()  # another process's catalog writes
        with c.locked():
            rows, total = c.search(query, limit, offset)
            items = [{"id": c.ids[r], "title": c.titles[r], "categories": list(c.categories[r]), "year": int(c.years[r]),
                      "on_device": r >= c.n_bundle} for r in rows]
        return {"items": items, "total": total, "offset": offset}

    def record_events(self, events: list[dict]) -> dict:
        """Count interaction events into trending popularity: ``[{"item_id": str, "time": unix seconds}]``
        (e.g. the clicks every user of the device made). Bundles calibrated with trending popularity only;
        later requests (``now`` at or after the events) rank with them. Returns ``{"counted": n,
        "unknown_ids": [...]}`` (events on unknown or removed items are not counted).

        Durable on return, as catalog changes are: one journal line in the state folder, read by every
        process serving it (``genre serve --workers N``) and after a restart. Send events in batches: each
        call is one fsync'd write."""
        if not isinstance(events, (list, tuple)) or len(events) > MAX_EVENTS:
            raise RequestError(f"events must be a list of at most {MAX_EVENTS} events")
        ids, times = [], []
        for k, e in enumerate(events):
            if not isinstance(e, dict) or set(e) != {"item_id", "time"}:
                raise RequestError(f"events[{k}] must be an object with exactly item_id and time")
            iid, t = e["item_id"], e["time"]
            if not isinstance(iid, str) or not 0 < len(iid) <= 200:
                raise RequestError(f"events[{k}].item_id must be a non-empty string of at most 200 characters")
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not 0 <= t <= MAX_TIME:
                raise RequestError(f"events[{k}].time must be unix seconds in [0, {MAX_TIME}], got {t!r}")
            ids.append(iid)
            times.append(float(t))
        unknown = self.catalog.record_events(ids, times)  # applies other processes' writes first
        missing = set(unknown)
        return {"counted": sum(1 for i in ids if i not in missing), "unknown_ids": unknown}

    def remove_items(self, ids: list[str]) -> list[str]:
        """Remove items; returns ids that were unknown."""
        if not isinstance(ids, (list, tuple)) or not all(isinstance(i, str) for i in ids):
            raise RequestError("ids must be a list of strings")
        return self.catalog.remove(list(ids))

    def feedback(self, session_id: str, item_id: str, event: str = "click") -> bool:
        """Record a click or skip in an interactive session; the next call with that session reflects it.

        Returns False, recording nothing, when ``item_id`` is not in the catalog (a click on an unknown id
        would only push the session's real clicks out of its bounded list)."""
        if event not in ("click", "skip"):
            raise RequestError(f"event must be 'click' or 'skip', not {event!r}")
        if not isinstance(session_id, str) or not session_id or len(session_id) > 200:
            raise RequestError("session_id must be a non-empty string of at most 200 characters")
        if not isinstance(item_id, str) or not item_id or len(item_id) > 200:
            raise RequestError("item_id must be a non-empty string of at most 200 characters")
        self.catalog.refresh()  # another process's catalog writes
        with self.catalog.locked() as cat:
            if cat.rows([item_id])[1]:
                return False
        with self._lock:
            s = self.sessions.pop(session_id, None) or {"clicks": [], "skips": set()}
            if event == "click":
                s["clicks"] = (s["clicks"] + [item_id])[-MAX_SESSION_EVENTS:]
            elif item_id not in s["skips"]:
                if len(s["skips"]) >= MAX_SESSION_EVENTS:  # bounded: a session cannot grow memory without limit
                    s["skips"].pop()
                s["skips"].add(item_id)
            self.sessions[session_id] = s
            while len(self.sessions) > MAX_SESSIONS:
                self.sessions.popitem(last=False)
        return True

    def recommend(self, history: Request | list[str] | None = None, **options) -> Response:
        """Recommend for a :class:`~genre_edge.request.Request`, or for a history of item ids and
        keyword options (the request's fields: ``query``, ``parse_query``, ``k``, ``strategy``, filters,
        re-ranking knobs, ``explain``, ``session_id``, ``now``). A query's explicit constraints (years,
        categories, negations) become filters unless ``parse_query=False``; ``Response.parsed`` says what
        was understood.

        ``history`` is oldest first: the user model reads its last ``max_history`` items and the CF
        part weights recent items more when the bundle was calibrated that way. Unknown ids are
        reported in ``unknown_ids`` and otherwise ignored. With no known history and no query (a new
        user) the answer is the most popular items that pass the filters (``strategy == "popular"``).
        """
        t0 = time.perf_counter()
        # --- request -> validated options (presets from the bundle, overridden per request)
        if isinstance(history, Request) and options:
            raise RequestError("give a Request or keyword options, not both")
        req = history if isinstance(history, Request) else Request.create(history, **options)
        # --- parser: explicit constraints in the query become filters, the rest is embedded
        query, parsed = req.query, None
        if query and req.parse_query:
            like, unlike, rest = self._named_items(query)
            parsed = self.parser.parse(rest)
            if like or unlike:
                parsed = replace(parsed, like=tuple(i for i, _ in like), like_titles=tuple(t for _, t in like),
                                 unlike=tuple(i for i, _ in unlike), unlike_titles=tuple(t for _, t in unlike))
            query = parsed.text or (query if req.strategy == "query" else None)
        # items named as examples ("like Star Wars") are a query too: what the answer centres on
        named = parsed is not None and bool(parsed.like)
        strategy = req.strategy or ("query" if query or named else self.defaults.strategy)
        preset = self.presets[strategy]
        qw = (0.5 if preset.query_weight is None else preset.query_weight) if req.query_weight is None \
            else req.query_weight
        d = self.defaults
        opts = Rerank(
            mmr_lambda=d.mmr_lambda if req.mmr_lambda is None else float(req.mmr_lambda),
            freshness_half_life_days=(d.freshness_half_life_days if req.freshness_half_life_days is None
                                      else float(req.freshness_half_life_days)),
            popularity_penalty=d.popularity_penalty if req.popularity_penalty is None else float(req.popularity_penalty),
            exploration=d.exploration if req.exploration is None else float(req.exploration),
            seed=req.seed,
        )
        filters = _filters(req, parsed)
        self.catalog.refresh()  # another process's catalog writes (one stat when there are none)
        with self.catalog.locked() as cat:
            history, skips = list(req.history), ()
            if req.session_id is not None:
                with self._lock:
                    s = self.sessions.get(req.session_id)
                if s:
                    history = history + s["clicks"]
                    skips = tuple(s["skips"])
            if parsed is not None:
                # items the query named as examples ("like Star Wars") are the history's most recent; its
                # counter-examples ("nothing like ...") are left out as skipped ones are
                history, skips = history + list(parsed.like), skips + parsed.unlike
            hist, unknown = cat.rows(history)
            filters, unknown_cats = _resolve_categories(cat, filters)
            pop = cat.popularity(req.now)  # static, or trending as of the request time
            if len(hist) == 0 and not query:
                # nothing to personalise on (a new user): the most popular items, static or trending as of
                # ``now``, whatever the blend weights - calibrated presets can weigh popularity 0 (ml-100k's
                # do: CF carries it), and content and CF are 0 for an empty history, so any preset would
                # rank every item alike
                strategy, preset = POPULAR, POPULAR_PRESET
            t_req = time.perf_counter()
            # --- encoder (query text, on device): tokenizer, then the ONNX encoder
            q = None
            if query:
                ids, amask = self.encoder.tokenize([query])
                t_tok = time.perf_counter()
                q = self.encoder.run(ids, amask)[0].astype(np.float32)
            else:
                t_tok = t_req
            if named:
                # the named items' mean embedding, with the text's when there is text left: one direction
                # the user vector leans to with the query weight, as a text query's does
                like_rows = cat.rows(list(parsed.like))[0]
                if len(like_rows):
                    e = np.asarray(cat.emb[like_rows], np.float32).mean(0)
                    e /= max(float(np.linalg.norm(e)), 1e-9)
                    q = e if q is None else q / max(float(np.linalg.norm(q)), 1e-9) + e
            t_enc = time.perf_counter()
            # --- user model
            hw, u, att = self._user_vector(hist, q, qw)
            t_user = time.perf_counter()
            # --- scorer: content + CF + popularity over the whole catalog, or over a candidate set
            # rows the answer leaves out whatever it is scored over: the history (unless asked), the session's
            # skips, and what the query said it wants nothing like
            out = [hist] if req.exclude_seen and len(hist) else []
            if skips:
                out.append(cat.rows(skips)[0])
            if parsed is not None and parsed.unlike:
                out.append(self._unlike_rows(cat, parsed.unlike))
            left_out = np.concatenate(out) if out else None  # repeats are harmless to both uses below

            def passing(rows=None):
                """Which rows (of ``rows``, or of the catalog) the request may get: its filters, less ``left_out``."""
                mask = cat.mask(filters, rows)
                if left_out is not None:
                    if rows is None:
                        mask[left_out] = False
                    else:
                        mask &= ~np.isin(rows, left_out)
                return mask

            if self.catalog_scorer.approximate:
                rows, sparse = self._candidates(u, hist, preset)
                values, cf_values = self._row_scores(u, hist, preset, pop, rows, sparse)
                mask = passing(rows)
                if int(mask.sum()) < req.k:
                    # fewer candidates pass than were asked for (a selective filter, or a history covering
                    # them), though more rows may: look where the passing rows are, and score those too
                    for extra in self._filtered_candidates(u, passing, req.k):
                        extra = np.setdiff1d(extra, rows)
                        more, cf_more = self._row_scores(u, hist, preset, pop, extra, sparse)
                        rows = np.concatenate([rows, extra])
                        order = np.argsort(rows, kind="stable")
                        rows, values = rows[order], np.concatenate([values, more])[order]
                        cf_values = np.concatenate([cf_values, cf_more])[order]
                        mask = passing(rows)
                        if int(mask.sum()) >= req.k:
                            break
                scores, cf = RowScores(rows, values), RowScores(rows, cf_values)
            else:
                scores, cf, content = self._scores(u, hist, preset, pop)
                mask = passing()
            if not mask.any():
                return Response([], strategy, unknown,
                                _ms(t0, t_req, t_tok, t_enc, t_user, time.perf_counter(), time.perf_counter()),
                                parsed.to_dict() if parsed else None, unknown_cats)
            if self.catalog_scorer.approximate:
                pool = rows[top_n(scores.values, mask, max(self.rerank_top, req.k))]
            else:
                pool = self._exact_pool(scores, content, mask, max(self.rerank_top, req.k), u, preset)
            if self.head_session is not None and strategy != POPULAR:
                scores = scores.copy()
                scores[pool] = self._head(u, pool, cf, pop)
            pool = pool[np.argsort(-scores[pool], kind="stable")]
            t_score = time.perf_counter()
            # --- re-ranker
            picked, rel = rerank(scores, pool, cat, opts, req.k, req.now)
            t_rr = time.perf_counter()
            # --- response
            items = [Recommendation(cat.ids[i], cat.titles[i], float(scores[i]), list(cat.categories[i]),
                                    int(cat.years[i])) for i in picked]
            if req.explain:
                for rec, reasons in zip(items, self._explain(picked, hw, att, hist, q, qw, preset, pop)):
                    rec.reasons = reasons
        return Response(items, strategy, unknown, _ms(t0, t_req, t_tok, t_enc, t_user, t_score, t_rr),
                        parsed.to_dict() if parsed else None, unknown_cats)

    def _unlike_rows(self, cat, ids) -> np.ndarray:
        """The rows of the items a request said it wants nothing like and of their UNLIKE_NEIGHBOURS closest
        items by content over the whole catalog ("nothing like Star Wars" left out Star Wars alone and served
        Return of the Jedi second). Mode ``ann``: the closest among the approximate index's candidates for
        the item, scored exactly (the nearest of a request's own candidates were not the item's nearest:
        a small candidate set lost all of them)."""
        out = []
        for r in cat.rows(list(ids))[0]:
            e = np.asarray(cat.emb[np.array([r])], np.float32)[0]
            if self.catalog_scorer.approximate:
                rows = np.unique(self.catalog_scorer.candidates(cat, e))
                sim = rows_dot(cat.emb, rows, e)
            else:
                rows, sim = None, self.catalog_scorer.scores(cat, e)
            near = np.argpartition(-sim, min(UNLIKE_NEIGHBOURS, len(sim) - 1))[:UNLIKE_NEIGHBOURS + 1]
            out += [np.array([r]), near if rows is None else rows[near]]
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def _named_items(self, query: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]], str]:
        """``(like, unlike, rest)``: catalog items ``(id, title)`` the query names after "like", "similar
        to", ... and after "nothing like", ... (query_parser.named_items), and the query without those
        phrases. Titles are looked up through the catalog's title search only when such a phrase is there
        (one pass over the titles per word looked up)."""
        if not LIKE_PHRASE.search(query.lower().replace("’", "'")):
            return [], [], query
        cat, searched = self.catalog, {}
        cat.refresh()

        def find(key):
            probe = max(key.split(), key=len)  # the rarest-looking word: the fewest titles to compare
            if probe not in searched:  # one scan of the titles per word, whatever the phrases tried
                if len(searched) >= MAX_TITLE_SCANS:  # bounded: a query of many "like"s is not a scan each
                    return None
                searched[probe] = [(r, title_keys(cat.titles[r])) for r in cat.search(probe, 200)[0]]
            return next(((cat.ids[r], cat.titles[r]) for r, ks in searched[probe] if key in ks), None)

        with cat.locked():
            return named_items(query, find)

    def score_all(self, history: np.ndarray, strategy: str = "hybrid", now: float | None = None) -> np.ndarray:
        """Scores of every catalog row for a history of catalog row indices (oldest first), as
        :meth:`recommend` ranks them before filters and re-ranking; for offline evaluation
        (``genre ab``). With an MLP head, its top ``rerank_top`` items are re-scored and kept above
        the rest, as served. ``now``: the request time trending popularity is read at (as ``Request.now``).
        An empty history scores as the blend gives it, as the teacher's scorer does: the most-popular answer
        :meth:`recommend` gives a new user is a serving rule, kept out of the model's offline comparisons."""
        if strategy not in STRATEGIES or strategy == "query":
            raise RequestError(f"strategy must be one of content, cf, hybrid for score_all, not {strategy!r}")
        preset, cat = self.presets[strategy], self.catalog
        hist = np.asarray(history, np.int64)
        _, u, _ = self._user_vector(hist, None, 0.0)
        pop = cat.popularity(now)
        s, cf, content = self._scores(u, hist, preset, pop)
        pool = self._exact_pool(s, content, cat.mask(Filters()), self.rerank_top, u, preset)  # as served
        if self.head_session is not None:
            fine = self._head(u, pool, cf, pop)
            s = s - (s.max() - s.min() + 1e3)
            s[pool] = fine - fine.min() + 1.0 + s.max()
        return s

    # ------------------------------------------------------------------ internals
    def _user_vector(self, hist: np.ndarray, q: np.ndarray | None, qw: float):
        """(history window, user vector, attention weights); a query blends in with weight ``qw``."""
        hw = hist[-self.user_model.max_history :]
        dim = self.catalog.emb.shape[1]
        u, att = self.user_model(self.catalog.emb[hw]) if len(hw) else (np.zeros(dim, np.float32), np.zeros(0))
        if q is not None:
            u = q if len(hw) == 0 else (1 - qw) * u + qw * q
        return hw, u, att

    def _scores(self, u: np.ndarray, hist: np.ndarray, preset: Preset, pop: np.ndarray):
        """(blended scores of every catalog row, CF scores, content scores): content + CF + popularity ``pop``."""
        cat = self.catalog
        cf = self.cf.scores(hist, len(cat.ids)) if preset.cf else np.zeros(len(cat.ids), np.float32)
        # a preset without content (cf, and a new user's popular list) skips the catalog scan it would zero out
        content = self.catalog_scorer.scores(cat, u) if preset.content else np.float32(0.0)
        return blend(content, cf, pop, preset), cf, content

    def _exact_pool(self, scores: np.ndarray, content, mask: np.ndarray, n: int, u: np.ndarray,
                    preset: Preset) -> np.ndarray:
        """The ``n`` best rows under ``mask`` (the re-ranking pool), with their content scores made exact in
        ``scores``. Through an index only its own best rows are re-scored (catalog_index.py), so a row that CF
        or popularity lifts into the pool can carry the index's approximate content score (4-bit: errors
        ~1e-2), which also moves the re-ranker's relevance scale (the pool's lowest score). So the pool is
        chosen from POOL_MARGIN more rows, re-scored exactly (100k items, 60 requests: identical lists to
        float32's in 56 of 60 with the 4-bit index as it was, 58 with the pool exact, 60 with the margin)."""
        if self.catalog_scorer.index is None or not preset.content:
            return top_n(scores, mask, n)
        pool = top_n(scores, mask, n + POOL_MARGIN)
        exact = np.asarray(self.catalog.emb[pool], np.float32) @ u
        scores[pool] += np.float32(preset.content) * (exact - content[pool])
        return pool[top_n(scores[pool], None, n)] if len(pool) > n else pool

    def _candidates(self, u: np.ndarray, hist: np.ndarray, preset: Preset) -> tuple[np.ndarray, tuple | None]:
        """Mode ``ann``: (the candidate set's rows, sorted and unique; the history's sparse CF scores or None)
        - the approximate index's rows for ``u`` and the popular ones (``CatalogScorer.candidates``), plus
        the best CF neighbours of the history."""
        parts = [self.catalog_scorer.candidates(self.catalog, u)]
        sparse = None
        if preset.cf:
            sparse = self.cf.sparse(hist)
            r, v = sparse
            parts.append(r if len(r) <= CF_CANDIDATES else r[top_n(np.abs(v), None, CF_CANDIDATES)])
        return np.unique(np.concatenate(parts)), sparse

    def _row_scores(self, u: np.ndarray, hist: np.ndarray, preset: Preset, pop: np.ndarray, rows: np.ndarray,
                    sparse) -> tuple[np.ndarray, np.ndarray]:
        """Mode ``ann``: (blended scores, CF scores) of ``rows``, exactly: content from the catalog rows, CF
        from its tables (``sparse``: the history's, from :meth:`_candidates`)."""
        content = rows_dot(self.catalog.emb, rows, u)
        cf = self.cf.scores_at(hist, rows, sparse) if preset.cf else np.zeros(len(rows), np.float32)
        return blend(content, cf, pop[rows], preset), cf

    def _filtered_candidates(self, u: np.ndarray, passing, k: int):
        """Mode ``ann``, when fewer candidates than asked for pass a request's filters and exclusions
        (``passing()``: per catalog row, whether it does; one pass over the catalog): more rows to score, in
        turn until enough pass. Every allowed row when they are at most FILTERED_EXACT_ROWS (the answer is then
        the exact path's); else first the approximate index's best rows in a number that holds about
        FILTERED_WIDEN x ``k`` allowed ones if they are spread like the catalog, then, where they are not
        (clustered away from ``u``), every allowed row."""
        n = len(self.catalog.ids)
        allowed = np.flatnonzero(passing())
        if len(allowed) > FILTERED_EXACT_ROWS:
            sc = self.catalog_scorer
            count = max(2 * sc.ann_candidates, math.ceil(FILTERED_WIDEN * k * n / len(allowed)))
            log.debug("ann: %d of %d rows pass the request's filters; searching %d candidates", len(allowed), n, count)
            yield sc.ann.search(u, min(count, sc.ann.n))
        yield allowed

    def _head(self, u, pool, cf, pop):
        c = self.catalog.emb[pool][None].astype(np.float32)
        out = self.head_session.run(None, {"user": u[None].astype(np.float32), "candidates": c,
                                           "cf": cf[pool][None].astype(np.float32), "pop": pop[pool][None].astype(np.float32)})
        return out[0][0]

    def _explain(self, picked: np.ndarray, hw, att, hist, q, qw, preset, pop) -> list[list[dict]]:
        """Per picked item: which history items and/or the query drove it, with their share (top 3).

        Vectorized over the picked items; history items count from the last ``EXPLAIN_HISTORY`` (and
        at least the user model's window), so the cost is bounded whatever the history's length."""
        cat = self.catalog
        picked = np.asarray(picked, np.int64)
        window = hist[-max(EXPLAIN_HISTORY, len(hw)):]  # hw (the user model's window) is its suffix
        uniq, inv = np.unique(window, return_inverse=True)
        hist_parts = np.zeros((len(uniq), len(picked)), np.float64)  # history item x picked item
        if len(hw):
            scale = preset.content * ((1 - qw) if q is not None else 1.0)
            content = scale * att[:, None] * (cat.emb[hw] @ cat.emb[picked].T)
            np.add.at(hist_parts, inv[len(window) - len(hw):], content)
        if preset.cf and len(hist):
            np.add.at(hist_parts, inv, preset.cf * self.cf.contribution_matrix(hist, picked, last=len(window)))
        extra = []  # (source, [value per picked item])
        if q is not None:
            extra.append(("query", preset.content * (qw if len(hw) else 1.0) * (cat.emb[picked] @ q)))
        if preset.pop:
            extra.append(("popularity", preset.pop * pop[picked]))
        out = []
        for j in range(len(picked)):
            cands = [(float(v), "history", int(uniq[r])) for r, v in enumerate(hist_parts[:, j]) if v > 0]
            cands += [(float(vals[j]), src, -1) for src, vals in extra if vals[j] > 0]
            total = sum(v for v, _, _ in cands)
            reasons = []
            for v, src, i in sorted(cands, key=lambda c: -c[0])[:3]:
                r = {"source": src, "share": round(v / total, 3) if total else 0.0}
                if src == "history":
                    r.update(id=cat.ids[i], title=cat.titles[i])
                reasons.append(r)
            out.append(reasons)
        return out

    def info(self) -> dict:
        m = self.bundle.manifest
        # the bundle's folder name, not its absolute path (no layout of the device is given away)
        return {"bundle": Path(self.bundle.root).name, "format_version": m.format_version, "profile": self.profile.name,
                "variant": self.variant, "items": len(self.catalog), "dim": m.dim,
                "strategies": list(STRATEGIES), "created_at": m.created_at,
                "memory_estimate_mib": round(self.memory["total_mib"], 1) if hasattr(self, "memory") else None,
                "memory_budget_mib": self.profile.memory_budget_mib,
                "quality": m.quality.summary if m.quality else None,
                # what a client needs to offer the request's choices (the playground page reads these)
                "defaults": asdict(self.defaults), "max_history": m.scoring.max_history,
                "popularity": ({"kind": "static"} if self.catalog.trend is None else
                               {"kind": "trending", "half_life_s": self.catalog.trend.half_life,
                                "as_of": self.catalog.trend.as_of}),
                "example_instructions": list(self.catalog.example_instructions()),
                **self.catalog.facets()}


def choose_variant(b: Bundle, prof: DeviceProfile, variant: str | None = None) -> str:
    """The encoder variant a profile gets from a bundle: ``variant`` if given, else the profile's own,
    then its fallbacks (a warning when it is not the first choice or would saturate on this CPU)."""
    have = b.variants("encoder")
    # a variant whose file is another's (int8-arm64 = int8-avx512vnni) is served by that one, silently
    wanted = [SAME_FILE.get(v, v) for v in (prof.variant, *prof.fallback_variants)]
    chosen = variant or next((v for v in wanted if v in have), None)
    if chosen is None or chosen not in have:
        raise BundleError(f"bundle has no encoder variant for profile {prof.name} "
                          f"(wants {prof.variant}, then {', '.join(prof.fallback_variants)}); it has: {', '.join(have)}")
    if chosen != wanted[0]:
        log.warning("profile %s wants variant %s, which the bundle lacks; using %s", prof.name, prof.variant, chosen)
    if chosen == "int8-avx512vnni" and saturates_u8s8():
        log.warning("variant %s has full-range int8 weights, which this CPU's AVX2 kernel can saturate "
                    "(embeddings drift by up to ~2e-2); export with --profile x86-avx2 for the 7-bit int8-avx2 "
                    "variant", chosen)
    return chosen


def load_encoder(bundle: str | Path, profile: str | Path | DeviceProfile = "auto", variant: str | None = None):
    """Only the bundle's text encoder, as a device profile runs it: ``(encoder, variant, bundle)``.
    For bulk catalog embedding (a worker needs neither the catalog nor the user model); the bundle is
    verified like :meth:`Recommender.load` does."""
    prof = profile if isinstance(profile, DeviceProfile) else load_profile(profile)
    b = open_bundle(bundle, verify=True, trusted_key=trusted_key(prof))
    chosen = choose_variant(b, prof, variant)
    return bundle_encoder(b, prof, chosen), chosen, b


def bundle_encoder(b: Bundle, prof: DeviceProfile, variant: str) -> Encoder:
    """The encoder session of ``variant`` set up as ``prof`` says, with the bundle's tokenizer."""
    f = b.model("encoder", variant).file
    sess = make_session(b.path(f), prof, b.sha256(f), variant, model="encoder")
    return Encoder(sess, b.path(b.manifest.tokenizer), min(b.manifest.max_tokens, prof.max_tokens), prof.max_batch)


# Python + numpy + onnxruntime + tokenizers before any model: measured 60-80 MiB RSS on x86-64 and arm64
RUNTIME_BASE_MIB = 80.0


def memory_estimate(b: Bundle, prof: DeviceProfile) -> dict[str, float]:
    """MiB the loaded bundle will hold, from the manifest alone (checked against the profile's
    ``memory_budget_mib`` before anything is loaded): ONNX sessions ~2x their files (weights + packed
    copies), the catalog as float32 (+ its int8 or 4-bit index where the profile builds one), CF tables widened to
    int32/float32, the tokenizer, and the runtime itself."""
    from .catalog_index import index_bits, index_bytes_per_row, uses_index

    m, mib = b.manifest, 1 / (1 << 20)
    f = {rel: e.bytes for rel, e in m.files.items()}
    variants = b.variants("encoder")
    enc = max((f[m.models.encoder[v].file] for v in variants if v in (prof.variant, *prof.fallback_variants)),
              default=max(f[e.file] for e in m.models.encoder.values()))
    small = sum(f[e.file] for part in (m.models.user, m.models.head or {}) for e in part.values())
    n = m.catalog.n_items or 0
    ann = prof.catalog_scoring == "ann"
    index = ann or uses_index(prof.catalog_scoring, n)
    # the index's own copy per row: 8-bit values, or 4-bit ones and a scale per block
    ix_row = 0 if ann or not index else index_bytes_per_row(index_bits(prof.catalog_scoring, m.dim), m.dim)
    cfm = m.catalog.cf
    cf = sum(f.get(x, 0) for x in (cfm.idx, cfm.w, cfm.P, cfm.Q, *(y for t in cfm.short or () for y in (t.idx, t.w)))
             if x)
    # float32 rows (+ the index), or with the index and an int8 catalog file only the index: the
    # int8 rows stay memory-mapped (pages a request gathers) and the scales take 4 bytes a row
    per_row = (ix_row + 4) if index and m.catalog.embedding_scales else m.dim * 4 + ix_row
    if ann:  # the approximate index instead of the int8 one: 4-bit codes of dimension pairs + an 8-byte id per
        # row (catalog_ann.py), beside the scales of memory-mapped int8 rows or the float32 rows
        per_row = m.dim // 4 + 8 + (4 if m.catalog.embedding_scales else 4 * m.dim)
    # CF neighbour tables: widened to int32/float32 in memory (~2x the files), or memory-mapped as stored where
    # the catalog loads lean (pages a request gathers: counted as a tenth); factor tables load as they are
    mapped = index and m.catalog.cf.kind in ("cooccurrence", "ease")
    if m.catalog.trend is not None:  # float64 counts, and the float32 feature a request reads
        per_row += 12
    out = {"runtime": RUNTIME_BASE_MIB, "models": 2 * (enc + small) * mib,
           "catalog": (n * per_row + f.get(m.catalog.items, 0) * 3) * mib,
           "cf": (0.1 if mapped else 2) * cf * mib, "tokenizer": 3 * f.get(m.tokenizer, 0) * mib}
    out["total_mib"] = sum(out.values())
    return out


def _filters(req: Request, parsed) -> Filters:
    """The request's filters, narrowed by what the parser found in its query (both must hold)."""
    if parsed is None:
        return Filters(req.include_categories, req.exclude_categories, req.year_min, req.year_max, req.since,
                       req.until)
    lo = [y for y in (req.year_min, parsed.year_min) if y is not None]
    hi = [y for y in (req.year_max, parsed.year_max) if y is not None]
    return Filters(req.include_categories, tuple(dict.fromkeys(req.exclude_categories + parsed.exclude_categories)),
                   max(lo) if lo else None, min(hi) if hi else None, req.since, req.until,
                   parsed.require_categories, parsed.include_categories, parsed.exclude_years)


def _resolve_categories(cat, f: Filters) -> tuple[Filters, list[str]]:
    """``f`` with the request's category names in the catalog's spelling, and the names no item has
    (the parser's categories come from the catalog already)."""
    if not f.include_categories and not f.exclude_categories:
        return f, []
    inc, unk_inc = cat.resolve_categories(f.include_categories)
    exc, unk_exc = cat.resolve_categories(f.exclude_categories)
    # unknown included names stay: they match nothing (so an include of only unknown names still filters
    # everything out, where an empty tuple would be no filter)
    return (replace(f, include_categories=inc + tuple(unk_inc), exclude_categories=exc),
            list(dict.fromkeys(unk_inc + unk_exc)))


def _ms(t0, t_req, t_tok, t_enc, t_user, t_score, t_rr) -> dict:
    """Milliseconds per stage, in the order a request reads (``encode`` is the ONNX encoder alone)."""
    return {"request": (t_req - t0) * 1e3, "tokenize": (t_tok - t_req) * 1e3, "encode": (t_enc - t_tok) * 1e3,
            "user_model": (t_user - t_enc) * 1e3,
            "score": (t_score - t_user) * 1e3, "rerank": (t_rr - t_score) * 1e3,
            "total": (time.perf_counter() - t0) * 1e3}
