"""Multi-domain (multi-task) training: one shared item encoder, per-domain user model, head and CF part.

A domain is a data set, or some categories of one (``[[domains]]`` in the training config). Each
domain is a :class:`~genre_edge_export.trainer.Trainer` with its own data, split, histories, CF table,
popularity, user model and scoring head, all built around the *same* item tower object; one
optimizer holds the tower once and every domain's parts. An epoch interleaves all domains' training
steps in a seeded random order, so the shared encoder (its trained top layers and adapter) learns
from every domain while each domain's user model and head learn only from their own. Model
selection and early stopping use the mean of the domains' validation nDCG@10 (every domain counts
the same, however many interactions it has); the WiSE-FT interpolation of the shared tower sums the
domains' validation scores.

Output: ``<out>/<domain>/`` is a complete model folder per domain (its config is the domain's
single-domain config), so ``genre distill`` / ``genre export`` / ``train.init_from`` read it like any
other; the encoders in them are identical. ``<out>/report.json`` compares the domains.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from genre_edge import config as cfgmod
from genre_edge.errors import ConfigError
from genre_edge.fsutil import atomic_write_json, atomic_write_text

from . import require
from .runloop import RunState, load_checkpoint, open_run, optimizer, restore, run_config, wise_ft
from .trainer import Trainer
from .train_config import Config

log = logging.getLogger(__name__)

FORMAT = "genre-multidomain/1"


class MultiTrainer:
    """Train the domains of ``conf.domains`` together (see the module docstring)."""

    def __init__(self, conf: Config, out_dir: str | Path, data_dir: str | None = None, progress: bool = True):
        if not conf.domains:
            raise ConfigError("multi-domain training needs [[domains]] in the config")
        self.torch = require("torch", "export", "training")
        self.conf = conf
        self.out = Path(out_dir)
        self.progress = progress
        self.rng = np.random.default_rng(conf.train.seed)
        self.domains: list[tuple[str, Trainer]] = []
        tower = None
        for d in conf.domains:
            log.info("domain %s ...", d.name)
            t = Trainer(conf.for_domain(d.name), self.out / d.name, data_dir, progress=False, tower=tower)
            tower = t.tower  # the first domain builds the item tower, the others share the object
            self.domains.append((d.name, t))
        self.tower = tower

    def _tower_trainable(self) -> dict:
        return {n: p for n, p in self.tower.named_parameters() if p.requires_grad}

    def _trainable(self) -> dict:
        named = {f"tower.{n}": p for n, p in self._tower_trainable().items()}
        for name, t in self.domains:
            named.update({f"{name}/rec.{n}": p for n, p in t.rec.named_parameters() if p.requires_grad})
        return named

    def interpolation_scores(self) -> dict:
        """Every domain's warm validation and cold-validation nDCG@10 (summed by :func:`wise_ft`)."""
        out = {}
        for name, t in self.domains:
            sc = t.interpolation_scores()
            out[f"{name}/valid_ndcg@10"] = sc["valid_ndcg@10"]
            if len(t.prep.split.cold_valid_items):
                out[f"{name}/cold_valid_ndcg@10"] = sc["cold_valid_ndcg@10"]
        return out

    def fit(self, restart: bool = False) -> dict:
        """Train, select, interpolate, calibrate and write every domain's model folder; returns the report."""
        torch = self.torch
        from tqdm.auto import tqdm

        conf = self.conf
        t0 = time.perf_counter()
        open_run(self.out, restart)
        emb0 = {}
        for name, t in self.domains:
            t._bottom_cache()
            emb0[name] = t.all_embeddings()
        theta0 = {k: v.detach().clone() for k, v in self._tower_trainable().items()}
        opt = optimizer(conf, self.tower, [t.rec for _, t in self.domains])
        state, best = load_checkpoint(self.out, self._trainable(), opt, run_config(conf))
        if state is None:
            state = RunState(FORMAT, start={"domains": {name: {"history": [], **t.start_metrics(emb0[name])}
                                                          for name, t in self.domains}}, config=run_config(conf))
            if conf.train.init_from:  # the transferred start is a candidate, as in single-domain training
                start = float(np.mean([d["transfer_initial"]["valid"]["ndcg@10"]
                                       for d in state.start["domains"].values()]))
                best = state.select(0, start, self._trainable(), best)
        seen = {name: t.seen_matrix() for name, t in self.domains}
        tower_params = [p for p in self.tower.parameters() if p.requires_grad]
        while state.more_epochs(conf.train):
            ep = state.epoch + 1
            t_ep = time.perf_counter()
            for p in tower_params:  # freeze/unfreeze schedule: user models and heads adapt first
                p.requires_grad_(ep > conf.train.freeze_epochs)
            plan = []
            for i, (name, t) in enumerate(self.domains):
                t.E = t.table(t.all_embeddings())
                t.P = t.profile_vectors()
                plan += [(i, b) for b in t._batches()]
            losses = {name: [] for name, _ in self.domains}
            bar = tqdm(self.rng.permutation(len(plan)), desc=f"epoch {ep}/{conf.train.epochs}", unit="step",
                       disable=None if self.progress else True, leave=False)  # none off a terminal
            for j in bar:
                i, (users, targets, times) = plan[j]
                name, t = self.domains[i]
                losses[name].append(t._step(users, targets, times, opt, seen[name]))
            per = {}
            for name, t in self.domains:
                per[name] = t.epoch_record(ep, losses[name])
                state.start["domains"][name]["history"].append(per[name])
            score = float(np.mean([r["valid_ndcg@10"] for r in per.values()]))
            state.history.append({"epoch": ep, "mean_valid_ndcg@10": score,
                                     "steps": {name: len(v) for name, v in losses.items()}})
            log.info("epoch %d: mean valid ndcg@10 %.4f (%s)", ep, score,
                     ", ".join(f"{n} {r['valid_ndcg@10']:.4f}" for n, r in per.items()))
            if self.progress:
                print(f"epoch {ep}: mean valid nDCG@10 {score:.4f}  " +
                      "  ".join(f"{n}: loss {r['train_loss']:.3f} nDCG@10 {r['valid_ndcg@10']:.4f}"
                                for n, r in per.items()), flush=True)
            best = state.end_epoch(ep, score, time.perf_counter() - t_ep, self._trainable(), best, self.out, opt,
                                   conf.train)
        restore(self._trainable(), best)
        for p in tower_params:
            p.requires_grad_(True)
        interpolation = None
        if conf.train.interpolate and any(len(t.prep.split.cold_valid_items) for _, t in self.domains):
            interpolation = wise_ft(self._tower_trainable(), theta0, self.interpolation_scores)
        names = [n for n, _ in self.domains]
        reports = {}
        for name, t in self.domains:
            d = state.start["domains"][name]
            reports[name] = t.finish(
                d, d["history"], state.best_epoch, interpolation, t0,
                extra={"multi_domain": {"run": conf.name, "domains": names, "shared_encoder": True}})
        report = {
            "format": FORMAT,
            "name": conf.name,
            "domains": {name: {"data": r["data"], "folder": name, "train_positives": r["train_positives"],
                               "zero_shot": r["zero_shot"]["test"], "test": r["teacher"]["test"],
                               "cold": r["teacher"]["cold"], "valid": r["teacher"]["valid"]}
                        for name, r in reports.items()},
            "history": state.history,
            "best_epoch": state.best_epoch,
            "interpolation": interpolation,
            "train_seconds": time.perf_counter() - t0,
            "threads": torch.get_num_threads(),
        }
        atomic_write_text(self.out / "config.toml", cfgmod.dumps_toml(cfgmod.to_dict(conf)))
        atomic_write_json(self.out / "report.json", report)
        return report


def train_multi(conf: Config, out_dir: str | Path, data_dir: str | None = None, restart: bool = False,
                progress: bool = True) -> dict:
    """Train the domains of ``conf`` together into ``out_dir/<domain>``; resumes from ``out_dir/checkpoint``."""
    return MultiTrainer(conf, out_dir, data_dir, progress).fit(restart=restart)


def summary(rep: dict) -> str:
    """Per-domain test metrics of a multi-domain report, for the CLI."""
    lines = [f"trained {rep['name']} ({len(rep['domains'])} domains, shared encoder) in {rep['train_seconds']:.0f} s "
             f"(best epoch {rep['best_epoch']})",
             f"{'domain':>14} {'positives':>10} {'zero-shot nDCG@10':>18} {'nDCG@10':>8} {'R@20':>7} {'cold nDCG@10':>13}"]
    for name, d in rep["domains"].items():
        lines.append(f"{name:>14} {d['train_positives']['used']:>10} {d['zero_shot'].get('ndcg@10', 0):18.4f} "
                     f"{d['test'].get('ndcg@10', 0):8.4f} {d['test'].get('recall@20', 0):7.4f} "
                     f"{d['cold'].get('ndcg@10', 0):13.4f}")
    lines.append("model folders: " + ", ".join(d["folder"] for d in rep["domains"].values()) +
                 " (each one is a normal model folder for genre distill / genre export)")
    return "\n".join(lines)
