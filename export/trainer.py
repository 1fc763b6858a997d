"""The teacher's Trainer: encoder + user model + scoring head + CF part, on 2 CPU cores.

Practicality on a small CPU: the frozen lower layers run once for the whole catalog and are
cached; each step encodes only the unique candidate items of the batch through the trainable top
layers, while history items come from an item-embedding table refreshed every epoch.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from genre_edge.errors import ConfigError

from . import require
from .augment import augmented_texts
from .calibrate import calibrate, choose_short_cf, grid_blend
from .curves import Curves, training_choices
from .device import resolve_device, run_facts, seed_torch
from .distributed import DataParallel
from .evaluate import category_features, evaluate
from .model_folder import FORMAT, build_modules, save_model
from .precision import autocast, check_precision
from .prepare import Prepared, encoder_path, first_seen
from .runloop import RunState, load_checkpoint, open_run, optimizer, restore, run_config, wise_ft
from .scoring import Scorer, mean_by_owner, pad, popularity_rows, user_vectors, zero_shot_scores
from .text import item_texts, tokenize
from .train_config import Config, load_config

log = logging.getLogger(__name__)

TOP_PART = 32  # rows per part of the fine-tuned top layers' pass on a CPU (Trainer.encode; 16: the same, 128: +17%)


class SeenPairs:
    """The (user, item) pairs of the training histories as sorted int64 keys, indexed like a bool matrix
    (``seen[users[:, None], items[None, :]]``). Memory grows with the events, not with users x items: the
    dense matrix this replaces is 100 GB at 1M users x 100k items."""

    def __init__(self, hist: list[np.ndarray], n_items: int):
        self.n_items = int(n_items)
        keys = [u * self.n_items + np.asarray(h, np.int64) for u, h in enumerate(hist) if len(h)]
        self.keys = np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)

    def __getitem__(self, idx) -> np.ndarray:
        users, items = idx
        q = np.asarray(users, np.int64) * self.n_items + np.asarray(items, np.int64)  # broadcasts like fancy indexing
        if not len(self.keys):
            return np.zeros(q.shape, bool)
        pos = np.minimum(np.searchsorted(self.keys, q), len(self.keys) - 1)
        return self.keys[pos] == q


class Trainer:
    def __init__(self, conf: Config, out_dir: str | Path, data_dir: str | None = None, dataset=None,
                 progress: bool = True, tower=None):
        self.torch = require("torch", "export", "training")
        self.conf = conf
        # several processes (accelerate launch / torchrun): each takes a share of every batch; see distributed.py
        self.dp = DataParallel.from_env()
        self.out = self.dp.out_dir(Path(out_dir))
        self.progress = progress and self.dp.main
        threads = self.dp.threads(conf.train.threads) if self.dp.world > 1 else conf.train.threads or os.cpu_count() or 1
        self.torch.set_num_threads(threads)
        self.dev = resolve_device(self.torch, conf.train.device)  # cpu, or this process's GPU
        check_precision(conf.train.precision, self.dev.type)
        seed_torch(self.torch, conf.train.seed, self.dev)  # bit-identical weights for the same seed on a CPU
        self.rng = np.random.default_rng(conf.train.seed)  # batch order and shared negatives: the same everywhere
        # draws per example (augmented texts, impression negatives) differ by process: their own stream
        self.rng_example = self.rng if self.dp.world == 1 else np.random.default_rng([conf.train.seed, self.dp.rank])
        self.enc_path = encoder_path(conf)
        self.prep = Prepared(conf, data_dir, dataset)
        self.texts = item_texts(self.prep.data.items, conf.encoder.template)
        # augmented renderings (export/augment.py): rows N..N*(V+1) of the token and bottom-layer caches
        self.aug_texts = augmented_texts(self.prep.data.items, conf.encoder.template, conf.augment)
        self.P = None  # profile vectors used by training steps, refreshed every epoch
        self._seen = None  # seen_matrix(), built at first use
        self._cf_pool = None  # train.cf_negatives: each user's best CF items (cf_pool), built at the first step
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
        self.tower, self.rec = build_modules(conf, self.prep.data.n_items, self.prep.cf_table, self.prep.pop,
                                             tower=tower, enc_path=self.enc_path)
        if conf.train.init_from:
            self._init_from(Path(conf.train.init_from))
        self.tower.to(self.dev)
        self.rec.to(self.dev)
        self.dp.broadcast([*self.tower.parameters(), *self.rec.parameters()])
        self.feats = category_features(self.prep.data.items.categories)

    def _init_from(self, src: Path) -> None:
        """Transfer: the source model's adapter, user model and head (its encoder is already loaded);
        the CF part and popularity stay this data set's."""
        from safetensors.torch import load_file

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
        from .models import by_length, pool  # torch

        torch = self.torch
        self.tower.eval()
        if self.tower.n_top == 0:  # frozen encoder: one pooled vector per text, batched by length (models.by_length)
            self.bottom = by_length(lambda ids, m: pool(self.tower.bottom(ids, m), m, self.tower.pooling),
                                    self.ids_all, self.mask_all, self.dev)
        else:  # the top layers read every token's hidden state: kept at the padded width, zeros past each text
            self.bottom = by_length(lambda ids, m: self.tower.bottom(ids, m) * m[..., None].to(self.tower.bert.dtype),
                                    self.ids_all, self.mask_all, self.dev, pad_to=self.ids_all.shape[1])
        self.tmask = torch.as_tensor(self.mask_all, device=self.dev)
        self.tlen = self.mask_all.sum(1)  # tokens per text: encode() runs the top layers on texts of similar length

    def encode(self, idx, grad: bool):
        """Item embeddings; while training (``grad``) a ``augment.prob`` share of items read one of
        their augmented texts instead of the real one."""
        from .models import by_length  # torch

        torch = self.torch
        idx = np.asarray(idx, np.int64)
        if grad and self.aug_texts:
            v = self.rng_example.integers(1, len(self.aug_texts) + 1, len(idx))
            idx = np.where(self.rng_example.random(len(idx)) < self.conf.augment.prob, idx + v * len(self.texts), idx)
        rows = torch.as_tensor(idx, device=self.dev)
        if self.tower.n_top == 0:
            with torch.set_grad_enabled(grad):
                return self.tower.head(self.bottom[rows])
        # the fine-tuned top layers over texts of similar length, each part cut to its longest (mean 15.8 of 32
        # tokens for ml-100k): on a CPU in parts of TOP_PART rows, a GPU takes the batch whole (more launches
        # would cost it more than padding does)
        part = TOP_PART if self.dev.type == "cpu" else max(len(idx), 1)
        return by_length(self.tower.top, self.bottom[rows], self.tmask[rows], batch=part, grad=grad,
                         lengths=self.tlen[idx])

    def all_embeddings(self) -> np.ndarray:
        self.tower.eval()
        out = [self.encode(np.arange(a, min(a + 512, len(self.ids))), False) for a in range(0, len(self.ids), 512)]
        return self.torch.cat(out).cpu().numpy()

    def table(self, emb: np.ndarray):
        """The item-embedding table the steps read histories from, on the training device."""
        return self.torch.as_tensor(emb, device=self.dev)

    def profile_vectors(self):
        """(P [n_users, D], has [n_users]): the mean of each user's LLM texts with the current tower, or None."""
        if self.prof_owner is None:
            return None
        self.tower.eval()
        rows = self.prof_row0 + np.arange(len(self.prof_owner))
        e = self.torch.cat([self.encode(rows[a: a + 512], False) for a in range(0, len(rows), 512)])
        return mean_by_owner(e, self.prof_owner, self.prep.data.n_users)

    def scorer(self, emb: np.ndarray, hist: list[np.ndarray], which: str = "valid") -> Scorer:
        """Scores with the current modules for the held-out users of ``which`` (trending popularity, when
        calibrated, is read as of their request times there)."""
        sp = self.prep.split
        return Scorer(self.conf, self.rec, emb, hist, self.profile_vectors(),
                      popularity_rows(self.rec, sp, sp.request_times(which)))

    # --------------------------------------------------------------- evaluation
    def evaluate(self, which: str, emb: np.ndarray | None = None) -> dict:
        self.rec.eval()
        emb = self.all_embeddings() if emb is None else emb
        return evaluate(self.scorer(emb, self.prep.split.histories(which), which), self.prep.split, which,
                        item_features=self.feats, max_users=self.conf.train.max_eval_users)

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
        emb = self.all_embeddings()
        warm = grid_blend(self, emb, fine=False)[0]
        cold = evaluate(self.scorer(emb, self.prep.hist, "cold_valid"), self.prep.split, "cold_valid", n_neg=1,
                        max_users=self.conf.train.max_eval_users).get("ndcg@10", 0.0)
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

    def _users(self, users: np.ndarray, hists: list[np.ndarray]):
        """What the head needs of each example's user: the user vector (the user model over the newest
        ``user_model.max_history`` items of ``hists``, blended with the interest profile when there is one)
        and the whole history padded for the CF part (ids, mask tensors). One path for the training and the
        validation loss, so the two cannot drift apart."""
        torch, dev = self.torch, self.dev
        u = user_vectors(self.rec, self.E, hists, users, self.P, self.conf.user_model)
        cids, cm = pad(hists)
        return u, torch.as_tensor(cids, device=dev), torch.as_tensor(cm, device=dev)

    def _loss(self, users, targets, times, seen):
        """The training loss of one batch (sampled softmax over the positive, shared and impression negatives),
        every tensor on the training device; :meth:`_step` takes the gradient step."""
        torch, dev = self.torch, self.dev
        conf = self.conf
        B = len(targets)
        negs = self.shared_negatives()
        K = len(negs)
        # each example's own negatives, (ids [B, m], valid slots [B, m]) per source: impressions, then CF
        sources = []
        if conf.train.impression_negatives and self.prep.impression_coverage > 0:
            sources.append(self.prep.impression_negatives(users, times, conf.train.impression_negatives,
                                                          self.rng_example))
        if conf.train.cf_negatives:
            sources.append(self.cf_negatives(users))
        own, own_ok = (np.concatenate([s[0] for s in sources], 1), np.concatenate([s[1] for s in sources], 1)) \
            if sources else (None, None)
        M = own.shape[1] if sources else 0
        # candidates per example: [positive, K shared sampled negatives, M own negatives]
        cand_ids_np = np.concatenate([targets[:, None], np.broadcast_to(negs, (B, K))] + ([own] if M else []), 1)
        # unique over the B + K (+ B*M) distinct slots, not the B x (1 + K + M) grid: the same rows, ~10x less sorting
        cand, inv_flat = np.unique(np.concatenate([targets, negs] + ([own.ravel()] if M else [])), return_inverse=True)
        inv = np.concatenate([inv_flat[:B, None], np.broadcast_to(inv_flat[B: B + K], (B, K))]
                             + ([inv_flat[B + K:].reshape(B, M)] if M else []), 1)
        self.tower.train()
        self.rec.train()
        with autocast(torch, conf.train.precision, dev.type):  # fp32: nothing; bf16: the forward pass in bfloat16
            e = self.encode(cand, grad=True)  # each unique item once, however many slots it fills
            inv_t = torch.as_tensor(inv, device=dev)  # [B, 1 + K (+ M)] rows of e
            u, cids_t, cm_t = self._users(users, self.example_histories(users, targets, times))
            cand_ids = torch.as_tensor(cand_ids_np, device=dev)
            cf = self.rec.cf.scores(cids_t, cm_t, cand_ids)
            pop = self.rec.pop[cand_ids]
            logits = self.rec.head.score_rows(u, e, inv_t, cf, pop, shared=slice(1, K + 1))
        logits = logits.float()  # masks, loss and gradients clipping in float32
        logits[:, 1 : K + 1] = logits[:, 1 : K + 1].masked_fill(self.accidental_hits(users, negs, seen), -1e9)
        if M:  # missing own slots (fewer shown items, a short CF pool) are switched off
            logits[:, K + 1 :] = logits[:, K + 1 :].masked_fill(torch.as_tensor(~own_ok, device=dev), -1e9)
        return torch.nn.functional.cross_entropy(logits, torch.zeros(B, dtype=torch.long, device=dev))

    @property
    def full_softmax(self) -> bool:
        """Whether ``train.negatives`` asks for at least the warm catalog's size: then every warm item is each
        example's negative once (a full softmax) instead of a uniform sample."""
        return self.conf.train.negatives >= len(self.prep.warm_pool)

    def shared_negatives(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """The ``train.negatives`` warm items every example of a batch is scored against: drawn uniformly (with
        replacement, from ``rng``, default the batch stream) or, under :attr:`full_softmax`, every warm item once
        (the loss then ranks each positive against the whole catalog, as evaluation does, without duplicate rows)."""
        pool = self.prep.warm_pool
        if self.full_softmax:
            return pool
        return pool[(self.rng if rng is None else rng).integers(0, len(pool), self.conf.train.negatives)]

    def accidental_hits(self, users: np.ndarray, negs: np.ndarray, seen: "SeenPairs"):
        """[B, K] bool tensor: which shared negatives each user liked in training (``seen``). They are not
        negatives, so the training and the validation loss switch them off."""
        return self.torch.as_tensor(seen[users[:, None], negs[None, :]], device=self.dev)

    def cf_negatives(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``train.cf_negatives`` hard negatives per example: ids [B, n] drawn uniformly (with replacement) from
        the user's :meth:`cf_pool`, and a validity mask (False where the user's pool is short).

        Why: shared negatives are mostly items no one would rank high, which CF already separates; the
        negatives CF ranks alike with the positive are where a content score can add to it."""
        pool, ok = self.cf_pool()
        pick = self.rng_example.integers(0, pool.shape[1], (len(users), self.conf.train.cf_negatives))
        return pool[users[:, None], pick].astype(np.int64), ok[users[:, None], pick]

    def cf_pool(self) -> tuple[np.ndarray, np.ndarray]:
        """Per user, the ``train.cf_negative_pool`` warm items the CF part scores highest from the user's whole
        training history, the user's training positives excluded (int32 [users, pool]), and which slots hold
        an item (users with a short pool). Computed once: the neighbour table does not change in training."""
        if self._cf_pool is None:
            torch, h = self.torch, self.prep.hist
            n = min(self.conf.train.cf_negative_pool, len(self.prep.warm_pool))
            cold = np.ones(self.prep.split.n_items, bool)
            cold[self.prep.warm_pool] = False
            pool, ok = np.zeros((len(h), n), np.int32), np.zeros((len(h), n), bool)
            chunk = max(1, min(1024, (1 << 25) // len(cold)))  # users per pass: ~128 MB of scores whatever the catalog
            with torch.no_grad():
                for lo in range(0, len(h), chunk):
                    rows = range(lo, min(len(h), lo + chunk))
                    cids, cm = pad([h[u] for u in rows])
                    s = self.rec.cf.scores(torch.as_tensor(cids, device=self.dev), torch.as_tensor(cm, device=self.dev),
                                           None).float().cpu().numpy()
                    s[:, cold] = -np.inf
                    for r, u in enumerate(rows):
                        s[r, h[u]] = -np.inf
                    top = np.argpartition(-s, n - 1, axis=1)[:, :n]
                    pool[lo: lo + len(rows)] = top
                    ok[lo: lo + len(rows)] = np.isfinite(np.take_along_axis(s, top, 1))
            self._cf_pool = (pool, ok)
        return self._cf_pool

    def _step(self, users, targets, times, opt, seen):
        loss = self._loss(users, targets, times, seen)
        opt.zero_grad()
        loss.backward()
        params = [p for g in opt.param_groups for p in g["params"]]
        self.dp.average_grads(params)  # no-op in one process
        self.torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        return self.dp.mean(loss.item())

    def example_histories(self, users, targets, times) -> list[np.ndarray]:
        """Each training example's history (``train.example_history``): the user's other training positives,
        or those strictly before the target's time (oldest first either way)."""
        h = self.prep.hist
        if self.conf.train.example_history == "before":
            ht = self.prep.hist_time
            return [h[u][: np.searchsorted(ht[u], t, "left")] for u, t in zip(users, times)]
        return [h[u][h[u] != t] for u, t in zip(users, targets)]

    def _valid_loss(self, n: int = 2048, chunk: int = 256) -> float:
        """The training loss's softmax on held-out validation positives (no grad): each scored against the same
        kind of shared negatives a training step uses (a fixed seeded draw of ``train.negatives``, or every warm
        item under :attr:`full_softmax`), the user's training items among them switched off as in training
        (:meth:`accidental_hits`), and the positive too, so the logged train and valid losses are on one scale.
        Users in chunks: a full softmax is n x warm items."""
        torch, dev = self.torch, self.dev
        seen = self.seen_matrix()
        va = self.prep.split.valid
        va = va.take(va.label == 1)
        rng = np.random.default_rng(12345)
        sel = rng.permutation(len(va))[:n]
        users_all, targets_all = va.user[sel].astype(np.int64), va.item[sel].astype(np.int64)
        negs = self.shared_negatives(rng)
        K = len(negs)
        self.rec.eval()
        total = 0.0
        with torch.no_grad():
            E = self.E
            for lo in range(0, len(users_all), chunk):
                users, targets = users_all[lo: lo + chunk], targets_all[lo: lo + chunk]
                u, cids_t, cm_t = self._users(users, [self.prep.hist[x] for x in users])
                cand = torch.as_tensor(np.concatenate([targets[:, None], np.broadcast_to(negs, (len(users), K))], 1),
                                       device=dev)
                cf = self.rec.cf.scores(cids_t, cm_t, cand)
                logits = self.rec.head(u, E[cand], cf, self.rec.pop[cand])
                # the positive itself among the shared negatives is switched off too (in training it is a seen item)
                hit = self.accidental_hits(users, negs, seen) | torch.as_tensor(negs[None, :] == targets[:, None],
                                                                                  device=dev)
                logits[:, 1:] = logits[:, 1:].masked_fill(hit, -1e9)
                total += float(torch.nn.functional.cross_entropy(
                    logits, torch.zeros(len(users), dtype=torch.long, device=dev), reduction="sum"))
        return total / max(len(users_all), 1)

    def fit(self, restart: bool = False) -> dict:
        from tqdm.auto import tqdm

        conf = self.conf
        t0 = time.perf_counter()
        open_run(self.out, restart)
        self._bottom_cache()
        emb0 = self.all_embeddings()  # adapter starts at zero: the pretrained space
        theta0 = {k: v.detach().clone() for k, v in self._tower_trainable().items()}
        opt = optimizer(conf, self.tower, [self.rec])
        state, best = load_checkpoint(self.out, self._trainable(), opt, run_config(conf))
        self.curves = Curves(self.out, fresh=state is None)  # a resumed run appends to its curves
        if state is None:
            state = RunState(FORMAT, start=self.start_metrics(emb0), config=run_config(conf))
            if conf.train.init_from:
                # the transferred model is a candidate like every epoch: a few target examples must
                # not make it worse (100 positives did, on ml-100k genre domains, before this)
                best = state.select(0, state.start["transfer_initial"]["valid"]["ndcg@10"], self._trainable(), best)
        tower_params = [p for p in self.tower.parameters() if p.requires_grad]
        seen = self.seen_matrix()
        zs = state.start["zero_shot"]["valid"]
        self.curves.scalars(0, {"valid_ndcg@10": zs.get("ndcg@10"), "valid_recall@20": zs.get("recall@20")}, "zero_shot/")
        while state.more_epochs(conf.train):
            ep = state.epoch + 1
            t_ep = time.perf_counter()
            for p in tower_params:  # freeze/unfreeze schedule: user model and head adapt first
                p.requires_grad_(ep > conf.train.freeze_epochs)
            self.E = self.table(self.all_embeddings())
            self.P = self.profile_vectors()
            losses = []
            batches = list(self._batches())
            # disable=None: no bar where stderr is not a terminal (a log file got every redraw: 137 KB for
            # `make demo`); the epoch lines below say the same once per epoch
            bar = tqdm(batches, desc=f"epoch {ep}/{conf.train.epochs}", unit="step",
                       disable=None if self.progress else True, leave=False)
            for k, (users, targets, times) in enumerate(bar):
                users, targets, times = self.dp.shard(users, targets, times)  # this process's share of the batch
                losses.append(self._step(users, targets, times, opt, seen))
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
                self.curves.scalars((ep - 1) * len(batches) + k, {"loss": losses[-1]}, "step/")
            rec = self.epoch_record(ep, losses)
            self.curves.scalars(ep, {k: v for k, v in rec.items() if k != "epoch"}, "epoch/")
            nd, vl = rec["valid_ndcg@10"], rec["valid_loss"]
            state.history.append(rec)
            log.info("epoch %d: train loss %.4f, valid loss %.4f, valid ndcg@10 %.4f", ep, rec["train_loss"], vl, nd)
            if self.progress:
                print(f"epoch {ep}: train loss {rec['train_loss']:.4f}  valid loss {vl:.4f}  valid nDCG@10 {nd:.4f}",
                      flush=True)
            best = state.end_epoch(ep, nd, time.perf_counter() - t_ep, self._trainable(), best, self.out, opt,
                                   conf.train)
        restore(self._trainable(), best)
        for p in tower_params:
            p.requires_grad_(True)
        interpolation = self.interpolate(theta0) if conf.train.interpolate else None
        return self.finish(state.start, state.history, state.best_epoch, interpolation, t0)

    def start_metrics(self, emb0: np.ndarray) -> dict:
        """Zero-shot metrics (untrained encoder, mean of history) and, with ``init_from``, the
        transferred model's metrics before any training."""
        sp, conf = self.prep.split, self.conf
        out = {"zero_shot": {w: evaluate(zero_shot_scores(emb0, sp.histories(w), conf.user_model.max_history),
                                         sp, w, item_features=self.feats, max_users=conf.train.max_eval_users)
                             for w in ("valid", "test", "cold", "cold_valid")}}
        log.info("%s zero-shot valid ndcg@10 %.4f", conf.name, out["zero_shot"]["valid"].get("ndcg@10", 0))
        if conf.train.init_from:
            out["transfer_initial"] = {w: self.evaluate(w, emb0) for w in ("valid", "test")}
        return out

    def seen_matrix(self) -> "SeenPairs":
        """Each user's training items, indexable like a [n_users, n_items] bool matrix (a sampled negative
        among them is masked), without one: see :class:`SeenPairs`. Built once: the histories do not change."""
        if self._seen is None:
            self._seen = SeenPairs(self.prep.hist, self.prep.data.n_items)
        return self._seen

    def epoch_record(self, ep: int, losses: list[float]) -> dict:
        """Refresh the item table and measure an epoch: train loss, validation loss and nDCG@10."""
        emb = self.all_embeddings()
        self.E = self.table(emb)
        vl = self._valid_loss()
        val = self.evaluate("valid", emb)
        return {"epoch": ep, "train_loss": float(np.mean(losses)) if losses else float("nan"), "valid_loss": vl,
                "valid_ndcg@10": val["ndcg@10"], "valid_recall@20": val["recall@20"]}

    def finish(self, start: dict, history: list, best_epoch: int, interpolation: dict | None, t0: float,
               extra: dict | None = None) -> dict:
        """Calibrate the blend, measure the final model, write the model folder; returns the report.
        ``start``: what :meth:`start_metrics` measured; ``history``/``best_epoch``: the run's."""
        torch, conf = self.torch, self.conf
        emb = self.all_embeddings()
        self.E = self.table(emb)
        calibration = calibrate(self, emb) if conf.train.calibrate_blend and conf.cf.kind != "none" else None
        # after calibration: the short-history tables are chosen with the blend they join (before the test rows below)
        cf_short, cf_short_report = choose_short_cf(self, emb) if conf.cf.short_tiers else ([], None)
        report = {
            "format": FORMAT,
            "name": conf.name,
            "data": self.prep.data.name,
            "split": self.prep.split.summary(),
            "zero_shot": start["zero_shot"],
            "transfer_initial": start.get("transfer_initial"),
            "train_positives": {"used": int(len(self.prep.learn_rows)),
                                "of": int((self.prep.split.train.label == 1).sum())},
            "teacher": {w: self.evaluate(w, emb) for w in ("valid", "test", "cold", "cold_valid")},
            "history": history,
            "best_epoch": best_epoch,
            "blend": self.rec.head.blend_weights(),
            "calibration": calibration,
            "interpolation": interpolation,
            "impression_negatives": {"per_positive": conf.train.impression_negatives,
                                     "positives_with_impressions": self.prep.impression_coverage},
            "cf_negatives": {"per_positive": conf.train.cf_negatives, "pool": conf.train.cf_negative_pool},
            # what a step scored: train.negatives beyond the warm catalog's size is every warm item once
            "shared_negatives": {"per_batch": min(conf.train.negatives, len(self.prep.warm_pool)),
                                 "full_softmax": self.full_softmax},
            "cf_ease": self.prep.cf_ease,
            "cf_short": cf_short_report,
            "train_seconds": time.perf_counter() - t0,
            **run_facts(torch, self.dev),
            "precision": conf.train.precision,
            **(extra or {}),
        }
        p = self.prep
        save_model(self.out, conf, self.enc_path, self.tower, self.rec, emb, p.pop, p.cf_table, p.data.items, self.texts,
                   first_seen(p), p.split.cold_items, report, cf_short=cf_short)
        curves = getattr(self, "curves", None) or Curves(self.out)
        training_choices(curves, report)
        curves.close()
        return report
