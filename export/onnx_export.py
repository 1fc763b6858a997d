"""ONNX export of the item/query encoder, the user model and the scoring head, with parity checks.

Uses the legacy TorchScript exporter (``dynamo=False``) with eager attention: measured here to
match PyTorch to ~2e-7.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from . import require

log = logging.getLogger(__name__)

OPSET = 17


def _torch():
    return require("torch", "export", "ONNX export")


def _cut_positions(tower, max_tokens: int):
    """A copy of ``tower`` whose position table holds only ``max_tokens`` rows.

    Why: the bundle never feeds more than its ``max_tokens`` (the runtime truncates to it), and
    the other 480 of MiniLM's 512 position rows are dead weight on the device (0.2-0.7 MB).
    """
    import copy

    torch = _torch()
    emb = tower.bert.embeddings
    if emb.position_embeddings.num_embeddings <= max_tokens:
        return tower
    t = copy.deepcopy(tower)
    e = t.bert.embeddings
    old = e.position_embeddings
    e.position_embeddings = torch.nn.Embedding(max_tokens, old.embedding_dim)
    with torch.no_grad():
        e.position_embeddings.weight.copy_(old.weight[:max_tokens])
    if hasattr(e, "position_ids"):
        e.register_buffer("position_ids", e.position_ids[:, :max_tokens].clone(), persistent=False)
    t.bert.config.max_position_embeddings = max_tokens
    return t


def export_encoder(tower, path: str | Path, max_tokens: int | None = None) -> Path:
    """tokens + mask -> pooled, adapted, L2-normalised embedding; dynamic batch and sequence
    (up to ``max_tokens`` tokens when given: the position table is cut to that length)."""
    torch = _torch()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tower.eval()
    if max_tokens:
        tower = _cut_positions(tower, max_tokens)
    ids = torch.randint(100, 2000, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    with torch.no_grad():
        torch.onnx.export(
            tower, (ids, mask), str(path), dynamo=False, opset_version=OPSET,
            input_names=["input_ids", "attention_mask"], output_names=["embedding"],
            dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                          "embedding": {0: "batch"}},
        )
    return path


def export_user_model(rec, dim: int, path: str | Path) -> Path:
    """history embeddings [B, H, D] + mask [B, H] -> user vector [B, D], attention weights [B, H]."""
    torch = _torch()

    class Wrap(torch.nn.Module):
        def __init__(self, um):
            super().__init__()
            self.um = um

        def forward(self, hist, mask):
            return self.um(hist, mask)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w = Wrap(rec.user_model).eval()
    h = torch.nn.functional.normalize(torch.randn(2, 7, dim), dim=-1)
    m = torch.ones(2, 7)
    m[1, 4:] = 0
    with torch.no_grad():
        torch.onnx.export(
            w, (h, m), str(path), dynamo=False, opset_version=OPSET,
            input_names=["history", "history_mask"], output_names=["user", "weights"],
            dynamic_axes={"history": {0: "batch", 1: "hist"}, "history_mask": {0: "batch", 1: "hist"},
                          "user": {0: "batch"}, "weights": {0: "batch", 1: "hist"}},
        )
    return path


def export_head(rec, dim: int, path: str | Path) -> Path:
    """user [B, D], candidates [B, C, D], cf [B, C], pop [B, C] -> scores [B, C]."""
    torch = _torch()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = rec.head.eval()
    u = torch.randn(2, dim)
    e = torch.randn(2, 5, dim)
    cf, pop = torch.rand(2, 5), torch.rand(2, 5)
    with torch.no_grad():
        torch.onnx.export(
            head, (u, e, cf, pop), str(path), dynamo=False, opset_version=OPSET,
            input_names=["user", "candidates", "cf", "pop"], output_names=["scores"],
            dynamic_axes={"user": {0: "batch"}, "candidates": {0: "batch", 1: "cand"},
                          "cf": {0: "batch", 1: "cand"}, "pop": {0: "batch", 1: "cand"}, "scores": {0: "batch", 1: "cand"}},
        )
    return path


def ort_session(path: str | Path, threads: int = 1):
    from genre_edge.ortload import onnxruntime

    ort = onnxruntime()

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def encoder_parity(tower, onnx_path: str | Path, ids: np.ndarray, mask: np.ndarray) -> dict:
    """Max abs difference and min cosine between PyTorch and ONNX Runtime embeddings."""
    torch = _torch()
    with torch.no_grad():
        ref = tower(torch.as_tensor(ids), torch.as_tensor(mask)).numpy()
    got = ort_session(onnx_path).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    return {"max_abs_diff": float(np.abs(ref - got).max()), "min_cosine": float(cosine_rows(ref, got).min())}


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(na * nb, 1e-12)
