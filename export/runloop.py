"""The epoch loop's state and its checkpoints, shared by single- and multi-domain training.

Progress (epoch, model selection, patience, history, metrics measured before training) is a plain
JSON-able dict stored in ``checkpoint/progress.json``; parameters, the best parameters and the
optimizer state are safetensors files (no pickle). A checkpoint is swapped in with one rename.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path

from genre_edge.errors import ConfigError
from genre_edge.fsutil import atomic_write_json, scratch_folder

from .train_config import Config

log = logging.getLogger(__name__)


def open_run(out: Path, restart: bool) -> None:
    """Create the output folder; ``restart`` drops its checkpoint so training starts over."""
    out.mkdir(parents=True, exist_ok=True)
    if restart:
        shutil.rmtree(out / "checkpoint", ignore_errors=True)


@dataclass
class RunState:
    """Training progress as a checkpoint stores it: epochs done, model selection, patience, per-epoch
    history, seconds spent, and what was measured before training (``start``: zero-shot metrics,
    the transferred model's, per-domain records), which the final report carries."""
    format: str
    epoch: int = 0
    best_ndcg: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list = field(default_factory=list)
    seconds: float = 0.0
    start: dict = field(default_factory=dict)
    # what the run trains (run_config): a checkpoint resumes only the same run; empty in checkpoints from
    # before it was recorded
    config: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """``progress.json``: the fields, with ``start``'s keys at the top level (the layout since format 1)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "start"}
        return {**d, **self.start}

    @classmethod
    def from_json(cls, d: dict, where: str) -> "RunState":
        names = {f.name for f in fields(cls)} - {"start"}
        if not isinstance(d, dict) or not isinstance(d.get("format"), str) or not isinstance(d.get("epoch"), int):
            raise ConfigError(f"{where}: not a training progress file (no format/epoch); use --restart")
        return cls(**{k: v for k, v in d.items() if k in names}, start={k: v for k, v in d.items() if k not in names})

    def more_epochs(self, tc) -> bool:
        """Whether training goes on: epochs left and patience (``tc``: the TrainConfig) not used up."""
        return self.epoch < tc.epochs and not (tc.patience and self.bad_epochs >= tc.patience)

    def select(self, ep: int, score: float, named: dict, best: dict | None) -> dict | None:
        """Model selection on the validation ``score`` of epoch ``ep`` (0: the starting model): a better
        epoch is snapshotted and resets patience, a worse one uses it up. Returns the best parameters so far."""
        if score > self.best_ndcg:
            self.best_ndcg, self.best_epoch, self.bad_epochs = score, ep, 0
            return {k: v.detach().clone().contiguous() for k, v in named.items()}
        if ep:
            self.bad_epochs += 1
        return best

    def end_epoch(self, ep: int, score: float, seconds: float, named: dict, best: dict | None, out: Path,
                  opt, tc) -> dict | None:
        """Close epoch ``ep``: select on ``score``, count it, save the checkpoint; returns the best parameters."""
        best = self.select(ep, score, named, best)
        self.epoch = ep
        self.seconds += seconds
        save_checkpoint(out, named, opt, self, best)
        if tc.patience and self.bad_epochs >= tc.patience:
            log.info("early stop: no validation gain for %d epochs", self.bad_epochs)
        return best


def cpu_tensors(named: dict) -> dict:
    """Detached, contiguous CPU copies of tensors (what safetensors files hold, wherever training ran)."""
    return {k: v.detach().cpu().contiguous() for k, v in named.items()}


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


def save_checkpoint(out: Path, named: dict, opt, state: RunState, best: dict | None) -> None:
    """Write ``out/checkpoint`` (parameters, best parameters, optimizer state as plain tensors,
    progress) so that an interrupted save leaves the previous checkpoint intact."""
    import torch
    from safetensors.torch import save_file

    ck = out / "checkpoint"
    tmp = out / "checkpoint.tmp"
    with scratch_folder(tmp):
        tmp.mkdir(parents=True)
        save_file(cpu_tensors(named), str(tmp / "params.safetensors"))
        if best is not None:
            save_file(cpu_tensors(best), str(tmp / "best.safetensors"))
        # optimizer state as plain tensors (no pickle): exp_avg / exp_avg_sq / step per parameter
        names = {id(p): n for n, p in named.items()}
        ost = {}
        for group in opt.param_groups:
            for p in group["params"]:
                st = opt.state.get(p)
                if st:
                    for k, v in st.items():
                        ost[f"{names[id(p)]}::{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
        save_file(cpu_tensors(ost), str(tmp / "optim.safetensors"))
        atomic_write_json(tmp / "progress.json", state.to_json())
    # swap in one rename
    old = out / "checkpoint.old"
    shutil.rmtree(old, ignore_errors=True)
    if ck.exists():
        os.replace(ck, old)
    os.replace(tmp, ck)
    shutil.rmtree(old, ignore_errors=True)


# what a resumed run may change: more epochs (or patience) to go on training
RESUMABLE = ("train.epochs", "train.patience")


def run_config(conf: Config) -> dict:
    """The config as a checkpoint records it: everything but where the run computes (``train.device``:
    a run checkpointed on a GPU may go on on the CPU, and back)."""
    from genre_edge.config import to_dict

    d = to_dict(conf)
    d["train"] = {k: v for k, v in d["train"].items() if k != "device"}
    return json.loads(json.dumps(d, default=str))  # as progress.json gives it back (paths as strings)


def _differences(a, b, prefix: str = "") -> list[str]:
    """Dotted keys where two nested dicts differ."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return [] if a == b else [prefix or "(the config)"]
    out = []
    for k in sorted(set(a) | set(b)):
        out += _differences(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
    return out


def _not_resumable(recorded: dict, config: dict) -> list[str]:
    """The keys in which a checkpoint's ``recorded`` config differs from ``config`` beyond RESUMABLE ones."""
    return [k for k in _differences(recorded, config) if k not in RESUMABLE] if recorded else []


def checkpoint_differences(out: Path, conf: Config) -> list[str]:
    """The config keys in which ``out``'s checkpoint was trained differently from ``conf`` (beyond what a
    resume may change); empty when there is no checkpoint, or it is ``conf``'s, or it predates the record."""
    f = out / "checkpoint" / "progress.json"
    try:
        recorded = json.loads(f.read_text()).get("config") or {}
    except (OSError, ValueError, AttributeError):
        return []  # none, or unreadable: load_checkpoint says what is wrong with it
    return _not_resumable(recorded, run_config(conf))


def load_checkpoint(out: Path, named: dict, opt, config: dict | None = None):
    """(progress state, best parameters) from ``out/checkpoint`` into ``named`` and ``opt``; (None, None)
    when there is none. A checkpoint of other parameters is refused, and so is one of another ``config``
    (:func:`run_config`): with the same parameter names it would have been resumed as if it were this run
    (a finished run of another config was rewritten under the new config's name)."""
    import torch
    from safetensors.torch import load_file

    ck = out / "checkpoint"
    if not (ck / "progress.json").is_file():
        return None, None
    state = RunState.from_json(json.loads((ck / "progress.json").read_text()), str(ck / "progress.json"))
    params = load_file(str(ck / "params.safetensors"))
    if set(params) != set(named):
        raise ConfigError(f"{ck}: checkpoint does not match this config (different trainable parameters); "
                          "use a new --out folder or --restart")
    if config is not None:
        diff = _not_resumable(state.config, config)
        if diff:
            raise ConfigError(f"{ck}: checkpoint of another training config (differs in {', '.join(diff[:6])}"
                              f"{', ...' if len(diff) > 6 else ''}); use a new --out folder, or --restart to train "
                              f"this config there from scratch (a resume may change only {', '.join(RESUMABLE)})")
        if not state.config:
            log.warning("%s: checkpoint without its config (an older version wrote it): resumed as this config", ck)
        state.config = config  # the resumed run is this config's (more epochs, say) from the next save on
    with torch.no_grad():
        for n, p in named.items():
            p.copy_(params[n])
    ost = load_file(str(ck / "optim.safetensors"))
    names = {id(q): k for k, q in named.items()}
    for group in opt.param_groups:
        for p in group["params"]:
            n = names[id(p)]
            # moments next to their parameter (a GPU run's resume); AdamW keeps its step count on the CPU
            st = {k: v if k == "step" else v.to(p.device)
                  for k, v in ((k.split("::", 1)[1], v) for k, v in ost.items() if k.split("::", 1)[0] == n)}
            if st:
                opt.state[p] = st
    best = load_file(str(ck / "best.safetensors")) if (ck / "best.safetensors").is_file() else None
    log.info("resumed from %s at epoch %d", ck, state.epoch)
    return state, best
