"""The trained model folder (``genre train`` / ``genre distill`` output): one module writes and reads it.

A folder holds ``encoder/`` (Hugging Face weights + tokenizer), ``recommender.safetensors`` (adapter,
user model, head, CF factors), ``item_embeddings.npy``, ``popularity.npy``, the CF neighbour table
(``cf_idx.npy``/``cf_w.npy``; with ``cf.short_history``, the table kept for histories of at most T items
``cf_short{T}_idx.npy``/``cf_short{T}_w.npy``, its blend scale folded into the weights), ``items.json``,
``config.toml``, ``report.json`` and ``teacher.json``.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from genre_edge import config as cfgmod
from genre_edge.errors import ConfigError
from genre_edge.fsutil import atomic_save_npy, atomic_write_json, atomic_write_text, scratch_folder
from genre_edge.tokenize import load_tokenizer

from .curves import TB_DIR
from .registry import HEADS, USER_MODELS, resolve
from .runloop import cpu_tensors
from .train_config import Config, load_config

FORMAT = "genre-teacher/1"
TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


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
        # the short-history CF tables [(T, (idx, w))]: those of cf.short_history that validation kept
        tiers = self.conf.cf.short_tiers if self.conf.cf.kind in ("ease", "cooccurrence") else ()
        stray = sorted(f.name for f in self.path.glob("cf_short*_idx.npy") if f.name not in {short_file(T, "idx")
                                                                                            for T in tiers})
        if stray:
            raise ConfigError(f"{self.path}: holds CF tables for short histories ({', '.join(stray)}) that its "
                              f"config.toml does not ask for (cf.short_history = {self.conf.cf.short_history!r}, "
                              f"cf.kind = {self.conf.cf.kind!r}); the folder is inconsistent: retrain it")
        self.cf_short = [(T, (np.load(self.path / short_file(T, "idx"), allow_pickle=False),
                              np.load(self.path / short_file(T, "w"), allow_pickle=False)))
                         for T in tiers if (self.path / short_file(T, "idx")).is_file()]

    def modules(self):
        """(tower, recommender) with trained weights, in eval mode."""
        from safetensors.torch import load_file

        from .models import ItemTower, load_hf_encoder

        c = self.conf
        tower = ItemTower(load_hf_encoder(self.path / "encoder"), c.encoder.pooling, 0, c.encoder.adapter)
        tower, rec = build_modules(c, len(self.items["ids"]), self.cf_table, self.pop, tower=tower, cf_short=self.cf_short)
        state = load_file(str(self.path / "recommender.safetensors"))
        tower.adapter.weight.data.copy_(state.pop("tower.adapter.weight"))
        tower.adapter.bias.data.copy_(state.pop("tower.adapter.bias"))
        missing, unexpected = rec.load_state_dict({k[4:]: v for k, v in state.items()}, strict=False)
        # pop_half_life: absent in folders written before trending popularity (static, its default)
        missing = [m for m in missing if m not in ("cf.W", "pop", "pop_half_life")]
        if missing or unexpected:
            raise ConfigError(f"{self.path}: recommender weights do not match its config (missing {missing}, unexpected {unexpected})")
        tower.eval()
        rec.eval()
        return tower, rec


def build_modules(conf: Config, n_items: int, cf_table, pop: np.ndarray, tower=None, enc_path: Path | None = None,
                  cf_short=None):
    """(item tower, recommender) for ``conf``: the tower is built from ``enc_path`` unless given (a
    shared tower in multi-domain training, or one loaded from a model folder); ``cf_short``: the short-history
    CF tables ``[(T, (idx, w))]`` (a model folder's), or None."""
    from .models import CFPart, ItemTower, Recommender, load_hf_encoder

    if tower is None:
        tower = ItemTower(load_hf_encoder(enc_path), conf.encoder.pooling, conf.encoder.trainable_layers,
                          conf.encoder.adapter)
    d = tower.dim
    um = resolve(USER_MODELS, conf.user_model.kind)(d, heads=conf.user_model.heads, hidden=conf.user_model.hidden,
                                                      max_history=conf.user_model.max_history)
    head = resolve(HEADS, conf.head.kind)(d, hidden=conf.head.hidden)
    cf = CFPart(conf.cf.kind, n_items, cf_table, conf.cf.mf_dim, conf.cf.recency_floor)
    cf.set_short(cf_short)
    return tower, Recommender(d, um, head, cf, pop)


def short_file(T: int, part: str) -> str:
    """File name of the short-history CF table for histories of at most ``T`` items (``part``: idx or w)."""
    return f"cf_short{T}_{part}.npy"


MODEL_MARKERS = ("config.toml", "recommender.safetensors")  # what every model folder (teacher, student) holds


def check_replaceable(out: Path, sources: list[Path], markers: tuple[str, ...], kind: str) -> None:
    """Refuse an output folder that a writer replacing it whole (``<out>.tmp`` renamed over it, ``<out>`` deleted
    first) would wrongly destroy: one that is or holds a ``sources`` folder (the model being read), or that
    exists, is not empty and lacks the ``markers`` of a ``kind`` folder (anything else: a user's files).
    ``--out ~/work`` once meant ``rm -rf ~/work``. (``<out>.tmp``, ``<out>.rejected``: the writers' own.)"""
    where = out.resolve()
    for src in sources:
        src = src.resolve()
        if src == where or where in src.parents:
            raise ConfigError(f"--out {out} holds {src}, which this command reads; choose another folder for the {kind}")
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or all((out / m).exists() for m in markers))):
        raise ConfigError(f"--out {out} exists and is not a {kind} folder (no {' + '.join(markers)}): it would be "
                          f"replaced whole, so choose a new or empty one; nothing was written")


def save_encoder(bert, tokenizer_src: Path, max_tokens: int, dst: Path) -> None:
    """Write a Hugging Face encoder and its tokenizer files to ``dst`` (swapped in with one rename)."""
    tmp = dst.with_name(dst.name + ".tmp")
    with scratch_folder(tmp):
        bert.save_pretrained(str(tmp), safe_serialization=True)
        load_tokenizer(tokenizer_src / "tokenizer.json", max_tokens).save(str(tmp / "tokenizer.json"))
        for f in TOKENIZER_FILES:
            if (tokenizer_src / f).is_file():
                shutil.copy(tokenizer_src / f, tmp / f)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)


def save_model(out: Path, conf: Config, enc_path: Path, tower, rec, emb: np.ndarray, pop: np.ndarray, cf_table,
               items, texts: list[str], first_seen: np.ndarray, cold_items: np.ndarray, report: dict,
               cf_short=None) -> None:
    """Write a trained model folder (see the module docstring) from trained modules and their data
    (``cf_short``: the short-history CF tables ``[(T, (idx, w))]``, scales folded in, or None)."""
    from safetensors.torch import save_file

    save_encoder(tower.bert, enc_path, conf.encoder.max_tokens, out / "encoder")
    params = {"tower.adapter.weight": tower.adapter.weight, "tower.adapter.bias": tower.adapter.bias}
    params.update({f"rec.{k}": v for k, v in rec.state_dict().items() if k not in ("cf.W", "pop")})
    save_file(cpu_tensors(params), str(out / "recommender.safetensors"))
    atomic_save_npy(out / "item_embeddings.npy", emb.astype(np.float32))
    atomic_save_npy(out / "popularity.npy", pop)
    if cf_table is not None:
        atomic_save_npy(out / "cf_idx.npy", cf_table[0])
        atomic_save_npy(out / "cf_w.npy", cf_table[1])
    keep = set()
    for T, (idx, w) in cf_short or []:
        for part, arr in (("idx", idx), ("w", w)):
            atomic_save_npy(out / short_file(T, part), arr)
            keep.add(short_file(T, part))
    for f in out.glob("cf_short*.npy"):  # retrained into the same folder: no stale table left behind
        if f.name not in keep:
            f.unlink()
    atomic_write_json(out / "items.json", {
        "ids": items.ids, "title": items.title, "categories": [list(c) for c in items.categories],
        "year": items.year.tolist(), "text": texts, "first_seen": first_seen.tolist(), "cold": cold_items.tolist(),
    })
    atomic_write_text(out / "config.toml", cfgmod.dumps_toml(cfgmod.to_dict(conf)))
    atomic_write_json(out / "report.json", report)
    atomic_write_json(out / "teacher.json", {"format": FORMAT, "dim": tower.dim, "n_items": int(len(items)),
                                             "encoder_source": str(enc_path)})


def save_student(teacher: "ModelDir", out: Path, bert, adapter, emb: np.ndarray, report: dict, conf_toml: str) -> None:
    """Write a distilled student's folder: the teacher's folder with the encoder, the adapter and the item
    embeddings replaced, plus ``distill.json``/``distill.toml``; swapped in with one rename."""
    from safetensors.torch import load_file, save_file

    tmp = Path(str(out) + ".tmp")
    with scratch_folder(tmp):
        # the teacher's training curves stay with the teacher; the student's own (distill) come along
        shutil.copytree(teacher.path, tmp, ignore=shutil.ignore_patterns("checkpoint*", "encoder", TB_DIR))
        if (out / TB_DIR).is_dir():
            shutil.copytree(out / TB_DIR, tmp / TB_DIR)
        bert.save_pretrained(str(tmp / "encoder"), safe_serialization=True)
        for f in ("tokenizer.json", *TOKENIZER_FILES):
            if (teacher.path / "encoder" / f).is_file():
                shutil.copy(teacher.path / "encoder" / f, tmp / "encoder" / f)
        st = load_file(str(teacher.path / "recommender.safetensors"))
        st.update(cpu_tensors({"tower.adapter.weight": adapter.weight, "tower.adapter.bias": adapter.bias}))
        save_file(st, str(tmp / "recommender.safetensors"))
        atomic_save_npy(tmp / "item_embeddings.npy", emb)
        atomic_write_json(tmp / "distill.json", report)
        atomic_write_text(tmp / "distill.toml", conf_toml)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
