"""The on-device catalog: bundle items plus crash-safe local updates.

Updates (add / update / remove, and interaction events for trending popularity) live in the state folder
next to the bundle: a snapshot rewritten atomically (temp file, fsync, rename) and a journal of the changes
since, one fsync'd line each (folded into the next snapshot every ``JOURNAL_COMPACT_OPS``): after a crash the
state is the old or the new one, never a mix, and an update is acknowledged only once it is durable.

Several processes may share the file (`genre serve` and `genre items add`, several workers): a writer
holds an exclusive lock on ``<file>.lock`` while it reads the file's current state, applies its change
on top and renames the new file in, so no acknowledged write is dropped; every process notices another
one's write by the file's (inode, size, mtime) signature, one ``stat`` per request, and applies it.
"""
from __future__ import annotations

import base64
import json
import logging
import math
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import BundleError, RequestError, StorageError, storage_error
from .request import MAX_TIME, MAX_YEAR, check_text
from .catalog_rows import Int8Rows
from .item_columns import IdIndex, StrColumn, TupleColumn, fold, push
from .trending import Trend
from .fsutil import atomic_write_bytes, atomic_write_json, loads_strict

log = logging.getLogger(__name__)

UPDATES_FORMAT = "genre-catalog-updates/1"
MAX_ID_LEN = 200
MAX_TITLE_LEN = 500
MAX_TEXT_LEN = 4000
PACK_FROM = 100_000  # catalogs this large keep ids and titles packed (item_columns); smaller ones as lists


@dataclass
class ItemInput:
    """A catalog item as a user supplies it."""

    id: str
    title: str
    categories: tuple[str, ...] = ()
    year: int = 0
    text: str = ""  # extra description appended to the item text
    timestamp: int = 0  # when the item became available (freshness)

    def validate(self) -> "ItemInput":
        if not isinstance(self.id, str) or not self.id.strip() or len(self.id) > MAX_ID_LEN:
            raise RequestError(f"item id must be a non-empty string of at most {MAX_ID_LEN} characters")
        check_text(self.id, "item id")
        if not isinstance(self.title, str) or not self.title.strip() or len(self.title) > MAX_TITLE_LEN:
            raise RequestError(f"item {self.id!r}: title must be a non-empty string of at most {MAX_TITLE_LEN} characters")
        if not isinstance(self.text, str) or len(self.text) > MAX_TEXT_LEN:
            raise RequestError(f"item {self.id!r}: text must be a string of at most {MAX_TEXT_LEN} characters")
        check_text(self.title, f"item {self.id!r}: title", allow_newlines=True)
        check_text(self.text, f"item {self.id!r}: text", allow_newlines=True)
        if not isinstance(self.categories, (list, tuple)):
            # a string was once taken as its characters: "Comedy" became six categories C, o, m, e, d, y
            raise RequestError(f"item {self.id!r}: categories must be a list of strings, e.g. [\"Comedy\", \"Drama\"], "
                               f"not {type(self.categories).__name__} {self.categories!r:.80}")
        cats = tuple(self.categories)
        if len(cats) > 50 or not all(isinstance(c, str) and 0 < len(c) <= 100 for c in cats):
            raise RequestError(f"item {self.id!r}: categories must be at most 50 strings of 1-100 characters")
        for c in cats:
            check_text(c, f"item {self.id!r}: categories")
        # bounded as the columns that keep them (years int32) and the request filters that read them: a value
        # past them was once accepted, journaled, and then failed every load of the catalog
        for name, hi, unit in (("year", MAX_YEAR, " (0 = unknown)"), ("timestamp", MAX_TIME, " (unix seconds, 0 = unknown)")):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not (0 <= v <= hi):
                raise RequestError(f"item {self.id!r}: {name} must be an integer in 0..{hi}{unit}, got {v!r}")
        self.categories = tuple(dict.fromkeys(cats))  # each once: ["Rock", "Rock"] showed as [Rock, Rock]
        return self


@dataclass(frozen=True)
class Filters:
    """Which catalog rows a request may get: categories, years, first-seen time."""
    include_categories: tuple[str, ...] = ()  # any of these
    exclude_categories: tuple[str, ...] = ()
    year_min: int | None = None
    year_max: int | None = None
    since: int | None = None  # first_seen >= since (unix seconds)
    until: int | None = None
    require_categories: tuple[str, ...] = ()  # all of these (a parsed "romantic comedy")
    any_categories: tuple[str, ...] = ()  # any of these, a second group (a parsed "comedy or drama")
    exclude_years: tuple[tuple[int, int], ...] = ()  # (first, last) ranges left out ("not from the 90s")


ITEM_KEYS = ("id", "title", "categories", "year", "text", "timestamp")


def json_lines(lines, name: str, keys: tuple[str, ...], required: tuple[str, ...] = ()):
    """``(line number, dict)`` of a JSON-lines file whose objects hold keys from ``keys`` (all of
    ``required``); blank lines skipped; a line that is not such an object raises RequestError naming
    ``name`` and the line."""
    for n, line in enumerate(lines, 1):
        if n == 1:
            line = line.lstrip("\ufeff")  # a byte-order mark (Windows editors' UTF-8) is not the data's
        if not line.strip():
            continue
        try:
            obj = loads_strict(line)
        except ValueError as exc:
            raise RequestError(f"{name}:{n}: not valid JSON ({getattr(exc, 'msg', exc)})") from None
        if not isinstance(obj, dict) or not set(required) <= set(obj) <= set(keys):
            need = f" (required: {', '.join(required)})" if required else ""
            raise RequestError(f"{name}:{n}: expected an object with keys from {', '.join(keys)}{need}")
        yield n, obj


def item_records(lines, name: str):
    """``(line number, item dict)`` of an item file, as ``genre items add --file`` and bulk embedding read it:
    JSON lines (``{id, title, categories?, year?, text?, timestamp?}`` per line), or CSV / TSV when ``name``
    ends so (a header of those keys; categories split on "|" or a JSON list; empty year/timestamp = 0)."""
    low = str(name).lower()
    if low.endswith((".csv", ".tsv")):
        return _csv_item_records(lines, name, "\t" if low.endswith(".tsv") else ",")
    return json_lines(lines, name, ITEM_KEYS)


DELIMITERS = (";", "\t", "|", ",")  # what CSV exports use besides their format's own (';': decimal-comma locales)


def header_delimiter(first: str, own: str, fits) -> str | None:
    """The first of ``own`` and :data:`DELIMITERS` that splits header line ``first`` into column names for which
    ``fits(names)`` holds (None if none does): a spreadsheet in a decimal-comma locale writes ';'-separated
    "CSV". The training data's loader reads its files' headers with it too."""
    import csv

    for d in (own, *(d for d in DELIMITERS if d != own)):
        if fits([h.strip().lstrip("\ufeff") for h in next(csv.reader([first], delimiter=d), [])]):
            return d
    return None


def _header_delimiter(first: str, delimiter: str, keys=ITEM_KEYS, required=("id", "title")) -> str:
    """``delimiter``, or another that splits header ``first`` into ``keys`` with all of ``required``."""
    return header_delimiter(first, delimiter, lambda h: set(required) <= set(h) <= set(keys)) or delimiter


EVENT_KEYS = ("item_id", "time")


def _csv_dicts(lines, name: str, delimiter: str, keys: tuple[str, ...], required: tuple[str, ...]):
    """``(line number, {column: text}, delimiter)`` of a CSV/TSV file whose header holds ``required`` and
    otherwise ``keys`` only, read with the delimiter its header is written with; blank rows skipped; a
    header, row or CSV problem raises RequestError naming ``name`` and the line."""
    import csv
    import itertools

    lines = iter(lines)
    first = next(lines, "")
    delim = _header_delimiter(first, delimiter, keys, required)
    # skipinitialspace: "c1, A title" (a comma and a space, as people type CSV) gives no leading spaces
    reader = csv.reader(itertools.chain([first], lines), delimiter=delim, skipinitialspace=True)
    try:
        header = [h.strip().lstrip("\ufeff") for h in next(reader, [])]
        if not set(required) <= set(header) <= set(keys):
            need = f" ({' and '.join(required)} required)" if set(required) != set(keys) else ""
            raise RequestError(f"{name}:1: expected a header of {', '.join(keys)}{need}, "
                               f"got {', '.join(header) or 'nothing'}")
        for row in reader:
            n = reader.line_num
            if not any(c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise RequestError(f"{name}:{n}: expected {len(header)} fields, got {len(row)}")
            yield n, dict(zip(header, row)), delim
    except csv.Error as exc:
        raise RequestError(f"{name}:{reader.line_num}: malformed CSV ({exc})") from None


def event_records(lines, name: str):
    """``(line number, {"item_id", "time"})`` of an events file, as ``genre items events --file`` reads it:
    JSON lines, or CSV / TSV when ``name`` ends so (a header ``item_id,time``; times in unix seconds, a
    decimal comma read as a point). Values are checked by the caller."""
    low = str(name).lower()
    if not low.endswith((".csv", ".tsv")):
        yield from json_lines(lines, name, EVENT_KEYS, EVENT_KEYS)
        return
    for n, rec, delim in _csv_dicts(lines, name, "\t" if low.endswith(".tsv") else ",", EVENT_KEYS, EVENT_KEYS):
        v = rec["time"].strip()
        try:
            t = float(v.replace(",", ".", 1) if delim != "," else v)
        except ValueError:
            raise RequestError(f"{name}:{n}: time must be unix seconds (a number), got {v[:40]!r}") from None
        yield n, {"item_id": rec["item_id"].strip(), "time": t}


def _csv_item_records(lines, name: str, delimiter: str):
    for n, rec, _ in _csv_dicts(lines, name, delimiter, ITEM_KEYS, ("id", "title")):
        cats = rec.get("categories", "").strip()
        if cats.startswith("["):
            try:
                rec["categories"] = json.loads(cats)
            except ValueError:
                raise RequestError(f"{name}:{n}: categories {cats[:60]!r} start like a JSON list but are not one") from None
        else:
            rec["categories"] = [c.strip() for c in cats.split("|") if c.strip()]
        for key in ("year", "timestamp"):
            v = rec.get(key, "").strip()
            if key in rec:
                if v and not (v.isascii() and v.isdigit()):
                    raise RequestError(f"{name}:{n}: {key} must be a whole number (or empty), got {v[:40]!r}")
                rec[key] = int(v) if v else 0
        yield n, rec


def repeated(ids, show: int = 3) -> str:
    """The ids that occur more than once, quoted, at most ``show`` of them and how many more ("" if none)."""
    seen, dup = set(), {}
    for i in ids:
        if i in seen:
            dup[i] = None
        seen.add(i)
    more = f" and {len(dup) - show} more" if len(dup) > show else ""
    return ", ".join(map(repr, list(dup)[:show])) + more if dup else ""


def item_text(template: str, item: ItemInput) -> str:
    """The text the encoder sees for a new item (the bundle's template, like training)."""
    from .text_template import render, template_fields

    fields = {"title": item.title, "year": str(item.year) if item.year else "",
              "genres": ", ".join(item.categories), "categories": ", ".join(item.categories),
              "id": item.id, "category": item.categories[0] if item.categories else "",
              "subcategory": item.categories[1] if len(item.categories) > 1 else ""}
    # every other field is one of the training data's text columns (description, abstract, tags, a column of
    # the user's own): a new item has one text, which fills them ({keywords} was left empty here)
    for name in template_fields(template):
        fields.setdefault(name, item.text)
    return render(template, fields)


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.float16).tobytes()).decode("ascii")


def _b64_counts(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f8").tobytes()).decode("ascii")


def _unb64_counts(s: str) -> np.ndarray:
    raw = base64.b64decode(s, validate=True)
    if len(raw) % 8:
        raise ValueError("trend counts are not whole float64 values")
    return np.frombuffer(raw, dtype="<f8").astype(np.float64)


def _unb64(s: str, dim: int) -> np.ndarray:
    a = np.frombuffer(base64.b64decode(s, validate=True), dtype=np.float16)
    if a.shape != (dim,):
        raise ValueError(f"embedding has {a.size} values, expected {dim}")
    if not np.isfinite(a).all():
        raise ValueError("embedding holds NaN or infinite values")
    return a.astype(np.float32)


class Catalog:
    """Items, embeddings, popularity and per-item metadata, with removals masked out."""

    def __init__(self, ids, titles, categories, years, first_seen, emb: np.ndarray, pop: np.ndarray,
                 packed: bool | None = None, trend: Trend | None = None, trend_key: str = ""):
        ids = ids if isinstance(ids, list) else list(ids)
        # ``packed`` (default: from PACK_FROM items on): ids and titles in one buffer each and the id lookup
        # as sorted hashes (item_columns), not a Python object per item: at 10M items lists and an id dict
        # were ~1.9 GB of the serving memory. Smaller catalogs keep lists and a dict: 20-40 us a request
        # faster (measured at history 50), for at most ~20 MB at 100k items.
        self.packed = len(ids) >= PACK_FROM if packed is None else bool(packed)
        if self.packed:
            self.ids, self.titles = StrColumn(ids), StrColumn(titles)
        else:
            self.ids, self.titles = ids, list(titles)
        self.categories = TupleColumn(categories)  # a code per item: the filters run per combination
        self.years = np.asarray(years, np.int32)
        self.first_seen = np.asarray(first_seen, np.int64)
        # float32 rows, or int8 rows + scales (Int8Rows, memory-mapped from the bundle) for large catalogs
        self.emb = emb if isinstance(emb, Int8Rows) else np.ascontiguousarray(emb, dtype=np.float32)
        self.pop = np.asarray(pop, np.float32)
        # trending popularity (bundles calibrated with it): counts that fade, read as of the request time
        self.trend = trend
        if trend is not None and len(trend) != len(self.ids):
            raise BundleError(f"trend counts for {len(trend)} items, catalog has {len(self.ids)}")
        # the bundle's counts (what the state's events build on) and which bundle they are: a state folder's
        # counts are taken only when they were built on the same bundle counts
        self._trend_base = (trend.counts.copy(), trend.as_of) if trend is not None else None
        self._trend_key = trend_key
        self.active = np.ones(len(self.ids), bool)
        self.n_bundle = len(self.ids)
        self.index = IdIndex(self.ids) if self.packed else {iid: i for i, iid in enumerate(self.ids)}
        self.lock = threading.RLock()
        self.updates_path: Path | None = None
        self._added: dict[str, dict] = {}
        self._removed: set[str] = set()
        # rows of removed on-device items, reused by the next new item: months of add/remove churn
        # must not grow memory (a soak of 200k requests showed +6% RSS before this)
        self._free: list[int] = []
        # rows whose embedding changed in place since the int8 scoring index was built
        self.changed_rows: set[int] = set()
        self._room: dict[str, np.ndarray] = {}  # the buffers per-item arrays grow in (see _append)
        self._sig = None  # _state_signature of the updates files as last read or written here
        self._journal = {"base": None, "ops": 0, "torn": False}  # the journal as last read or written here
        self._snapshot_cache = None  # (signature, added, removed, generation, trend) of the snapshot last parsed
        self._category_index()

    def _category_index(self):
        names = sorted({c for cats in self.categories.combos for c in cats})
        self.cat_names = {c: i for i, c in enumerate(names)}
        self._combo_bits()

    def _combo_bits(self):
        """One row of category flags per distinct category combination (items share few of them: the
        filters are decided per combination, then gathered by the items' codes)."""
        bits = np.zeros((len(self.categories.combos), max(1, len(self.cat_names))), bool)
        for j, cats in enumerate(self.categories.combos):
            for c in cats:
                bits[j, self.cat_names[c]] = True
        self.combo_bits = bits

    def _set_categories(self, i: int | None, cats) -> None:
        """Store ``cats`` for row ``i`` (None: a new last row), registering new names and combinations."""
        for c in cats:
            if c not in self.cat_names:
                self.cat_names[c] = len(self.cat_names)
        n_combos = len(self.categories.combos)
        if i is None:
            self.categories.append(cats)
        else:
            self.categories[i] = cats
        if len(self.categories.combos) != n_combos or self.combo_bits.shape[1] < len(self.cat_names):
            self._combo_bits()

    def __len__(self):
        return int(self.active.sum())

    # ------------------------------------------------------------- queries
    @contextmanager
    def locked(self):
        """A consistent view for the duration of the block: no update lands while it is held."""
        with self.lock:
            yield self

    def _active_rows(self, ids: list[str]) -> np.ndarray:
        """int64 per id: its row if the item is active, else -1 (unknown or removed)."""
        known = self.index.get_many(ids) if self.packed else [self.index.get(i) for i in ids]
        return np.array([-1 if r is None or not self.active[r] else r for r in known], np.int64)

    def rows(self, ids) -> tuple[np.ndarray, list[str]]:
        """(rows of the active items among ``ids``, in order; the other ids, sorted and unique)."""
        ids = list(ids)
        r = self._active_rows(ids)
        return r[r >= 0], sorted({i for i, x in zip(ids, r) if x < 0})

    def popularity(self, now: float | None = None) -> np.ndarray:
        """The popularity feature the blend reads: the bundle's static one, or with a trend the decayed
        counts as of ``now`` (unix seconds; default the newest event the catalog knows)."""
        return self.pop if self.trend is None else self.trend.feature(now)

    def record_events(self, ids: list[str], times: list[float]) -> list[str]:
        """Count interaction events (item ids at unix times) into the trend, durably when the catalog has
        an updates file (a journal line, shared with every process on it, as item changes are); returns
        the unknown ids (not counted). Without a trend (a bundle with static popularity) this is refused."""
        if self.trend is None:
            raise RequestError("this bundle's popularity is static (trained without trending popularity); "
                               "events are not counted")
        if len(ids) != len(times):
            raise RequestError(f"events need one time per item ({len(ids)} items, {len(times)} times)")
        with self.lock, _FileLock(self.updates_path):
            self._sync()  # another process's writes first: they stay in the file we write
            r = self._active_rows(list(ids))
            ok = r >= 0
            when = np.asarray(times, np.float64)[ok]
            new = Trend(self.trend.counts, self.trend.half_life, self.trend.as_of)
            new.add(r[ok], when)  # checks the events before anything is written
            if ok.any():
                # persist first: if the write fails, memory stays as it was
                self._write([{"op": "events", "ids": [i for i, k in zip(ids, ok) if k], "times": when.tolist()}],
                            self._added, self._removed, trend=new)
                self.trend.replace(new.counts, new.as_of)
        return sorted({i for i, k in zip(ids, ok) if not k})

    def active_rows(self) -> np.ndarray:
        return np.flatnonzero(self.active)

    def mask(self, f: Filters, rows: np.ndarray | None = None) -> np.ndarray:
        """Rows that are active and pass the filters ``f`` (unknown category names match nothing): one
        flag per catalog row, or per row of ``rows`` (a candidate set: nothing catalog-sized is built)."""
        if rows is None:
            m, codes, years, first_seen = self.active.copy(), self.categories.codes, self.years, self.first_seen
        else:
            rows = np.asarray(rows, np.int64)
            m, codes, years, first_seen = (self.active[rows], self.categories.codes[rows], self.years[rows],
                                           self.first_seen[rows])
        bits, ok = self.combo_bits, np.ones(len(self.combo_bits), bool)  # per category combination
        for group in (f.include_categories, f.any_categories):
            if group:
                cols = [self.cat_names[c] for c in group if c in self.cat_names]
                ok &= bits[:, cols].any(1) if cols else False
        for c in f.require_categories:
            ok &= bits[:, self.cat_names[c]] if c in self.cat_names else False
        if f.exclude_categories:
            cols = [self.cat_names[c] for c in f.exclude_categories if c in self.cat_names]
            if cols:
                ok &= ~bits[:, cols].any(1)
        if not ok.all():
            m &= ok[codes]
        if f.year_min is not None:
            m &= years >= f.year_min
        if f.year_max is not None:
            m &= (years <= f.year_max) & (years > 0)
        if f.since is not None:
            m &= first_seen >= f.since
        if f.until is not None:
            m &= first_seen <= f.until
        for a, b in f.exclude_years:
            m &= ~((years >= a) & (years <= b))
        return m

    def search(self, text: str, limit: int, offset: int = 0) -> tuple[list[int], int]:
        """Active rows whose id is ``text`` or whose title contains it (case-insensitive), and how many
        match: the id first, then titles starting with it, then the other titles, each group most
        popular first (what someone picking a history expects from a search box), then titles that
        moved a leading article of ``text`` to their end ("the godfather": "Godfather, The"). Empty
        text: all active items by popularity."""
        t = fold(text).strip()
        with self.lock:
            if not t:
                rows = np.flatnonzero(self.active)
                rows = rows[np.argsort(-self.pop[rows], kind="stable")]
                return rows[offset:offset + limit].tolist(), len(rows)
            exact = self.index.get(text.strip())
            head = [exact] if exact is not None and self.active[exact] else []
            parts = [np.asarray(head, np.int64), *self._title_matches(t, exact)]
            # a leading article the catalog moved to the end ("the godfather" for "Godfather, The"): those
            # titles follow the ones that contain the text as typed
            m = re.match(r"(the|a|an)\s+(?=\S)", t)
            if m:
                moved = ", " + m.group(1)
                starts = self._title_matches(t[m.end():], exact)[0]
                parts.append(np.asarray([r for r in starts.tolist() if fold(self.titles[r]).rstrip().endswith(moved)],
                                        np.int64))
            rows = np.concatenate(parts)
            if m and len(parts[-1]):
                rows = rows[np.sort(np.unique(rows, return_index=True)[1])]  # first place of each row
            return rows[offset:offset + limit].tolist(), len(rows)

    def _title_matches(self, t: str, exact: int | None) -> list[np.ndarray]:
        """Active rows (but ``exact``) whose folded title (item_columns.fold: no case, no accents) starts
        with ``t``, then those containing it elsewhere, each most popular first."""
        if self.packed and "\x00" not in t:  # one pass over a folded buffer, not a step per title
            groups = []
            for g in self.titles.find(t):
                g = g[self.active[g]]
                groups.append(g[g != exact] if exact is not None else g)
        else:
            starts, inner = [], []
            for i, title in enumerate(self.titles):
                if i == exact or not self.active[i]:
                    continue
                at = fold(title).find(t)
                if at == 0:
                    starts.append(i)
                elif at > 0:
                    inner.append(i)
            groups = [np.asarray(g, np.int64) for g in (starts, inner)]
        return [g[np.argsort(-self.pop[g], kind="stable")] for g in groups]

    def resolve_categories(self, names) -> tuple[tuple[str, ...], list[str]]:
        """The catalog's own spelling of category ``names`` and the names no catalog item has had.

        A name is kept as given when an item has it, else it stands for every name equal to it ignoring
        case and accents ('drama' finds 'Drama', 'sci-fi' 'Sci-Fi', 'comedie' 'Comédie'): a filter a user
        typed in lower case should not silently match nothing. Call it under :meth:`locked` (the names can
        change with catalog updates).
        """
        out, unknown, folded = [], [], None
        for name in names:
            if name in self.cat_names:
                out.append(name)
                continue
            if folded is None:
                folded = {}
                for c in self.cat_names:
                    folded.setdefault(fold(c), []).append(c)
            same = folded.get(fold(name))
            if same:
                out.extend(same)
            else:
                unknown.append(name)
        return tuple(dict.fromkeys(out)), unknown

    def facets(self) -> dict:
        """The categories and the year range of the active items (what filters can choose from)."""
        with self.lock:
            act = self.active
            used = self.combo_bits[np.unique(self.categories.codes[act])].any(0)
            names = sorted(c for c, j in self.cat_names.items() if used[j])
            years = self.years[act & (self.years > 0)]
            return {"categories": names,
                    "years": [int(years.min()), int(years.max())] if len(years) else None}

    def example_instructions(self) -> tuple[str, ...]:
        """Instructions in this catalog's terms (its most common categories and decade) for a client to offer."""
        from .query_parser import example_instructions

        with self.lock:
            act = self.active
            # items per category: per combination first (few of them), then spread over its categories
            per_combo = np.bincount(self.categories.codes[act], minlength=len(self.combo_bits))
            per_cat = per_combo @ self.combo_bits.astype(np.int64)
            counts = {c: int(per_cat[j]) for c, j in self.cat_names.items() if per_cat[j]}
            years = self.years[act]
        return example_instructions(counts, years)

    # ------------------------------------------------------------- updates
    def _append(self, item: ItemInput, e: np.ndarray):
        i = len(self.ids)
        self.ids.append(item.id)
        self.titles.append(item.title)
        self._set_categories(None, item.categories)
        room = self._room  # per-item arrays grow inside buffers with spare rows (item_columns.push)
        self.years, room["years"] = push(self.years, room.get("years"), item.year)
        self.first_seen, room["first_seen"] = push(self.first_seen, room.get("first_seen"), item.timestamp)
        if isinstance(self.emb, Int8Rows):
            self.emb.append(e)
        else:
            self.emb, room["emb"] = push(self.emb, room.get("emb"), e)
        self.pop, room["pop"] = push(self.pop, room.get("pop"), 0.0)
        if self.trend is not None:
            self.trend.append()
        self.active, room["active"] = push(self.active, room.get("active"), True)
        self.index[item.id] = i

    def _apply_add(self, item: ItemInput, e: np.ndarray):
        if item.id not in self.index and self._free:
            i = self._free.pop()
            del self.index[self.ids[i]]  # the removed item's id is unknown from now on
            self.ids[i] = item.id
            self.index[item.id] = i
            self.first_seen[i] = 0  # nothing of the removed item carries over
            if self.trend is not None:
                self.trend.reset(i)
        if item.id in self.index:
            i = self.index[item.id]
            if i in self._free:
                self._free.remove(i)
            self.titles[i] = item.title
            self._set_categories(i, item.categories)
            self.years[i] = item.year
            self.first_seen[i] = item.timestamp or self.first_seen[i]
            self.emb[i] = e
            self.changed_rows.add(i)
            self.active[i] = True
        else:
            self._append(item, e)

    def _state(self, added: dict, removed: set, trend: Trend | None = None) -> dict:
        state = {"format": UPDATES_FORMAT, "dim": int(self.emb.shape[1]), "added": list(added.values()),
                 "removed": sorted(removed)}
        trend = trend if trend is not None else self.trend
        if trend is not None:  # the counts as of now: bundle rows as one array, on-device items by id
            nb = self.n_bundle
            dev = {self.ids[r]: float(trend.counts[r]) for r in range(nb, len(trend)) if self.active[r] and trend.counts[r]}
            state["trend"] = {"bundle_key": self._trend_key, "as_of": trend.as_of,
                              "bundle": _b64_counts(trend.counts[:nb]), "device": dev}
        return state

    def _write(self, ops: list[dict], added: dict, removed: set, trend: Trend | None = None) -> None:
        """Make ``ops`` durable (call with the exclusive file lock held, after ``_sync``): appended to the
        journal and fsync'd, O(size of the change); every ``JOURNAL_COMPACT_OPS`` ops (or when the
        journal cannot be appended to: none yet, torn by a crash, from an older snapshot) the whole state
        ``added``/``removed`` becomes the next snapshot and the journal starts again.

        Why a journal: rewriting and fsyncing the whole state per change cost 54 ms per add at ~2,300
        on-device items (2.8 MB), growing with every item."""
        path = self.updates_path
        if path is None:
            return
        j = self._journal
        snap_gen = self._sig[0][3] if self._sig and self._sig[0] else None
        try:  # a write that fails leaves the files as they were: nothing changed, said once, here
            if snap_gen is None or j["base"] != snap_gen or j["torn"] or j["ops"] + len(ops) > JOURNAL_COMPACT_OPS:
                gen = max(0, snap_gen or 0) + 1
                atomic_write_json(path, {"generation": gen, **self._state(added, removed, trend)})  # first key: _signature
                self._start_journal(path, gen)
            else:
                self._append_journal(_journal_path(path), "".join(json.dumps(op, ensure_ascii=False) + "\n"
                                                                  for op in ops).encode())
                j["ops"] += len(ops)
        except OSError as exc:
            raise storage_error(exc, "the catalog change", path.parent) from None
        self._sig = _state_signature(path)

    def _start_journal(self, path: Path, gen: int) -> None:
        """An empty journal on snapshot ``gen``. If it cannot be written the change is saved all the same: the
        new snapshot holds it, readers skip a journal of an older generation, and the next change writes a
        snapshot again."""
        try:
            atomic_write_bytes(_journal_path(path), (json.dumps({"journal": UPDATES_FORMAT, "base": gen}) + "\n").encode())
            self._journal = {"base": gen, "ops": 0, "torn": False}
        except OSError as exc:
            log.warning("%s: could not start a new catalog journal (%s); the change is saved in the snapshot",
                        path.parent, exc.strerror or exc)
            self._journal = {"base": None, "ops": 0, "torn": False}

    def _append_journal(self, journal: Path, data: bytes) -> None:
        """Append ``data`` to the journal and fsync it, all or nothing: a write cut short (a full disk) is cut
        off again, so the file ends where it did and the next append starts on a fresh line; if even that
        fails, the journal counts as torn and the next change writes a snapshot instead."""
        fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            end = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                try:
                    os.ftruncate(fd, end)
                except OSError:
                    self._journal["torn"] = True
                raise
        finally:
            os.close(fd)

    def add(self, items: list[ItemInput], embeddings: np.ndarray) -> None:
        """Add or replace items (durable when this returns)."""
        with self.lock, _FileLock(self.updates_path):
            self._sync()  # another process's writes first: they stay in the file we write
            added = dict(self._added)
            removed = set(self._removed)
            for it, e in zip(items, embeddings):
                added[it.id] = {"id": it.id, "title": it.title, "categories": list(it.categories), "year": it.year,
                                "text": it.text, "timestamp": it.timestamp, "embedding": _b64(e)}
                removed.discard(it.id)
            # persist first: if the write fails, memory stays as it was
            self._write([{"op": "add", "items": [added[it.id] for it in items]}], added, removed)
            self._added, self._removed = added, removed
            for it, e in zip(items, embeddings):
                self._apply_add(it, e)

    def remove(self, ids: list[str]) -> list[str]:
        """Remove items; returns the ids that were not in the catalog."""
        with self.lock, _FileLock(self.updates_path):
            self._sync()
            unknown = [i for i in ids if i not in self.index or not self.active[self.index[i]]]
            known = [i for i in ids if i not in unknown]
            if not known:
                return unknown
            added = {k: v for k, v in self._added.items() if k not in known or self.index[k] < self.n_bundle}
            removed = set(self._removed) | {i for i in known if self.index[i] < self.n_bundle}
            self._write([{"op": "remove", "drop": sorted(set(self._added) - set(added)),
                          "removed": sorted(removed - set(self._removed))}], added, removed)
            self._added, self._removed = added, removed
            for i in known:
                self._deactivate(i)
            return unknown

    def _deactivate(self, iid: str) -> None:
        row = self.index[iid]
        self.active[row] = False
        if row >= self.n_bundle and row not in self._free:
            self._free.append(row)

    def refresh(self) -> bool:
        """Apply what another process wrote to the updates file since this one last read or wrote it
        (one ``stat`` when nothing changed). Returns whether anything was applied."""
        if self.updates_path is None or _state_signature(self.updates_path) == self._sig:
            return False
        with self.lock, _FileLock(self.updates_path, shared=True):
            return self._sync()

    def _sync(self) -> bool:
        """Make memory match the updates file (call with the locks held)."""
        path = self.updates_path
        if path is None:
            return False
        sig = _state_signature(path)
        if sig == self._sig:
            return False
        items, removed, trend_state, events = (self._read(path) if sig is not None and sig[0] is not None
                                               else ([], [], None, []))
        new_added = {it.id: rec for it, _, rec in items}
        for iid in set(self._added) - set(new_added):  # removed by the other process
            if iid in self.index and self.index[iid] >= self.n_bundle:
                self._deactivate(iid)
        for it, e, rec in items:
            if self._added.get(it.id) != rec:
                self._apply_add(it, e)
        for rid in set(self._removed) - set(removed):  # bundle items added back
            if rid in self.index:
                self.active[self.index[rid]] = True
        for rid in removed:
            if rid in self.index:
                self.active[self.index[rid]] = False
        self._added, self._removed, self._sig = new_added, {r for r in removed if r in self.index}, sig
        if self.trend is not None:
            self._rebuild_trend(trend_state, events)
        log.info("catalog updates from another process applied (%d added/updated, %d removed)", len(items), len(removed))
        return True

    def _record(self, rec) -> tuple:
        dim = int(self.emb.shape[1])
        it = ItemInput(rec["id"], rec["title"], tuple(rec["categories"]), int(rec["year"]), rec.get("text", ""),
                       int(rec.get("timestamp", 0))).validate()
        return it, _unb64(rec["embedding"], dim), rec

    def _rebuild_trend(self, state: dict | None, events: list) -> None:
        """The trend as the updates file says: its snapshot's counts (or the bundle's, when it has none or
        they were built on another bundle's), plus the journal's events."""
        nb, n = self.n_bundle, len(self.ids)
        counts = np.zeros(n, np.float64)
        if state is not None and state["bundle_key"] == self._trend_key and len(state["bundle"]) == nb:
            counts[:nb], as_of = state["bundle"], state["as_of"]
            for iid, c in state["device"].items():
                r = self.index.get(iid)
                if r is not None and r >= nb:
                    counts[r] = c
        else:
            if state is not None:
                log.warning("the catalog state's trend counts were built on another bundle: starting from this "
                            "bundle's counts (and the journal's events)")
            counts[:nb], as_of = self._trend_base
        t = Trend(counts, self.trend.half_life, as_of)
        for ids, times in events:
            r = self._active_rows(ids)
            t.add(r[r >= 0], np.asarray(times, np.float64)[r >= 0])
        self.trend.replace(t.counts, t.as_of)

    def _read(self, path: Path) -> tuple[list, list[str], dict | None, list]:
        """(items as (ItemInput, embedding, record), removed ids, the snapshot's trend counts or None, the
        journal's events as (ids, times) in order) of the updates snapshot with its journal replayed; refused
        when corrupt (a torn last journal line, a crash mid-append, is ignored)."""
        bad = (ValueError, KeyError, TypeError, RequestError, UnicodeDecodeError, AttributeError, OverflowError)
        snap_sig = _signature(path)
        cached = self._snapshot_cache
        if cached is not None and snap_sig is not None and cached[0] == snap_sig:
            # only the journal changed (the usual case): the parsed snapshot is reused, the journal replayed
            added, removed, gen, trend = dict(cached[1]), set(cached[2]), cached[3], cached[4]
        else:
            added, removed, gen, trend = self._read_snapshot(path, bad)
            self._snapshot_cache = (snap_sig, dict(added), set(removed), gen, trend)
        items, removed, events = self._replay(path, added, removed, gen, bad)
        return items, removed, trend, events

    def _read_snapshot(self, path: Path, bad) -> tuple[dict, set, int, dict | None]:
        try:
            state = loads_strict(path.read_text(encoding="utf-8"))
            if not isinstance(state, dict) or state.get("format") != UPDATES_FORMAT:
                raise ValueError(f"format {state.get('format') if isinstance(state, dict) else None!r}, "
                                 f"expected {UPDATES_FORMAT!r}")
            dim = int(state["dim"])
            if dim != self.emb.shape[1]:
                raise ValueError(f"embedding size {dim} does not match the bundle's {self.emb.shape[1]}")
            added = {}
            for rec in state["added"]:
                r = self._record(rec)
                added[r[0].id] = r
            removed = {str(r) for r in state["removed"]}
            gen = state.get("generation", -1)
            trend = state.get("trend")
            if trend is not None:
                bundle = _unb64_counts(trend["bundle"])
                dev = {str(k): float(v) for k, v in trend["device"].items()}
                as_of = float(trend["as_of"])
                if not (np.isfinite(bundle).all() and (bundle >= 0).all() and np.isfinite(as_of)
                        and all(np.isfinite(v) and v >= 0 for v in dev.values())):
                    raise ValueError("trend counts must be finite and >= 0")
                trend = {"bundle_key": str(trend["bundle_key"]), "as_of": as_of, "bundle": bundle, "device": dev}
        except bad as exc:
            raise BundleError(f"{path}: catalog updates file is corrupt ({exc}); move it away to start from the "
                              "bundle's catalog, or restore it from a backup") from None
        return added, removed, gen, trend

    def _replay(self, path: Path, added: dict, removed: set, gen, bad) -> tuple[list, list[str], list]:
        jp = _journal_path(path)
        self._journal = {"base": None, "ops": 0, "torn": False}
        try:
            raw = jp.read_bytes()
        except FileNotFoundError:
            raw = b""
        lines = raw.split(b"\n")
        events: list = []
        torn = lines.pop()  # after the last newline: b"" unless a crash cut a line short
        try:
            head = loads_strict(lines[0].decode("utf-8")) if lines else None
            if head is not None and (not isinstance(head, dict) or head.get("journal") != UPDATES_FORMAT):
                raise ValueError("the first line is not a catalog journal header")
            if head is not None and head.get("base") == gen:  # else from an older snapshot: already in it
                for line in lines[1:]:
                    op = loads_strict(line.decode("utf-8"))
                    if op["op"] == "add":
                        for rec in op["items"]:
                            r = self._record(rec)
                            added[r[0].id] = r
                            removed.discard(r[0].id)
                    elif op["op"] == "remove":
                        for iid in op["drop"]:
                            added.pop(str(iid), None)
                        removed |= {str(i) for i in op["removed"]}
                    elif op["op"] == "events":  # interaction events for trending popularity
                        ids, times = [str(i) for i in op["ids"]], [float(t) for t in op["times"]]
                        if len(ids) != len(times) or not all(math.isfinite(t) and t >= 0 for t in times):
                            raise ValueError("an events line needs one finite time >= 0 per item")
                        events.append((ids, times))
                    else:
                        raise ValueError(f"unknown journal operation {op['op']!r}")
                self._journal = {"base": gen, "ops": len(lines) - 1, "torn": bool(torn)}
        except bad as exc:
            raise BundleError(f"{jp}: catalog journal is corrupt ({exc}); move it away (the snapshot "
                              f"{path.name} alone is the state before its changes), or restore it from a backup") from None
        if torn:
            log.warning("%s ends in a partial line (a write cut short, never acknowledged): ignored", jp)
        return list(added.values()), sorted(removed), events

    def load_updates(self, path: Path) -> dict:
        """Apply the updates file at ``path`` (if any) and persist there from now on.

        A leftover temp file from a crash mid-write is ignored (the rename never happened, so the
        update was never acknowledged). A corrupt updates file is refused with a clear error.
        """
        self.updates_path = path
        temps = (f".{path.name}.*.tmp", f".{_journal_path(path).name}.*.tmp")
        if any(t for pat in temps for t in path.parent.glob(pat)):
            # under the exclusive lock: a writer in another process holds it while its temp file exists, so
            # what is found then was left by a crash (deleting without the lock broke a running server's
            # write: a soak with `genre items add` next to `genre serve` got 500s)
            try:
                with _FileLock(path):
                    for tmp in (t for pat in temps for t in path.parent.glob(pat)):
                        log.warning("removing %s left by an interrupted catalog write (that update was not "
                                    "acknowledged)", tmp)
                        tmp.unlink(missing_ok=True)
            except (StorageError, OSError) as exc:  # a read-only state folder: readers ignore temp files anyway
                log.warning("%s: temp files of an interrupted write not removed (%s); readers ignore them",
                            path.parent, os.strerror(exc.errno) if exc.errno else exc)
        if not path.is_file():
            return {"added": 0, "removed": 0}
        with self.lock, _FileLock(path, shared=True):
            self._sync()
        return {"added": len(self._added), "removed": len(self._removed)}


_GENERATION = re.compile(rb'\{\s*"generation":\s*(\d+)')
JOURNAL_COMPACT_OPS = 256  # journal operations folded into a new snapshot (bounds replay and file size)


def _journal_path(path: Path) -> Path:
    """``catalog-updates.journal`` beside ``catalog-updates.json``: changes since the snapshot, one JSON line each."""
    return path.with_name(path.stem + ".journal")


def _state_signature(path: Path):
    """(snapshot signature, journal (inode, size)), or None when neither exists: a journal only grows
    between two snapshots, and a new snapshot has a new generation."""
    snap = _signature(path)
    try:
        st = os.stat(_journal_path(path))
        journal = (st.st_ino, st.st_size)
    except FileNotFoundError:
        journal = None
    return None if snap is None and journal is None else (snap, journal)


def _signature(path: Path):
    """(inode, size, mtime, generation) of ``path``, or None when it does not exist.

    Why the generation (a counter every write increases, the file's first key): inode, size and
    mtime alone can repeat — a freed inode is reused by the next rename, two states of equal size
    are common, and mtime moves in kernel ticks — and a reader that took a changed file for the
    one it knew lost writes (found by a soak with two server workers and `genre items add`).
    One open and a 64-byte read, from the same file as the fstat.
    """
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            m = _GENERATION.match(fh.read(64))
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, int(m.group(1)) if m else -1


class _FileLock:
    """An advisory lock on ``<path>.lock`` shared by every process using the updates file (POSIX
    ``flock``; where there is none, e.g. Windows, only this process's own lock protects it)."""

    def __init__(self, path: Path | None, shared: bool = False):
        self.path, self.shared, self.fd = path, shared, None

    def __enter__(self):
        if self.path is None:
            return self
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            if not self.shared:
                raise storage_error(exc, "the catalog change", self.path.parent) from None
            # a read-only state folder (baked into a firmware image, say): a reader takes the lock read-only,
            # or, with no lock file there, needs none (no writer could have made one)
            try:
                self.fd = os.open(str(self.path) + ".lock", os.O_RDONLY)
            except OSError:
                return self
        fcntl.flock(self.fd, fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
