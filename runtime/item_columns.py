"""Compact per-item metadata for large catalogs: ids, titles and categories without a Python object per item.

A list of 10M Python strings, a tuple of categories per item and a ``dict`` from id to row cost
~190 bytes an item (~1.9 GB of a 10M-item catalog's serving memory, measured in
``benchmarks/results/ann-scale-*.md``). Here strings live in one UTF-8 buffer with int64 offsets
(~1 byte a character + 4 bytes a row), categories as an int32 code into the distinct category
tuples, and the id -> row lookup as sorted 64-bit string hashes with their rows (12 bytes a row,
each hit verified against the stored id). Rows changed or appended on the device (few) live in
small Python overlays. Reads return ordinary ``str`` / ``tuple`` values, so callers index, slice
and iterate these columns as they would lists.
"""
from __future__ import annotations

import operator
import re
import unicodedata
from typing import Iterable, Iterator

import numpy as np

_hash = hash  # a name the tests replace with a colliding hash

def fold(text: str) -> str:
    """``text`` as title search compares it: casefolded and without accents ("Amélie" and "amelie" match,
    "Café" and "cafe"). ASCII text, the usual case, costs one casefold."""
    t = text.casefold()
    if t.isascii():
        return t
    return "".join(c for c in unicodedata.normalize("NFKD", t) if not unicodedata.combining(c))


def push(arr: np.ndarray, room: np.ndarray | None, value) -> tuple[np.ndarray, np.ndarray]:
    """(``arr`` with ``value`` appended along axis 0, the buffer it is a view of), in amortised O(1):
    ``arr`` is kept as the front of a buffer with 1/8 spare rows, so a device adding items one by one to
    a catalog of millions copies its per-item arrays once per growth, not on every add (np.append: 28 ms
    an add at 1M items). ``room`` is the buffer the last call returned (None at first): an array that is
    not a view of it (another owner's memory) is copied, never written past its end."""
    n = len(arr)
    if room is None or arr.base is not room or len(room) <= n:
        room = np.empty((n + n // 8 + 64,) + arr.shape[1:], arr.dtype)
        room[:n] = arr
    room[n] = value
    return room[: n + 1], room


class StrColumn:
    """A list-like column of strings packed in one UTF-8 buffer (set and append go to overlays)."""

    def __init__(self, values: Iterable[str]):
        enc = [s.encode("utf-8", "surrogatepass") for s in values]
        self._n = len(enc)
        ends = np.cumsum(np.fromiter(map(len, enc), np.int64, self._n))
        # 4-byte offsets while the buffer is under 4 GiB (80 MB less at 10M rows)
        width = np.uint32 if not len(ends) or ends[-1] < 2**32 else np.int64
        self._offsets = np.zeros(self._n + 1, width)
        self._offsets[1:] = ends
        self._blob = b"".join(enc)
        self._offs = memoryview(self._offsets)  # Python ints on indexing (a numpy scalar costs more per read)
        self._set: dict[int, str] = {}  # rows of the buffer set since (on-device updates)
        self._tail: list[str] = []  # rows appended since
        self._fold = None  # (casefolded buffer, row starts in it): built by the first find()

    def __len__(self) -> int:
        return self._n + len(self._tail)

    def _row(self, i) -> int:
        i = operator.index(i)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"row {i} out of range for {n} items")
        return i

    def __getitem__(self, i):
        if type(i) is not int:
            if isinstance(i, slice):
                return [self[j] for j in range(*i.indices(len(self)))]
            i = operator.index(i)
        if 0 <= i < self._n and i not in self._set:  # the common case first: a row of the buffer
            o = self._offs
            return self._blob[o[i]:o[i + 1]].decode("utf-8", "surrogatepass")
        i = self._row(i)
        if i >= self._n:
            return self._tail[i - self._n]
        s = self._set.get(i)
        return s if s is not None else self._blob[self._offs[i]:self._offs[i + 1]].decode("utf-8", "surrogatepass")

    def __setitem__(self, i, value: str) -> None:
        i = self._row(i)
        if i >= self._n:
            self._tail[i - self._n] = value
        else:
            self._set[i] = value

    def append(self, value: str) -> None:
        self._tail.append(value)

    def __iter__(self) -> Iterator[str]:
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other):
        return list(self) == list(other) if isinstance(other, (list, tuple, StrColumn)) else NotImplemented

    __hash__ = None

    def find(self, folded: str) -> tuple[np.ndarray, np.ndarray]:
        """Rows whose :func:`fold`-ed value starts with ``folded`` and rows that contain it later (sorted,
        disjoint): what ``fold(value).find`` per row gives, without a Python step per row. The first call
        folds the buffer once into a second one (rows joined by NUL, which a pattern without NUL cannot
        span); UTF-8 is self-synchronising, so a byte match is a character match."""
        if self._fold is None:
            parts = [fold(self._blob[a:b].decode("utf-8", "surrogatepass")).encode("utf-8", "surrogatepass")
                     for a, b in zip(self._offs[:-1].tolist(), self._offs[1:].tolist())]
            starts = np.zeros(self._n + 1, np.int64)
            np.cumsum(np.fromiter((len(x) + 1 for x in parts), np.int64, self._n), out=starts[1:])
            self._fold = (b"\x00".join(parts) + b"\x00", starts)
        blob, starts = self._fold
        pat = folded.encode("utf-8", "surrogatepass")
        if b"\x00" in pat:
            raise ValueError("find: the text may not hold NUL (the row separator)")
        if not pat:  # the empty text: every row, at 0
            hits = starts[:-1]
        else:
            hits = np.fromiter((m.start() for m in re.finditer(re.escape(pat), blob)), np.int64)
        rows = np.searchsorted(starts, hits, side="right") - 1
        first = np.ones(len(rows), bool)
        first[1:] = rows[1:] != rows[:-1]  # the leftmost match of each row decides, as str.find does
        rows, at0 = rows[first], hits[first] == starts[rows[first]]
        if self._set:  # rows set since: their buffer value no longer holds
            keep = ~np.isin(rows, np.fromiter(self._set, np.int64, len(self._set)))
            rows, at0 = rows[keep], at0[keep]
        extra_s, extra_i = [], []
        for i, v in [*self._set.items(), *((self._n + j, v) for j, v in enumerate(self._tail))]:
            at = fold(v).find(folded)
            (extra_s if at == 0 else extra_i if at > 0 else []).append(i)
        s = np.union1d(rows[at0], np.asarray(extra_s, np.int64))
        return s.astype(np.int64), np.union1d(rows[~at0], np.asarray(extra_i, np.int64)).astype(np.int64)


class TupleColumn:
    """A list-like column of tuples of strings (an item's categories), stored as one int32 code per
    row into the distinct tuples: catalogs reuse few category combinations."""

    def __init__(self, values: Iterable[Iterable[str]]):
        self.combos: list[tuple[str, ...]] = []
        self._code_of: dict[tuple[str, ...], int] = {}
        self.codes = np.fromiter((self.code(v) for v in values), np.int32)
        self._room = None  # the buffer appended codes grow in (push)

    def code(self, value: Iterable[str]) -> int:
        """The code of ``value`` (a new code for a combination not seen before)."""
        t = tuple(value)
        c = self._code_of.get(t)
        if c is None:
            c = self._code_of[t] = len(self.combos)
            self.combos.append(t)
        return c

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.combos[c] for c in self.codes[i].tolist()]
        return self.combos[self.codes[operator.index(i)]]

    def __setitem__(self, i, value: Iterable[str]) -> None:
        self.codes[operator.index(i)] = self.code(value)

    def append(self, value: Iterable[str]) -> None:
        self.codes, self._room = push(self.codes, self._room, np.int32(self.code(value)))

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        combos = self.combos
        for c in self.codes.tolist():
            yield combos[c]

    def __eq__(self, other):
        return list(self) == list(other) if isinstance(other, (list, tuple, TupleColumn)) else NotImplemented

    __hash__ = None


class IdIndex:
    """id -> row over a :class:`StrColumn` of ids, dict-like (``get``, ``in``, ``[]``, set, ``del``).

    Sorted 64-bit hashes of the ids with their rows; a hit is verified against the stored id, so a hash
    collision never maps an unknown id to a row. Python's ``hash`` is salted per process, which is
    fine: the index is rebuilt at every load and never written. Entries set or deleted after
    construction go to a small overlay."""

    def __init__(self, ids: StrColumn):
        self._ids = ids
        h = np.fromiter((_hash(s) for s in ids), np.int64, len(ids))
        order = np.argsort(h, kind="stable")
        self._h = h[order]
        self._rows = order.astype(np.int32) if len(order) < 2**31 else order
        self._extra: dict[str, int] = {}  # set after construction
        self._dead: set[int] = set()  # rows whose construction-time entry was deleted or replaced

    def _base(self, key: str, hk: int, lo: int) -> int | None:
        h, rows, n = self._h, self._rows, len(self._h)
        while lo < n and h[lo] == hk:
            r = int(rows[lo])
            if r not in self._dead and self._ids[r] == key:
                return r
            lo += 1
        return None

    def get(self, key, default=None):
        if not isinstance(key, str):
            return default
        r = self._extra.get(key)
        if r is not None:
            return r
        hk = _hash(key)
        r = self._base(key, hk, int(np.searchsorted(self._h, hk)))
        return default if r is None else r

    def get_many(self, keys: list) -> list[int | None]:
        """Rows of ``keys`` (None for unknown ones): one vectorised search and gather for the list (a
        request's history), then one bytes comparison per key."""
        n = len(keys)
        if not n:
            return []
        hs = np.fromiter([_hash(k) if isinstance(k, str) else 0 for k in keys], np.int64, n)
        at = np.searchsorted(self._h, hs)
        if not len(self._h):
            return [self._extra.get(k) if isinstance(k, str) else None for k in keys]
        atc = np.minimum(at, len(self._h) - 1)
        rows = self._rows[atc]
        hit = self._h[atc] == hs
        offsets, blob, changed = self._ids._offsets, self._ids._blob, self._ids._set
        out = []
        for k, h, r, a, b, lo, hk in zip(keys, hit.tolist(), rows.tolist(), offsets[rows].tolist(),
                                         offsets[rows + 1].tolist(), at.tolist(), hs.tolist()):
            if not isinstance(k, str):
                out.append(None)
            elif k in self._extra:
                out.append(self._extra[k])
            elif not h:
                out.append(None)
            elif r not in self._dead and r not in changed and blob[a:b] == k.encode("utf-8", "surrogatepass"):
                out.append(r)
            else:  # a hash shared by several ids, or a row changed since: the careful scan
                out.append(self._base(k, hk, lo))
        return out

    def __contains__(self, key) -> bool:
        return self.get(key) is not None

    def __getitem__(self, key) -> int:
        r = self.get(key)
        if r is None:
            raise KeyError(key)
        return r

    def __setitem__(self, key: str, row: int) -> None:
        old = self.get(key)
        if old == row:
            return
        if old is not None:
            del self[key]
        self._extra[key] = int(row)

    def __delitem__(self, key: str) -> None:
        if key in self._extra:
            del self._extra[key]
            return
        hk = _hash(key)
        r = self._base(key, hk, int(np.searchsorted(self._h, hk)))
        if r is None:
            raise KeyError(key)
        self._dead.add(r)

    def __len__(self) -> int:
        return len(self._h) - len(self._dead) + len(self._extra)

    def __iter__(self) -> Iterator[str]:
        """The ids, as iterating a dict gives its keys."""
        for r in range(len(self._h)):
            if r not in self._dead:
                yield self._ids[r]
        yield from list(self._extra)

    def items(self) -> Iterator[tuple[str, int]]:
        for k in self:
            yield k, self[k]
