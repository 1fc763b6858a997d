"""Evaluation splits: per-user temporal holdout, global time split, cold-item split.

All splits are deterministic. Implicit feedback comes from the rating threshold applied by the
loader (``label``); held-out truth is the positives only, while every training interaction
(positive or not) counts as "seen" and is excluded from the ranking.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np

from genre_edge.errors import DataError

from genre_edge import config as cfg
from .data.schema import Dataset, Interactions
from genre_edge.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitConfig:
    """How to split. ``cold_item`` also holds out a per-user temporal test set of warm items."""

    kind: str = cfg.choice("cold_item", ("user_holdout", "global_time", "cold_item"))
    test_frac: float = cfg.bounded(0.1, 0.0, 0.9, "share of each user's events held out as test")
    test_last_n: int = cfg.bounded(0, 0, None, "if > 0, hold out this many last events instead of test_frac")
    valid_frac: float = cfg.bounded(0.1, 0.0, 0.9)
    valid_last_n: int = cfg.bounded(0, 0, None)
    min_train: int = cfg.bounded(3, 1, None, "users with fewer events stay wholly in train")
    test_quantile: float = cfg.bounded(0.9, 0.01, 0.99, "global_time: time quantile where test starts")
    valid_quantile: float = cfg.bounded(0.8, 0.01, 0.99, "global_time: where validation starts")
    cold_quantile: float = cfg.bounded(0.5, 0.01, 0.99, "cold_item: items first seen after this time quantile are cold")
    cold_valid_quantile: float = cfg.bounded(
        0.4, 0.0, 0.99, "cold_item: items first seen in [this, cold_quantile) are held out of training as a "
        "cold *validation* set (model selection for unseen items without touching the cold test); 0 = none")
    cold_by: str = cfg.choice("first_seen", ("first_seen", "random"),
                              "cold_item: which items are new: those first seen late (first_seen: cold_quantile and "
                              "cold_valid_quantile say when), or a random fold of the items (random: cold_folds, "
                              "cold_fold), so that cold results can be averaged over folds instead of resting on "
                              "the few films that happen to appear late")
    cold_folds: int = cfg.bounded(10, 3, None, "cold_by = random: the items are dealt into this many folds")
    cold_fold: int = cfg.bounded(0, 0, None, "cold_by = random: the fold held out as cold test; the next fold "
                                 "(cyclically) is the cold validation set unless cold_valid_quantile = 0")
    cold_seed: int = cfg.bounded(0, 0, cfg.MAX_SEED, "cold_by = random: the seed of the items' deal into folds")

    def validate(self):
        if self.kind == "global_time" and self.valid_quantile >= self.test_quantile:
            raise ConfigError(f"valid_quantile ({self.valid_quantile}) must be below test_quantile ({self.test_quantile})")
        if self.kind == "cold_item" and self.cold_valid_quantile >= self.cold_quantile:
            raise ConfigError(f"cold_valid_quantile ({self.cold_valid_quantile}) must be below cold_quantile "
                              f"({self.cold_quantile}), or 0 for no cold validation set")
        if self.kind == "cold_item" and self.cold_by == "random" and self.cold_fold >= self.cold_folds:
            raise ConfigError(f"cold_fold ({self.cold_fold}) must be below cold_folds ({self.cold_folds}): "
                              f"folds are numbered 0 to {self.cold_folds - 1}")


@dataclass
class Split:
    config: SplitConfig
    n_users: int
    n_items: int
    train: Interactions
    valid: Interactions
    test: Interactions
    cold_items: np.ndarray  # int32, empty unless kind == cold_item
    cold_test: Interactions  # events on cold items (empty unless cold_item)
    cold_valid_items: np.ndarray  # int32: never trained on, for model selection on unseen items
    cold_valid: Interactions  # events on cold-validation items
    # items taken out of every candidate set and truth list (robustness checks: without_top_items)
    excluded: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    # seen() per include_valid: every evaluation reads it, and at a million users it takes seconds to build
    # (init=False: a replace()d copy starts with its own, empty memo)
    _memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def user_items(self, inter: Interactions, positives_only=True, column: str = "item") -> list[np.ndarray]:
        """Per-user arrays (time order) of ``inter``'s ``column`` (the items; ``"time"``: their times)."""
        if positives_only:
            inter = inter.take(inter.label == 1)
        order = np.lexsort((inter.time, inter.user))
        u, i = inter.user[order], getattr(inter, column)[order]
        bounds = np.searchsorted(u, np.arange(self.n_users + 1))
        return [i[bounds[k] : bounds[k + 1]] for k in range(self.n_users)]

    def train_histories(self) -> list[np.ndarray]:
        return self.user_items(self.train, positives_only=True)

    def train_history_times(self) -> list[np.ndarray]:
        """The event times of :meth:`train_histories`, aligned with it (same order, same lengths)."""
        return self.user_items(self.train, positives_only=True, column="time")

    def histories(self, which: str, last: int = 0) -> list[np.ndarray]:
        """Model input (each user's positives, oldest first) when evaluating ``which``.

        ``valid`` and ``cold_valid``: the training positives. ``test`` and ``cold``: training +
        validation positives — a deployed recommender knows every event before the test period;
        no model is refit on them (all baselines and teachers get the same input).
        ``last`` > 0: only each user's ``last`` most recent of them, as a device that has seen a user
        for a short while would have (what the items seen before still exclude from the ranking is
        unchanged: :meth:`seen`).
        """
        if last < 0:
            raise ValueError(f"last must be >= 0 (0 = the whole history), not {last}")
        if which in ("valid", "cold_valid"):
            hist = self.train_histories()
        elif which in ("test", "cold"):
            # validation events come after each user's training events in every split kind
            tr, va = self.train_histories(), self.user_items(self.valid, positives_only=True)
            hist = [np.concatenate([a, b]) for a, b in zip(tr, va)]
        else:
            raise ValueError(f"which must be valid, test, cold or cold_valid, not {which!r}")
        return [h[-last:] for h in hist] if last else hist

    def held_out(self, which: str) -> Interactions:
        """The held-out events of ``which`` (valid, test, cold or cold_valid)."""
        inter = {"valid": self.valid, "test": self.test, "cold": self.cold_test, "cold_valid": self.cold_valid}.get(which)
        if inter is None:
            raise ValueError(f"which must be valid, test, cold or cold_valid, not {which!r}")
        return inter

    def request_times(self, which: str) -> np.ndarray:
        """Per user, when a recommendation for ``which`` is asked for: the time of the user's first held-out
        event there (float64; the last training event's time for users with none). What time-aware scores
        (trending popularity) are computed as of; they read only events before it."""
        inter = self.held_out(which)
        end = float(self.train.time.max()) if len(self.train) else 0.0
        out = np.full(self.n_users, np.inf)
        np.minimum.at(out, inter.user, inter.time.astype(np.float64))
        out[~np.isfinite(out)] = end
        return out

    def truth(self, which: str) -> list[np.ndarray]:
        """Per user, the held-out positives of ``which`` a ranking can hit (time order; computed once): each item
        once, and for ``valid``/``test`` none the user already had (:meth:`seen`, which every ranking leaves
        out). A repeat - a song played again, a product bought twice, a story clicked in two sessions - could
        never be hit: it lowered every model's metrics alike, and counted twice when repeated in the period.
        Users whose held-out positives are all repeats are not evaluated."""
        key = ("truth", which)
        if key not in self._memo:
            inter = self.held_out(which)
            inter = inter.take(inter.label == 1)
            k = inter.user.astype(np.int64) * max(1, self.n_items) + inter.item
            order = np.lexsort((inter.time, inter.user))
            _, first = np.unique(k[order], return_index=True)
            keep = np.zeros(len(inter), bool)
            keep[order[first]] = True  # each (user, item) at its first time
            if which in ("valid", "test"):
                past = [self.train] + ([self.valid] if which == "test" else [])
                had = np.concatenate([p.user.astype(np.int64) * max(1, self.n_items) + p.item for p in past])
                keep &= ~np.isin(k, had)
            if not keep.all():
                log.info("%s: %d of %d held-out positives repeat an item the user already had (in this period or "
                         "before): left out of the truth, as rankings leave seen items out", which,
                         int((~keep).sum()), len(inter))
            self._memo[key] = self.user_items(inter.take(keep), positives_only=False)
        return self._memo[key]

    def seen(self, include_valid: bool) -> list[np.ndarray]:
        """Per user, the sorted items of every training (+ validation) event, labels ignored (computed once)."""
        key = ("seen", bool(include_valid))
        if key not in self._memo:
            parts = [self.user_items(self.train, positives_only=False)]
            if include_valid:
                parts.append(self.user_items(self.valid, positives_only=False))
            self._memo[key] = [np.unique(np.concatenate(p)) for p in zip(*parts)]
        return self._memo[key]

    @property
    def warm_items(self) -> np.ndarray:
        m = np.ones(self.n_items, bool)
        m[self.cold_items] = False
        m[self.cold_valid_items] = False
        m[self.excluded] = False
        return np.flatnonzero(m).astype(np.int32)

    def without_top_items(self, which: str, n: int) -> tuple["Split", list[int]]:
        """(a copy of this split without the ``n`` items that have the most held-out positives in
        ``which``, those items): they leave the candidates and the truth of every user.

        Why: a held-out set can be dominated by a few items (on ml-100k one cold film holds 15% of
        the cold-test positives and most of the untrained encoder's hits), so a metric can be
        decided by where a model happens to rank one item; how a comparison changes without them
        says whether it is robust.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n}")
        inter = self.held_out(which)
        if n == 0:
            return self, []
        pos = inter.item[inter.label == 1]
        counts = np.bincount(pos, minlength=self.n_items)
        top = [int(i) for i in np.argsort(-counts, kind="stable")[:n] if counts[i] > 0]
        drop = np.zeros(self.n_items, bool)
        drop[top] = True
        attr = {"valid": "valid", "test": "test", "cold": "cold_test", "cold_valid": "cold_valid"}[which]
        # only the truth of ``which`` changes: histories (training + validation events) stay as they are
        return replace(self, **{attr: inter.take(~drop[inter.item])},
                       cold_items=self.cold_items[~drop[self.cold_items]],
                       cold_valid_items=self.cold_valid_items[~drop[self.cold_valid_items]],
                       excluded=np.union1d(self.excluded, top).astype(np.int32)), top

    def summary(self) -> dict:
        def s(x):
            return {"events": len(x), "positives": int(x.label.sum()), "users": int(len(np.unique(x.user)))}
        kind = self.config.kind + (f" (random items: fold {self.config.cold_fold} of {self.config.cold_folds})"
                                   if self.config.kind == "cold_item" and self.config.cold_by == "random" else "")
        def held(x, which):  # and what evaluation ranks for: the truth, repeats left out (see truth())
            t = self.truth(which)
            return {**s(x), "truth_positives": int(sum(len(v) for v in t)), "truth_users": sum(1 for v in t if len(v))}
        return {"kind": kind, "train": s(self.train), "valid": held(self.valid, "valid"), "test": held(self.test, "test"),
                "cold_items": int(len(self.cold_items)), "cold_test": held(self.cold_test, "cold"),
                "cold_valid_items": int(len(self.cold_valid_items)), "cold_valid": held(self.cold_valid, "cold_valid")}


def _random_fold_items(evaluable: np.ndarray, conf: SplitConfig) -> tuple[np.ndarray, np.ndarray]:
    """(cold test, cold validation) item masks of ``cold_by = "random"``: the evaluable items, shuffled with
    ``cold_seed``, are dealt into ``cold_folds`` folds of near-equal size; ``cold_fold`` is the cold test and the
    next fold (cyclically) the cold validation. Every item is cold test in exactly one fold, so a cold metric
    averaged over the folds covers the whole catalog once. The deal depends on the items and the seed only."""
    items = np.flatnonzero(evaluable)
    fold_of = np.full(len(evaluable), -1, np.int64)
    fold_of[items[np.random.default_rng(conf.cold_seed).permutation(len(items))]] = np.arange(len(items)) % conf.cold_folds
    return fold_of == conf.cold_fold, fold_of == (conf.cold_fold + 1) % conf.cold_folds


def _per_user_holdout(inter: Interactions, conf: SplitConfig):
    """Per user, in time order: the last events go to test, the ones before to valid."""
    inter = inter.sorted()
    order = np.lexsort((inter.time, inter.user))
    inter = inter.take(order)
    n = len(inter)
    role = np.zeros(n, np.int8)  # 0 train, 1 valid, 2 test
    if n == 0:
        return inter, role
    bounds = np.flatnonzero(np.diff(inter.user)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [n]])
    for a, b in zip(starts, ends):
        m = b - a
        n_test = conf.test_last_n or int(round(m * conf.test_frac))
        n_valid = conf.valid_last_n or int(round(m * conf.valid_frac))
        if conf.test_frac > 0 or conf.test_last_n:
            n_test = max(1, n_test)
        if conf.valid_frac > 0 or conf.valid_last_n:
            n_valid = max(1, n_valid)
        if m - n_test - n_valid < conf.min_train:
            continue
        role[b - n_test : b] = 2
        role[b - n_test - n_valid : b - n_test] = 1
    return inter, role


def make_split(data: Dataset, conf: SplitConfig | None = None) -> Split:
    """Split ``data`` as ``conf`` says (default: cold_item, which includes a warm per-user test)."""
    conf = conf or SplitConfig()
    inter = data.interactions.sorted()
    if len(inter) == 0:  # np.quantile of no times was an IndexError traceback
        unknown = data.report.get("rows_with_unknown_items", 0)
        why = (f": all {unknown} rows of its log name items its item file lacks (e.g. "
               f"{', '.join(map(repr, data.report.get('unknown_item_examples', [])[:3]))}; the item file's ids look "
               f"like {', '.join(map(repr, data.items.ids[:3]))}): do the two id columns match?" if unknown else "")
        raise DataError(f"data set {data.name!r} has no interactions to split{why}")
    empty = inter.take(np.zeros(0, np.int64))
    cold = cold_valid_items = np.zeros(0, np.int32)
    cold_test = cold_valid = empty
    if conf.kind == "global_time":
        t_test = np.quantile(inter.time, conf.test_quantile)
        t_valid = np.quantile(inter.time, conf.valid_quantile)
        train = inter.take(inter.time < t_valid)
        valid = inter.take((inter.time >= t_valid) & (inter.time < t_test))
        test = inter.take(inter.time >= t_test)
        # only users with a training history can be evaluated
        known = np.zeros(data.n_users, bool)
        known[train.user] = True
        valid, test = valid.take(known[valid.user]), test.take(known[test.user])
    else:
        if conf.kind == "cold_item":
            first = np.full(data.n_items, np.iinfo(np.int64).max)
            np.minimum.at(first, inter.item, inter.time)
            never = first == np.iinfo(np.int64).max  # never interacted: not evaluable
            if conf.cold_by == "random":
                is_cold, is_cv = _random_fold_items(~never, conf)
            else:
                is_cold = (first >= np.quantile(inter.time, conf.cold_quantile)) & ~never
                is_cv = (first >= np.quantile(data.interactions.time, conf.cold_valid_quantile)) & ~is_cold & ~never
            cold = np.flatnonzero(is_cold).astype(np.int32)
            cold_test = inter.take(is_cold[inter.item])
            inter = inter.take(~is_cold[inter.item])
            if conf.cold_valid_quantile > 0:
                cold_valid_items = np.flatnonzero(is_cv).astype(np.int32)
                cold_valid = inter.take(is_cv[inter.item])
                inter = inter.take(~is_cv[inter.item])
        inter, role = _per_user_holdout(inter, conf)
        train, valid, test = inter.take(role == 0), inter.take(role == 1), inter.take(role == 2)
        if conf.kind == "cold_item":
            known = np.zeros(data.n_users, bool)
            known[train.user[train.label == 1]] = True
            cold_test = cold_test.take(known[cold_test.user])
            cold_valid = cold_valid.take(known[cold_valid.user])
    return Split(conf, data.n_users, data.n_items, train.sorted(), valid.sorted(), test.sorted(), cold,
                 cold_test.sorted(), cold_valid_items, cold_valid.sorted())
