"""Loaders for MovieLens (ml-100k, RecBole atomic, ml-1m, ml-latest), MIND and generic CSV/JSONL.

Every loader returns a :class:`~genre_edge_export.data.schema.Dataset`. Structural problems (a missing
file, a row with the wrong number of fields, text in the wrong encoding) raise
:class:`~genre_edge.errors.DataError` naming the file and line. Rows that reference items missing
from the item file are skipped and counted in ``dataset.report``, because real logs have them
(MIND's behaviors reference news that news.tsv lacks).
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from genre_edge import config as cfg
from genre_edge.catalog import DELIMITERS, header_delimiter
from genre_edge.errors import ConfigError, DataError
from .schema import Dataset, Impression, Interactions, Items

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 4.0
_YEAR_RE = re.compile(r"\((\d{4})\)\s*$")


# --------------------------------------------------------------------------- helpers
def _need(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return path


_LIST_CELL = re.compile(r"^\[.*\]$", re.S)
_YEAR_CELL = re.compile(r"^(\d{1,4})(?:\.0*)?$|^(\d{4})-\d\d(?:-\d\d)?(?:[T ].*)?$")


def _categories(raw, sep: str, where) -> tuple[str, ...]:
    """An item's categories from its cell: a list (JSON lines), a text holding a list - JSON
    (``["Rock", "Pop"]``) or Python's repr (``['Rock', 'Pop']``, what pandas writes for a list column) - or
    text split on ``sep``. List elements are strings or numbers, or objects with a ``name`` (TMDB-style
    ``[{"id": 18, "name": "Drama"}]``); anything else raises DataError naming ``where()`` (built only then:
    this runs once per item). (A CSV cell holding a
    JSON list was once split on "|" and became one category spelled ``["Rock", "Pop"]``.)"""
    if isinstance(raw, str):
        text = raw.strip()
        if _LIST_CELL.match(text):
            parsed = _list_literal(text)
            if parsed is not None:
                raw = parsed
        if isinstance(raw, str):
            return tuple(c.strip() for c in text.split(sep) if c.strip())
    if not isinstance(raw, list):
        raw = [raw]  # a lone number (JSON lines)
    out = []
    for c in raw:
        if isinstance(c, dict) and isinstance(c.get("name"), str):
            c = c["name"]
        if isinstance(c, bool) or not isinstance(c, (str, int, float)):
            raise DataError(f"{where()}: categories must be strings (or objects with a \"name\"), got {c!r}")
        c = str(c).strip()
        if c:
            out.append(c)
    return tuple(out)


def _warn_other_separator(cats: list, ic, ipath: Path) -> None:
    """Warn when the categories look separated by something other than ``category_sep``: most items with
    categories have one, holding a comma or semicolon ("Comedy, Drama" read as one category)."""
    with_cats = [c for c in cats if c]
    if not with_cats:
        return
    for other in (",", ";"):
        if other == ic.category_sep:
            continue
        joined = sum(1 for c in with_cats if len(c) == 1 and other in c[0])
        if joined > len(with_cats) / 2:
            example = next(c[0] for c in with_cats if len(c) == 1 and other in c[0])
            log.warning("%s: %d of %d items have one category holding %r (e.g. %r): if that separates categories, "
                        "set category_sep = %r under [items]", ipath, joined, len(with_cats), other, example, other)
            return


def _positive_label(text: str | None) -> bool:
    """Whether a label cell (trimmed, lower case) says positive: 1/true/yes/y, or any number above 0 ("1.0", what a
    float column writes, and click counts; "1.0" once read as negative, every row of such a log)."""
    if text in ("1", "true", "yes", "y", "t"):
        return True
    try:
        return float(text) > 0  # NaN compares False
    except (TypeError, ValueError):
        return False


def _list_literal(text: str):
    """``text`` as a list if it is one in JSON or Python literal syntax, else None."""
    import ast

    try:
        v = json.loads(text)
    except ValueError:
        try:
            v = ast.literal_eval(text)  # literals only: no code runs
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
    return v if isinstance(v, list) else None


def _year(raw) -> int | None:
    """A year from its cell: ``1995``, ``"1995"``, ``1995.0`` / ``"1995.0"`` (a float column: pandas writes
    years that way when some are missing), or a date ``"1995-10-30"``; 0 for an empty cell or NaN; None for
    anything else."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, float):
        if raw != raw:
            return 0
        return int(raw) if raw.is_integer() and 0 <= raw <= 9999 else None
    if isinstance(raw, int):
        return raw if 0 <= raw <= 9999 else None
    text = str(raw).strip()
    if not text or text.lower() in ("nan", "none", "null", "na", "n/a"):
        return 0
    m = _YEAR_CELL.match(text)
    return int(m.group(1) or m.group(2)) if m else None


def _lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Yield (line number, line without newline); decoding errors name file and line."""
    _need(path)
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}:{lineno}: not valid {encoding} text ({exc.reason} at byte {exc.start}); "
                    f"set the file's encoding (e.g. encoding = \"latin-1\")"
                ) from None
            if lineno == 1:
                line = line.lstrip("\ufeff")  # a byte-order mark (Windows editors' UTF-8) is not the data's
            yield lineno, line.rstrip("\r\n")


def _split_title_year(title: str) -> tuple[str, int]:
    m = _YEAR_RE.search(title)
    if m:
        return title[: m.start()].strip(), int(m.group(1))
    return title.strip(), 0


def _to_number(s: str, path: Path, lineno: int, what: str, kind=float):
    try:
        return kind(s)
    except ValueError:
        raise DataError(f"{path}:{lineno}: {what} {s!r} is not a number") from None


class _Builder:
    """Collects interactions by external ids, then maps them to internal indices."""

    def __init__(self, items: Items, threshold: float | None):
        self.items = items
        self.threshold = threshold
        self.users: dict[str, int] = {}
        self.rows: list[tuple[int, int, int, float]] = []
        self.missing_items: dict[str, int] = {}

    def user_index(self, uid: str) -> int:
        return self.users.setdefault(uid, len(self.users))

    def add(self, uid: str, iid: str, t: int, rating: float = float("nan")) -> None:
        i = self.items.index(iid)
        if i is None:
            self.missing_items[iid] = self.missing_items.get(iid, 0) + 1
            return
        self.rows.append((self.user_index(uid), i, int(t), float(rating)))

    def interactions(self, labels: np.ndarray | None = None) -> Interactions:
        if self.rows:
            u, i, t, r = (np.array(c) for c in zip(*self.rows))
        else:
            u = i = t = np.zeros(0, np.int64)
            r = np.zeros(0, np.float32)
        if labels is None:
            if self.threshold is None or np.all(np.isnan(r)):
                labels = np.ones(len(u), np.int8)
            else:
                labels = (np.nan_to_num(r, nan=self.threshold) >= self.threshold).astype(np.int8)
        return Interactions(u, i, t, r, labels).sorted()

    def report(self) -> dict:
        rep = {}
        if self.missing_items:
            rep["rows_with_unknown_items"] = int(sum(self.missing_items.values()))
            rep["unknown_item_ids"] = len(self.missing_items)
            rep["unknown_item_examples"] = sorted(self.missing_items)[:5]
            log.warning(
                "%d interaction rows reference %d item ids missing from the item file (skipped)",
                rep["rows_with_unknown_items"], rep["unknown_item_ids"],
            )
        return rep


# --------------------------------------------------------------------------- MovieLens
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)


def load_ml100k_original(path: Path, threshold: float | None = DEFAULT_THRESHOLD) -> Dataset:
    """GroupLens ml-100k: ``u.data`` (tab separated) and ``u.item`` (pipe separated, latin-1)."""
    path = Path(path)
    genres = list(ML100K_GENRES)
    if (path / "u.genre").is_file():
        names = [ln.split("|")[0] for _, ln in _lines(path / "u.genre", "latin-1") if ln.strip()]
        if names:
            genres = names
    ids, titles, cats, years = [], [], [], []
    item_file = path / "u.item"
    for lineno, line in _lines(item_file, "latin-1"):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) != 5 + len(genres):
            raise DataError(
                f"{item_file}:{lineno}: expected {5 + len(genres)} '|'-separated fields, got {len(parts)}"
            )
        title, year = _split_title_year(parts[1])
        if not year and parts[2][-4:].isdigit():
            year = int(parts[2][-4:])
        flags = parts[5:]
        if any(f not in ("0", "1") for f in flags):
            raise DataError(f"{item_file}:{lineno}: genre flags must be 0 or 1, got {flags}")
        ids.append(parts[0])
        titles.append(title)
        cats.append(tuple(g for g, f in zip(genres, flags) if f == "1" and g != "unknown"))
        years.append(year)
    items = Items(ids, titles, cats, np.array(years))
    b = _Builder(items, threshold)
    data_file = path / "u.data"
    for lineno, line in _lines(data_file):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 4:
            raise DataError(f"{data_file}:{lineno}: expected 4 tab-separated fields, got {len(parts)}")
        b.add(parts[0], parts[1], _to_number(parts[3], data_file, lineno, "timestamp", int),
              _to_number(parts[2], data_file, lineno, "rating"))
    return Dataset("ml-100k", items, list(b.users), b.interactions(), None, b.report())


def _atomic_header(path: Path, header: str) -> list[str]:
    names = []
    for col in header.split("\t"):
        name, _, _typ = col.partition(":")
        names.append(name.strip())
    return names


def _read_atomic(path: Path) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    it = _lines(path)
    try:
        _, header = next(it)
    except StopIteration:
        raise DataError(f"{path}: empty file (expected a RecBole header like 'user_id:token')") from None
    names = _atomic_header(path, header)

    def rows():
        for lineno, line in it:
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != len(names):
                raise DataError(f"{path}:{lineno}: expected {len(names)} tab-separated fields, got {len(parts)}")
            yield lineno, parts

    return names, rows()


def _col(names: list[str], path: Path, *candidates: str, required=True) -> int | None:
    for c in candidates:
        if c in names:
            return names.index(c)
    if required:
        raise DataError(f"{path}: no column named {' or '.join(candidates)} (columns: {', '.join(names)})")
    return None


def load_recbole_atomic(path: Path, threshold: float | None = DEFAULT_THRESHOLD, name: str | None = None) -> Dataset:
    """RecBole atomic files: ``<name>.inter`` and ``<name>.item`` (``<name>.user`` is optional)."""
    path = Path(path)
    inter_files = sorted(path.glob("*.inter"))
    if not inter_files:
        raise DataError(f"{path}: no *.inter file (RecBole atomic format)")
    inter_file = inter_files[0]
    stem = name or inter_file.stem
    item_file = _need(path / f"{stem}.item")
    names, rows = _read_atomic(item_file)
    c_id = _col(names, item_file, "item_id")
    c_title = _col(names, item_file, "movie_title", "title", required=False)
    c_year = _col(names, item_file, "release_year", "year", required=False)
    c_cls = _col(names, item_file, "class", "genre", "categories", required=False)
    ids, titles, cats, years = [], [], [], []
    for lineno, p in rows:
        ids.append(p[c_id])
        titles.append(p[c_title].strip() if c_title is not None else "")
        y = p[c_year].strip() if c_year is not None else ""
        years.append(int(y) if y.isdigit() else 0)
        cats.append(tuple(p[c_cls].split()) if c_cls is not None else ())
    items = Items(ids, titles, cats, np.array(years))
    b = _Builder(items, threshold)
    names, rows = _read_atomic(inter_file)
    cu, ci = _col(names, inter_file, "user_id"), _col(names, inter_file, "item_id")
    cr = _col(names, inter_file, "rating", required=False)
    ct = _col(names, inter_file, "timestamp", required=False)
    for lineno, p in rows:
        t = _to_number(p[ct], inter_file, lineno, "timestamp") if ct is not None else lineno
        r = _to_number(p[cr], inter_file, lineno, "rating") if cr is not None else float("nan")
        b.add(p[cu], p[ci], int(t), r)
    return Dataset(stem, items, list(b.users), b.interactions(), None, b.report())


def load_ml1m(path: Path, threshold: float | None = DEFAULT_THRESHOLD) -> Dataset:
    """ml-1m / ml-10m: ``movies.dat`` and ``ratings.dat`` with ``::`` separators (latin-1)."""
    path = Path(path)
    ids, titles, cats, years = [], [], [], []
    mf = path / "movies.dat"
    for lineno, line in _lines(mf, "latin-1"):
        if not line.strip():
            continue
        parts = line.split("::")
        if len(parts) != 3:
            raise DataError(f"{mf}:{lineno}: expected 3 '::'-separated fields, got {len(parts)}")
        title, year = _split_title_year(parts[1])
        ids.append(parts[0])
        titles.append(title)
        years.append(year)
        cats.append(tuple(g for g in parts[2].split("|") if g and g != "(no genres listed)"))
    items = Items(ids, titles, cats, np.array(years))
    b = _Builder(items, threshold)
    rf = path / "ratings.dat"
    for lineno, line in _lines(rf, "latin-1"):
        if not line.strip():
            continue
        parts = line.split("::")
        if len(parts) != 4:
            raise DataError(f"{rf}:{lineno}: expected 4 '::'-separated fields, got {len(parts)}")
        b.add(parts[0], parts[1], _to_number(parts[3], rf, lineno, "timestamp", int),
              _to_number(parts[2], rf, lineno, "rating"))
    return Dataset(path.name or "ml-1m", items, list(b.users), b.interactions(), None, b.report())


def _csv_rows(path: Path, required: tuple[str, ...], encoding="utf-8", delimiter=",", table=""):
    _need(path)
    try:
        fh = open(path, newline="", encoding=encoding)
        # skipinitialspace: "u1, i1, 5" (a comma and a space, as people type CSV) gave ids " i1" that matched no
        # item, and a quoted field after the space ('i1, "Hello, World"') was split at its comma
        reader = csv.reader(fh, delimiter=delimiter, skipinitialspace=True)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty file (expected a header with {', '.join(required)})")
        header = [h.strip().lstrip("\ufeff") for h in header]
        for r in required:
            if r not in header:
                hint = ""
                if table and len(header) == 1:
                    hint = (f"; the header reads as one column: if the file separates fields with another "
                            f"character than {delimiter!r}, set delimiter under [{table}]")
                raise DataError(f"{path}: no column {r!r} in header (columns: {', '.join(header)}){hint}")
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{reader.line_num}: expected {len(header)} fields, got {len(row)}")
            yield reader.line_num, dict(zip(header, row))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid {encoding} text ({exc.reason}); set the encoding") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV: {exc}") from None


def load_ml_latest(path: Path, threshold: float | None = DEFAULT_THRESHOLD) -> Dataset:
    """ml-latest / ml-latest-small / ml-25m: ``movies.csv``, ``ratings.csv``, optional ``tags.csv``."""
    path = Path(path)
    ids, titles, cats, years = [], [], [], []
    for _, row in _csv_rows(path / "movies.csv", ("movieId", "title", "genres")):
        title, year = _split_title_year(row["title"])
        ids.append(row["movieId"])
        titles.append(title)
        years.append(year)
        cats.append(tuple(g for g in row["genres"].split("|") if g and g != "(no genres listed)"))
    tags: dict[str, dict[str, int]] = {}
    tag_file = path / "tags.csv"
    if tag_file.is_file():
        for _, row in _csv_rows(tag_file, ("movieId", "tag")):
            t = row["tag"].strip().lower()
            if t:
                d = tags.setdefault(row["movieId"], {})
                d[t] = d.get(t, 0) + 1
    # Most frequent tags first: they are the most informative item text.
    tag_text = [", ".join(sorted(tags.get(i, {}), key=lambda t: -tags[i][t])[:10]) for i in ids]
    items = Items(ids, titles, cats, np.array(years), {"tags": tag_text})
    b = _Builder(items, threshold)
    rf = path / "ratings.csv"
    for lineno, row in _csv_rows(rf, ("userId", "movieId", "rating", "timestamp")):
        b.add(row["userId"], row["movieId"], _to_number(row["timestamp"], rf, lineno, "timestamp", int),
              _to_number(row["rating"], rf, lineno, "rating"))
    return Dataset(path.name or "ml-latest", items, list(b.users), b.interactions(), None, b.report())


# --------------------------------------------------------------------------- MIND
def _mind_time(s: str, path: Path, lineno: int) -> int:
    try:
        dt = _dt.datetime.strptime(s.strip(), "%m/%d/%Y %I:%M:%S %p")
    except ValueError:
        raise DataError(f"{path}:{lineno}: time {s!r} is not like '11/15/2019 10:22:32 AM'") from None
    return int(dt.replace(tzinfo=_dt.timezone.utc).timestamp())


def load_mind(path: Path, threshold: float | None = None) -> Dataset:
    """MIND: ``news.tsv`` (id, category, subcategory, title, abstract, ...) and ``behaviors.tsv``.

    Clicked history items and clicked impression items become positive interactions; impression
    items shown but not clicked are kept as impressions (negatives). News ids missing from
    news.tsv are skipped and counted in ``report``.
    """
    path = Path(path)
    nf = path / "news.tsv"
    ids, titles, cats, abstracts = [], [], [], []
    for lineno, line in _lines(nf):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 5:
            raise DataError(f"{nf}:{lineno}: expected at least 5 tab-separated fields, got {len(parts)}")
        ids.append(parts[0])
        cats.append(tuple(c for c in (parts[1], parts[2]) if c))
        titles.append(parts[3])
        abstracts.append(parts[4])
    items = Items(ids, titles, cats, np.zeros(len(ids)), {"abstract": abstracts,
                                                          "category": [c[0] if c else "" for c in cats],
                                                          "subcategory": [c[1] if len(c) > 1 else "" for c in cats]})
    b = _Builder(items, None)
    labels: list[int] = []
    impressions: list[Impression] = []
    bf = path / "behaviors.tsv"
    seen_hist: set[tuple[int, int]] = set()
    for lineno, line in _lines(bf):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 5:
            raise DataError(f"{bf}:{lineno}: expected 5 tab-separated fields, got {len(parts)}")
        imp_id, uid, ts, hist, imps = parts
        t = _mind_time(ts, bf, lineno)
        u = b.user_index(uid)
        hist_idx = []
        for nid in hist.split():
            i = items.index(nid)
            if i is None:
                b.missing_items[nid] = b.missing_items.get(nid, 0) + 1
                continue
            hist_idx.append(i)
            # History clicks have no time of their own; record each once, just before this impression - unless
            # the log already holds it as a click of an earlier impression (a history that grows with the log's
            # own clicks listed each click again at every later impression of its user: a duplicate row per
            # click, which put a user's earlier clicks into their held-out truth)
            if (u, i) not in seen_hist:
                seen_hist.add((u, i))
                b.rows.append((u, i, t - 1, float("nan")))
                labels.append(1)
        shown, lab = [], []
        for tok in imps.split():
            nid, sep, flag = tok.rpartition("-")
            if not sep or flag not in ("0", "1"):
                raise DataError(f"{bf}:{lineno}: impression {tok!r} is not like 'N123-1' or 'N123-0'")
            i = items.index(nid)
            if i is None:
                b.missing_items[nid] = b.missing_items.get(nid, 0) + 1
                continue
            shown.append(i)
            lab.append(int(flag))
            if flag == "1":
                b.rows.append((u, i, t, float("nan")))
                labels.append(1)
                seen_hist.add((u, i))
        impressions.append(Impression(imp_id, u, t, np.array(hist_idx, np.int32), np.array(shown, np.int32),
                                      np.array(lab, np.int8)))
    inter = b.interactions(labels=np.array(labels, np.int8))
    return Dataset("mind", items, list(b.users), inter, impressions, b.report())


# --------------------------------------------------------------------------- generic CSV / JSONL
TIME_FORMATS = ("unix", "unix_ms", "iso")
_TIME_WORDS = {"unix": "unix seconds", "unix_ms": "unix milliseconds", "iso": "an ISO 8601 time (2024-01-05 10:00:00)"}


def _time_words(fmt: str) -> str:
    return _TIME_WORDS.get(fmt) or f"a time in the format {fmt!r}"


def _time_hint(v, fmt: str) -> str:
    """What to set when time ``v`` is not in ``fmt``: ISO times under a unix format, others under iso."""
    text = str(v).strip()
    if fmt in ("unix", "unix_ms"):
        try:
            _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            return '; it is an ISO 8601 time: set time_format = "iso" under [interactions]'
        except ValueError:
            pass
    if not re.fullmatch(r"[\d.eE+-]+", text):
        return ('; times written another way take a strptime pattern, e.g. time_format = "%d/%m/%Y %H:%M" '
                'for 05/01/2024 10:00')
    return ""


def _check_delimiter(d: str) -> None:
    if d and (len(d) != 1 or d in "\"\r\n"):
        raise ConfigError(f"delimiter: {d!r} is not one character other than a quote or a line break; "
                          "leave it empty (the format's own, or the one the header is written with), or one of "
                          + ", ".join(repr(x) for x in DELIMITERS))


def _delimiter(path: Path, fmt: str, configured: str, encoding: str, required: tuple[str, ...],
               table: str) -> str:
    """The field delimiter of CSV/TSV file ``path``: ``configured`` where set; else the format's own (',',
    tab) unless the header holds every ``required`` column only when split on another common delimiter,
    which is then used (logged). A ';'-separated spreadsheet export once failed with "no column 'item_id'
    (columns: item_id;title;...)" and no option to say so."""
    if configured:
        return configured
    own = "\t" if fmt == "tsv" else ","
    try:
        with open(_need(path), encoding=encoding, newline="") as fh:
            first = fh.readline().lstrip("\ufeff")
    except (UnicodeDecodeError, OSError):
        return own  # the reader names the problem
    d = header_delimiter(first, own, lambda h: bool(required) and all(r in h for r in required))
    if d is not None:
        if d != own:
            log.info("%s: the header is %r-separated; reading it so (set delimiter under [%s] to say so)", path, d, table)
        return d
    # no split holds every column: the one that splits the header at all, so the error lists its columns
    return header_delimiter(first, own, lambda h: len(h) > 1) or own


def _decimal_comma(value: str) -> str:
    """'3,5' -> '3.5' (a spreadsheet in a decimal-comma locale); anything else as it is."""
    return value.replace(",", ".", 1) if value.count(",") == 1 and "." not in value else value


@dataclass(frozen=True)
class GenericInteractions:
    path: str
    user: str = "user_id"
    item: str = "item_id"
    time: str = "timestamp"
    rating: str = ""
    label: str = ""
    format: str = cfg.choice("auto", ("auto", "csv", "tsv", "jsonl", "parquet"))
    time_format: str = "unix"  # unix | unix_ms | iso | a strptime pattern ("%d/%m/%Y %H:%M")
    encoding: str = "utf-8"
    delimiter: str = ""

    def validate(self):
        _check_delimiter(self.delimiter)
        if self.time_format not in TIME_FORMATS and "%" not in self.time_format:
            raise ConfigError(f"time_format: {self.time_format!r} is not one of {', '.join(TIME_FORMATS)} nor a "
                              "strptime pattern (with % fields, e.g. \"%d/%m/%Y %H:%M\")")
        for key in ("user", "item"):
            if not getattr(self, key).strip():
                raise ConfigError(f"{key}: empty; name the log's {key} column (default {key}_id)")
        if not self.time.strip():
            # an empty name once reached the reader and failed there with a traceback (KeyError: Field "")
            raise ConfigError("time: empty; the log needs a time column: the split holds out each user's latest "
                              "interactions and takes new items by when they were first seen. A log without times "
                              "can number its rows in their order in a column and name that column here")


@dataclass(frozen=True)
class GenericItems:
    path: str
    id: str = "item_id"
    title: str = "title"
    text: tuple[str, ...] = ()
    categories: str = ""
    category_sep: str = "|"
    year: str = ""
    format: str = cfg.choice("auto", ("auto", "csv", "tsv", "jsonl", "parquet"))
    encoding: str = "utf-8"
    delimiter: str = ""

    def validate(self):
        _check_delimiter(self.delimiter)
        if not self.id.strip():
            raise ConfigError("id: empty; name the item file's id column (default item_id)")


@dataclass(frozen=True)
class GenericConfig:
    """``[interactions]`` and ``[items]`` tables mapping your columns to the schema."""

    interactions: GenericInteractions
    items: GenericItems
    name: str = "custom"
    threshold: float = 4.0


def _parquet_has(path: Path, f, columns) -> None:
    """DataError naming the first of ``columns`` that Parquet file ``f`` lacks, and the columns it has."""
    names = f.schema_arrow.names
    for c in columns:
        if c not in names:
            raise DataError(f"{path}: no column {c!r} (columns: {', '.join(names)})")


def _parquet_rows(path: Path, required: tuple[str, ...]):
    """(row number from 1, record) of a Parquet file (an item file; interaction logs go column-wise), a batch
    at a time; lists stay lists (categories), nulls read as empty."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install 'pyarrow>=14', in the 'scale' extra)") from None
    try:
        f = pq.ParquetFile(path)
        _parquet_has(path, f, required)
        n = 0
        for batch in f.iter_batches(batch_size=65536):
            for rec in batch.to_pylist():
                n += 1
                yield n, {k: ("" if v is None else v) for k, v in rec.items()}
    except DataError:
        raise
    except Exception as exc:  # pyarrow's errors for a damaged or non-Parquet file
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None


def _records(path: Path, fmt: str, encoding: str, required: tuple[str, ...], delimiter: str = "",
             table: str = ""):
    fmt = _format(path, fmt)
    if fmt == "parquet":
        yield from _parquet_rows(_need(path), required)
        return
    if fmt in ("csv", "tsv"):
        yield from _csv_rows(path, required, encoding, _delimiter(path, fmt, delimiter, encoding, required, table),
                             table)
        return
    for lineno, line in _lines(path, encoding):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object per line")
        for r in required:
            if r not in rec:
                raise DataError(f"{path}:{lineno}: missing field {r!r}")
        yield lineno, {k: ("" if v is None else v) for k, v in rec.items()}


# unix seconds a log's times may take: 1970 .. the end of year 9999 (what dates can show; past it, a
# millisecond log read as seconds, or garbage, failed later as an OSError traceback in `genre data stats`)
MAX_UNIX_TIME = 253402300799


def _time_range_error(v, seconds: float, fmt: str, where: str) -> DataError:
    """The error for a time ``v`` (as written) that is ``seconds`` after 1970, outside the range."""
    if seconds != seconds:  # NaN
        return DataError(f"{where}: time {v!r} is not {_time_words(fmt)}")
    hint = ""
    if fmt == "unix" and 0 <= seconds / 1000 <= MAX_UNIX_TIME:
        hint = '; it looks like milliseconds: set time_format = "unix_ms" under [interactions]'
    return DataError(f"{where}: time {v!r} is outside unix seconds 0..{MAX_UNIX_TIME} (1970 to 9999){hint}")


def _parse_time(v, fmt: str, path: Path, lineno: int) -> int:
    try:
        if isinstance(v, _dt.date):  # a Parquet timestamp or date cell: the instant it holds (naive = UTC)
            dt = v if isinstance(v, _dt.datetime) else _dt.datetime.combine(v, _dt.time())
            t = (dt if dt.tzinfo else dt.replace(tzinfo=_dt.timezone.utc)).timestamp()
        elif fmt == "iso" or "%" in fmt:
            text = str(v).strip()
            dt = (_dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if fmt == "iso"
                  else _dt.datetime.strptime(text, fmt))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=_dt.timezone.utc)
            t = dt.timestamp()
        else:
            t = float(v) / (1000 if fmt == "unix_ms" else 1)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{path}:{lineno}: time {v!r} is not {_time_words(fmt)}{_time_hint(v, fmt)}") from None
    if not 0 <= t <= MAX_UNIX_TIME:  # also NaN
        raise _time_range_error(v, t, fmt, f"{path}:{lineno}")
    return int(t)


def _format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    return {".jsonl": "jsonl", ".json": "jsonl", ".tsv": "tsv", ".parquet": "parquet"}.get(path.suffix.lower(), "csv")


def _arrow_seconds(col, time_format: str) -> np.ndarray:
    """Unix seconds (float64, NaN where empty) of an Arrow time column: a timestamp or date column as it says
    (Parquet written from pandas datetimes; a naive one is UTC, as naive ISO times are), ISO text
    (``time_format = "iso"``: naive or all with an offset), else numbers in ``time_format``'s unit. Raises
    ArrowInvalid for values it cannot read (the CSV path then reads row by row and names the line). A
    Parquet timestamp column failed with "Unsupported cast from timestamp[us] to double", and ISO times were
    never read column-wise, so a Parquet log with them could not be read at all."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    kind = col.type
    if pa.types.is_date(kind):
        col, kind = pc.cast(col, pa.timestamp("s")), pa.timestamp("s")
    if (pa.types.is_string(kind) or pa.types.is_large_string(kind)) and "%" in time_format:
        col, kind = pc.strptime(col, format=time_format, unit="s"), pa.timestamp("s")  # naive = UTC, as the row path
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        if time_format != "iso":
            col, kind = pc.cast(col, pa.float64()), pa.float64()
        else:
            for tz in (None, "UTC"):  # naive times, then times with a zone ("Z", "+02:00")
                try:
                    col, kind = pc.cast(col, pa.timestamp("us", tz=tz)), pa.timestamp("us", tz=tz)
                    break
                except pa.ArrowInvalid:
                    continue
            else:
                raise pa.ArrowInvalid("times that are not ISO 8601, or some with a zone and some without")
    if pa.types.is_timestamp(kind):
        per_second = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[kind.unit]
        return pc.cast(col, pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64) / per_second
    tm = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
    return tm / 1000.0 if time_format == "unix_ms" else tm  # once: tens of millions of rows


def _columnar_interactions(path: Path, xc: "GenericInteractions", items: Items, threshold: float | None,
                           required: bool = False):
    """The interaction log read column-wise with pyarrow (multi-threaded CSV/TSV reader, or Parquet),
    ids mapped with vectorised lookups instead of a Python tuple per row: ``(interactions, users,
    report)``, the same as the row-by-row path gives (users numbered in order of first appearance, rows
    with unknown items skipped and reported). ``None`` where this path does not apply (no pyarrow, JSON
    lines) or the file has a problem: the row-by-row path then reads it and names the line."""
    fmt = _format(path, xc.format)
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pacsv
    except ImportError:
        if fmt == "parquet" or required:
            raise DataError(f"{path}: reading it column-wise needs pyarrow (pip install 'pyarrow>=14', in the "
                            "'scale' extra)") from None
        return None
    if fmt == "jsonl":
        if required:
            raise DataError(f"{path}: the columnar reader takes CSV, TSV or Parquet")
        return None
    cols = [c for c in (xc.user, xc.item, xc.time, xc.rating, xc.label) if c]
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            _parquet_has(path, pq.ParquetFile(path), cols)
            t = pq.read_table(path, columns=cols)
        else:
            delim = _delimiter(path, fmt, xc.delimiter, xc.encoding, tuple(cols), "interactions")
            kinds = {xc.user: pa.string(), xc.item: pa.string(),
                     xc.time: pa.float64() if xc.time_format in ("unix", "unix_ms") else pa.string()}
            # a file not separated by commas may write ratings with a decimal comma ('3,5'): read as text
            kinds.update({xc.rating: pa.float64() if delim == "," else pa.string()} if xc.rating else {})
            kinds.update({xc.label: pa.string()} if xc.label else {})
            with open(path, encoding=xc.encoding, newline="") as fh:  # names as the row reader reads them
                names = [h.strip().lstrip("\ufeff") for h in next(csv.reader([fh.readline()], delimiter=delim), [])]
            t = pacsv.read_csv(path, read_options=pacsv.ReadOptions(encoding=xc.encoding, column_names=names,
                                                                     skip_rows=1),
                               parse_options=pacsv.ParseOptions(delimiter=delim),
                               convert_options=pacsv.ConvertOptions(column_types=kinds, include_columns=cols,
                                                                    strings_can_be_null=False))
        uid = pc.utf8_trim_whitespace(t.column(xc.user).cast(pa.string()).combine_chunks())
        iid = pc.utf8_trim_whitespace(t.column(xc.item).cast(pa.string()).combine_chunks())
        secs_all = _arrow_seconds(t.column(xc.time), xc.time_format)
        if pc.any(pc.is_null(uid)).as_py() or pc.any(pc.is_null(iid)).as_py() or np.isnan(secs_all).any():
            raise pa.ArrowInvalid("empty user, item or time values")
        if ((secs_all < 0) | (secs_all > MAX_UNIX_TIME)).any():
            raise pa.ArrowInvalid("times outside unix seconds 0..9999-12-31")  # the row path names the line
        rating = None
        if xc.rating:
            rcol = t.column(xc.rating)
            if pa.types.is_string(rcol.type) or pa.types.is_large_string(rcol.type):
                rcol = pc.replace_substring(rcol, ",", ".", max_replacements=1)
            rating = rcol.cast(pa.float64()).to_numpy(zero_copy_only=False)
        if rating is not None and fmt != "parquet" and np.isnan(rating).any():
            raise pa.ArrowInvalid("empty rating values")  # the row path names the line
    except (pa.ArrowException, ValueError, UnicodeDecodeError) as exc:
        if fmt == "parquet" or required:
            raise DataError(f"{path}: {exc}") from None
        log.info("%s: the columnar reader stopped (%s); reading row by row to name the line", path, exc)
        return None
    idx = pc.index_in(iid, value_set=pa.array(items.ids, pa.string()))
    known = pc.is_valid(idx).to_numpy(zero_copy_only=False)
    report = {}
    if not known.all():
        counts = pc.value_counts(iid.filter(pa.array(~known)))
        missing = dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))
        report = {"rows_with_unknown_items": int(sum(missing.values())), "unknown_item_ids": len(missing),
                  "unknown_item_examples": sorted(missing)[:5]}
        log.warning("%d interaction rows reference %d item ids missing from the item file (skipped)",
                    report["rows_with_unknown_items"], report["unknown_item_ids"])
    keep = pa.array(known)
    users = pc.dictionary_encode(uid.filter(keep))  # codes in order of first appearance, as the row path
    u = users.indices.to_numpy(zero_copy_only=False)
    i = idx.filter(keep).to_numpy(zero_copy_only=False)
    secs = np.trunc(secs_all[known]).astype(np.int64)
    r = rating[known] if rating is not None else np.full(len(u), np.nan)
    if xc.label:
        lab = pc.utf8_lower(pc.utf8_trim_whitespace(t.column(xc.label).cast(pa.string()).combine_chunks().filter(keep)))
        yes = [v for v in pc.unique(lab).to_pylist() if _positive_label(v)]  # a few distinct values: decided once
        labels = pc.is_in(lab, value_set=pa.array(yes, pa.string())).to_numpy(zero_copy_only=False).astype(np.int8)
    elif threshold is None or np.all(np.isnan(r)):
        labels = np.ones(len(u), np.int8)
    else:
        labels = (np.nan_to_num(r, nan=threshold) >= threshold).astype(np.int8)
    return Interactions(u, i, secs, r, labels).sorted(), users.dictionary.to_pylist(), report


def load_generic(config_path: Path, threshold: float | None = None, columnar: bool | None = None) -> Dataset:
    """Any CSV/TSV/JSONL/Parquet interactions + items, mapped by a TOML config (see GenericConfig).

    ``columnar``: None (default) reads the interaction log column-wise with pyarrow where it can (logs of
    tens of millions of rows), else row by row; True requires the columnar reader; False never uses it."""
    config_path = Path(config_path)
    conf = cfg.load(GenericConfig, config_path)
    base = config_path.parent
    ic = conf.items
    ipath = base / ic.path
    # every column [items] maps must be there (a misspelt year or categories column read as empty for every
    # item, silently); JSON lines may leave a key out of some records, so there it must be in at least one
    mapped = tuple(dict.fromkeys(c for c in (ic.id, ic.title, ic.categories, ic.year, *ic.text) if c))
    sparse = _format(ipath, ic.format) == "jsonl"
    seen: set[str] = set()
    ids, titles, cats, years = [], [], [], []
    unread_years, first_unread = 0, ""
    texts: dict[str, list[str]] = {t: [] for t in ic.text}
    for lineno, rec in _records(ipath, ic.format, ic.encoding, (ic.id,) if sparse else mapped, ic.delimiter,
                                "items"):
        if sparse:
            seen.update(rec)
        ids.append(str(rec[ic.id]).strip())
        titles.append(str(rec.get(ic.title, "")) if ic.title else "")
        for t in ic.text:
            v = rec.get(t, "")
            # a list (JSON lines: tags, keywords) reads as its elements, not as Python's repr with brackets
            texts[t].append(", ".join(str(x) for x in v if x is not None and str(x).strip()) if isinstance(v, list)
                            else str(v))
        cats.append(_categories(rec.get(ic.categories, ""), ic.category_sep,
                                lambda: f"{ipath}:{lineno}: column {ic.categories!r}") if ic.categories else ())
        y = _year(rec.get(ic.year, "")) if ic.year else 0
        if y is None:
            unread_years += 1
            if unread_years == 1:
                first_unread = f"{rec.get(ic.year)!r} ({ipath}:{lineno})"
            y = 0
        years.append(y)
    missing = [c for c in mapped if c not in seen] if sparse and ids else []
    if missing:
        raise DataError(f"{ipath}: no record has the key {missing[0]!r}, which [items] maps (keys seen: "
                        f"{', '.join(sorted(seen))})")
    if unread_years:
        log.warning("%s: %d of %d items have a %r value that is not a year (first: %s); read as unknown",
                    ipath, unread_years, len(ids), ic.year, first_unread)
    _warn_other_separator(cats, ic, ipath)
    try:
        items = Items(ids, titles, cats, np.array(years), texts)
    except ValueError as exc:
        raise DataError(f"{ipath}: {exc}") from None
    thr = conf.threshold if threshold is None else threshold
    xc = conf.interactions
    xpath = base / xc.path
    if columnar is not False:
        got = _columnar_interactions(_need(xpath), xc, items, thr if xc.rating else None, required=columnar is True)
        if got is not None:
            inter, users, report = got
            return Dataset(conf.name, items, users, inter, None, report)
    b = _Builder(items, thr if conf.interactions.rating else None)
    labels = [] if xc.label else None
    req = tuple(c for c in (xc.user, xc.item, xc.time, xc.rating, xc.label) if c)  # every mapped column
    for lineno, rec in _records(xpath, xc.format, xc.encoding, req, xc.delimiter, "interactions"):
        r = _to_number(_decimal_comma(str(rec[xc.rating])), xpath, lineno, "rating") if xc.rating else float("nan")
        before = len(b.rows)
        b.add(str(rec[xc.user]).strip(), str(rec[xc.item]).strip(),
              _parse_time(rec[xc.time], xc.time_format, xpath, lineno), r)
        if labels is not None and len(b.rows) > before:
            labels.append(1 if _positive_label(str(rec[xc.label]).strip().lower()) else 0)
    inter = b.interactions(labels=np.array(labels, np.int8) if labels is not None else None)
    return Dataset(conf.name, items, list(b.users), inter, None, b.report())


# --------------------------------------------------------------------------- registry
LOADERS: dict[str, Callable[..., Dataset]] = {
    "ml-100k": load_ml100k_original,
    "recbole": load_recbole_atomic,
    "ml-1m": load_ml1m,
    "ml-latest": load_ml_latest,
    "mind": load_mind,
    "generic": load_generic,
}


def detect_format(path: Path) -> str:
    """Which loader reads ``path`` (a folder, or a generic TOML config file)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".toml":
        return "generic"
    if path.is_file():
        # an interaction log given directly ("genre data stats events.csv") was said not to exist
        raise DataError(f"{path}: a file, not a data folder or a .toml data config: describe your interaction log "
                        "and item file in a TOML ([interactions] path = ..., [items] path = ...; see README, "
                        "'Your own data') and give that")
    if not path.is_dir():
        raise DataError(f"{path}: no such data folder (or generic .toml config)")
    if (path / "u.data").is_file():
        return "ml-100k"
    if any(path.glob("*.inter")):
        return "recbole"
    if (path / "ratings.dat").is_file():
        return "ml-1m"
    if (path / "ratings.csv").is_file():
        return "ml-latest"
    if (path / "behaviors.tsv").is_file():
        return "mind"
    raise DataError(
        f"{path}: cannot tell the data format; expected one of u.data (ml-100k), *.inter (RecBole), "
        "ratings.dat (ml-1m), ratings.csv (ml-latest), behaviors.tsv (MIND), or a generic .toml config"
    )


def load_dataset(path: str | Path, fmt: str = "auto", threshold: float | None = None) -> Dataset:
    """Load any supported data set; ``fmt`` is a key of :data:`LOADERS` or ``auto``. Ratings >= ``threshold``
    are positives; None: the data set's own (a generic TOML's ``threshold``, else 4.0). (A default of 4.0
    here once overrode every generic TOML's threshold: setting it changed nothing.)"""
    path = Path(path)
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in LOADERS:
        raise DataError(f"unknown data format {fmt!r}; choose one of: auto, {', '.join(LOADERS)}")
    if fmt == "mind":
        return LOADERS[fmt](path)
    if threshold is None and fmt != "generic":
        threshold = DEFAULT_THRESHOLD
    return LOADERS[fmt](path, threshold=threshold)
