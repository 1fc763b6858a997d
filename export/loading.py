"""Load a trained model folder (teacher or student) back into PyTorch modules."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from genre_edge.errors import ConfigError

from .train_config import Config, load_config


def domains_hint(path: str | Path) -> str:
    """For a multi-domain run folder given where one model folder is expected: which folders to use."""
    p = Path(path)
    try:
        rep = json.loads((p / "report.json").read_text())
    except (OSError, ValueError):
        return ""
    if not isinstance(rep, dict) or not str(rep.get("format", "")).startswith("genre-multidomain/"):
        return ""
    return "; it is a multi-domain run: use one of its domain folders, " + ", ".join(
        str(p / d) for d in rep.get("domains", {}))


class ModelDir:
    """A ``genre train`` / ``genre distill`` output folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        for f in ("config.toml", "recommender.safetensors", "item_embeddings.npy", "items.json", "popularity.npy"):
            if not (self.path / f).is_file():
                raise ConfigError(f"{self.path}: not a trained model folder (missing {f})"
                                  + (domains_hint(self.path) or "; run 'genre train' first"))
        self.conf: Config = load_config(self.path / "config.toml")
        self.items = json.loads((self.path / "items.json").read_text())
        self.report = json.loads((self.path / "report.json").read_text()) if (self.path / "report.json").is_file() else {}
        self.emb = np.load(self.path / "item_embeddings.npy", allow_pickle=False)
        self.pop = np.load(self.path / "popularity.npy", allow_pickle=False)
        self.cf_table = None
        if (self.path / "cf_idx.npy").is_file():
            self.cf_table = (np.load(self.path / "cf_idx.npy", allow_pickle=False),
                             np.load(self.path / "cf_w.npy", allow_pickle=False))

    def modules(self):
        """(tower, recommender) with trained weights, in eval mode."""
        from safetensors.torch import load_file

        from .models import CFPart, ItemTower, Recommender, load_hf_encoder
        from .registry import HEADS, USER_MODELS, resolve

        c = self.conf
        tower = ItemTower(load_hf_encoder(self.path / "encoder"), c.encoder.pooling, 0, c.encoder.adapter)
        d = tower.dim
        um = resolve(USER_MODELS, c.user_model.kind)(d, heads=c.user_model.heads, hidden=c.user_model.hidden)
        head = resolve(HEADS, c.head.kind)(d, hidden=c.head.hidden)
        cf = CFPart(c.cf.kind, len(self.items["ids"]), self.cf_table, c.cf.mf_dim, c.cf.recency_floor)
        rec = Recommender(d, um, head, cf, self.pop)
        state = load_file(str(self.path / "recommender.safetensors"))
        tower.adapter.weight.data.copy_(state.pop("tower.adapter.weight"))
        tower.adapter.bias.data.copy_(state.pop("tower.adapter.bias"))
        missing, unexpected = rec.load_state_dict({k[4:]: v for k, v in state.items()}, strict=False)
        missing = [m for m in missing if m not in ("cf.W", "pop")]
        if missing or unexpected:
            raise ConfigError(f"{self.path}: recommender weights do not match its config (missing {missing}, unexpected {unexpected})")
        tower.eval()
        rec.eval()
        return tower, rec
