"""The normalized schema every loader produces."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Items:
    """The item catalog. Index ``i`` in every array is the internal item index."""

    ids: list[str]
    title: list[str]
    categories: list[tuple[str, ...]]
    year: np.ndarray  # int32, 0 when unknown
    text: dict[str, list[str]] = field(default_factory=dict)  # extra text fields (tags, abstract, ...)

    def __post_init__(self):
        n = len(self.ids)
        self.year = np.asarray(self.year, dtype=np.int32)
        for name, col in [("title", self.title), ("categories", self.categories), ("year", self.year)]:
            if len(col) != n:
                raise ValueError(f"items.{name} has {len(col)} rows, ids has {n}")
        # an item's category once, in first-seen order: "Rock|Rock" (or tags repeated by their users) showed as
        # [Rock, Rock] and counted twice where categories are features
        if any(len(set(cs)) != len(cs) for cs in self.categories):
            self.categories = [cs if len(set(cs)) == len(cs) else tuple(dict.fromkeys(cs)) for cs in self.categories]
        for name, col in self.text.items():
            if len(col) != n:
                raise ValueError(f"items.text[{name!r}] has {len(col)} rows, ids has {n}")
        self._index = {iid: i for i, iid in enumerate(self.ids)}
        if len(self._index) != n:
            from genre_edge.catalog import repeated

            raise ValueError(f"duplicate item ids: {repeated(self.ids)} (each item once in the item file)")

    def __len__(self) -> int:
        return len(self.ids)

    def category_counts(self):
        """A Counter of how many items have each category."""
        from collections import Counter

        return Counter(c for cs in self.categories for c in cs)

    def index(self, item_id: str) -> int | None:
        return self._index.get(str(item_id))

    def fields(self, i: int) -> dict[str, str]:
        """Template fields of item ``i`` (used by the item text template)."""
        out = {
            "id": self.ids[i],
            "title": self.title[i],
            "year": str(int(self.year[i])) if self.year[i] else "",
            "genres": ", ".join(self.categories[i]),
            "categories": ", ".join(self.categories[i]),
            # as the device fills them for an item it adds (runtime catalog.item_text); a loader's own text
            # columns of these names (MIND's) take precedence below
            "category": self.categories[i][0] if self.categories[i] else "",
            "subcategory": self.categories[i][1] if len(self.categories[i]) > 1 else "",
        }
        for k, col in self.text.items():
            out[k] = col[i]
        return out


@dataclass
class Interactions:
    """Interaction log, one row per event, sorted by time."""

    user: np.ndarray  # int32 internal user index
    item: np.ndarray  # int32 internal item index
    time: np.ndarray  # int64 unix seconds
    rating: np.ndarray  # float32, NaN when the data has none
    label: np.ndarray  # int8: 1 positive, 0 negative (rating under threshold)

    def __post_init__(self):
        self.user = np.asarray(self.user, dtype=np.int32)
        self.item = np.asarray(self.item, dtype=np.int32)
        self.time = np.asarray(self.time, dtype=np.int64)
        self.rating = np.asarray(self.rating, dtype=np.float32)
        self.label = np.asarray(self.label, dtype=np.int8)
        n = len(self.user)
        for name in ("item", "time", "rating", "label"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"interactions.{name} length differs from user")

    def __len__(self) -> int:
        return len(self.user)

    def take(self, mask_or_idx) -> "Interactions":
        return Interactions(*(getattr(self, f.name)[mask_or_idx] for f in dataclasses.fields(self)))

    def sorted(self) -> "Interactions":
        order = np.lexsort((self.item, self.user, self.time))
        return self.take(order)


@dataclass
class Impression:
    """One impression log entry (MIND-style): what was shown, what was clicked."""

    impression_id: str
    user: int
    time: int
    history: np.ndarray  # int32 item indices clicked before
    items: np.ndarray  # int32 item indices shown
    labels: np.ndarray  # int8, 1 clicked


@dataclass
class Dataset:
    name: str
    items: Items
    users: list[str]
    interactions: Interactions
    impressions: list[Impression] | None = None
    report: dict = field(default_factory=dict)  # skipped rows, missing items, ...

    @property
    def n_users(self) -> int:
        return len(self.users)

    def impression_list(self) -> list[Impression]:
        """The impressions: MIND's impression logs, or, in a log of click labels (no ratings), each user's rows
        at one time that hold a click and a non-click (shown together, one clicked: what the README's label
        column promises). Ids count from 1 in time order. Built on each call."""
        if self.impressions:
            return self.impressions
        inter = self.interactions
        if not len(inter) or not np.isnan(inter.rating).all() or inter.label.all():
            return []  # ratings (a low rating is not a skipped item), or no non-clicks at all
        key = inter.user.astype(np.int64) * (1 << 33) + inter.time  # rows are in time order: groups are too
        order = np.argsort(key, kind="stable")
        k, lab = key[order], inter.label[order].astype(np.int64)
        starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        size = np.diff(np.r_[starts, len(k)])
        clicks = np.add.reduceat(lab, starts)
        keep = np.flatnonzero((clicks > 0) & (clicks < size))
        keep = keep[np.lexsort((inter.user[order[starts[keep]]], inter.time[order[starts[keep]]]))]
        out = []
        for n, g in enumerate(keep, 1):
            rows = order[starts[g]: starts[g] + size[g]]
            out.append(Impression(str(n), int(inter.user[rows[0]]), int(inter.time[rows[0]]), np.zeros(0, np.int32),
                                  inter.item[rows].astype(np.int32), inter.label[rows].astype(np.int8)))
        return out

    def subset_items(self, keep: np.ndarray, name: str | None = None) -> "Dataset":
        """The data set restricted to the items where ``keep`` is true (a domain: e.g. some genres).

        Items are re-indexed; users are kept (a user without events in the domain is simply absent
        from its training and evaluation); impression logs are dropped (a shown list would lose items).
        """
        keep = np.asarray(keep, bool)
        if keep.shape != (self.n_items,):
            raise ValueError(f"keep mask has shape {keep.shape}, expected ({self.n_items},)")
        new = np.full(self.n_items, -1, np.int64)
        new[keep] = np.arange(int(keep.sum()))
        idx = np.flatnonzero(keep)
        it = self.items
        items = Items([it.ids[i] for i in idx], [it.title[i] for i in idx], [it.categories[i] for i in idx],
                      it.year[idx], {k: [col[i] for i in idx] for k, col in it.text.items()})
        inter = self.interactions.take(keep[self.interactions.item])
        inter.item = new[inter.item].astype(np.int32)
        return Dataset(name or self.name, items, list(self.users), inter, None,
                       dict(self.report, subset={"items": int(keep.sum()), "of": int(self.n_items)}))

    @property
    def n_items(self) -> int:
        return len(self.items)

    def stats(self) -> dict:
        inter = self.interactions
        n = len(inter)
        has_rating = bool(n and not np.all(np.isnan(inter.rating)))
        text_cov = {
            "title": _coverage(self.items.title),
            "categories": float(np.mean([bool(c) for c in self.items.categories])) if self.n_items else 0.0,
            "year": float(np.mean(self.items.year > 0)) if self.n_items else 0.0,
        }
        for k, col in self.items.text.items():
            text_cov[k] = _coverage(col)
        import datetime as _dt

        def iso(t):
            return _dt.datetime.fromtimestamp(int(t), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")

        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": n,
            "positives": int(inter.label.sum()),
            "density": n / max(1, self.n_users * self.n_items),
            "time_min": iso(inter.time.min()) if n else None,
            "time_max": iso(inter.time.max()) if n else None,
            "has_rating": has_rating,
            "impressions": len(self.impression_list()),
            "text_coverage": text_cov,
            "categories": _category_summary(self.items.category_counts()),
            "report": self.report,
        }


def _category_summary(counts, top: int = 8) -> dict:
    """How many distinct categories the items have and the ``top`` most common (name, items): what shows a
    category column read wrongly (one "category" per item, or a list's brackets in the names) at a glance."""
    return {"distinct": len(counts), "most_common": [[c, n] for c, n in counts.most_common(top)]}


def _coverage(col) -> float:
    return float(np.mean([bool(s and s.strip()) for s in col])) if len(col) else 0.0
