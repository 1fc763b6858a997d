"""Write a self-describing, quality-gated bundle: ONNX models per variant, catalog, manifest."""
from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import shutil
import tarfile
from pathlib import Path

import numpy as np

from genre_edge import __version__
from genre_edge import config as cfg
from genre_edge.bundle import FORMAT, sha256_file
# symmetric int8 per item: the bundle's catalog and the runtime's int8 scoring index quantize alike
from genre_edge.catalog_index import quantize_rows
from genre_edge.errors import GenreError
from genre_edge.fsutil import atomic_save_npy, atomic_write_json
from genre_edge.profile import load_profile

from .loading import ModelDir
from .onnx_export import OPSET, cosine_rows, encoder_parity, export_encoder, export_head, export_user_model, ort_session
from .quantize import QUANT_PRESETS, SAME_FILE, quantize

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_PROFILES = ("x86-avx512-vnni", "rpi4", "rpi5")


class QualityGateError(GenreError):
    """The int8 student keeps too little of the teacher's quality."""


def _variants_for(profiles: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name in profiles:
        p = load_profile(name)
        out.setdefault(SAME_FILE.get(p.variant, p.variant), []).append(p.name)
    return out


def _encode_onnx(path: Path, ids: np.ndarray, mask: np.ndarray, batch: int = 64) -> np.ndarray:
    sess = ort_session(path, threads=os.cpu_count() or 1)
    out = []
    for a in range(0, len(ids), batch):
        m = mask[a : a + batch]
        L = max(1, int(m.sum(1).max()))
        out.append(sess.run(None, {"input_ids": ids[a : a + batch, :L], "attention_mask": m[:, :L]})[0])
    return np.concatenate(out)


def _latency_ms(fn, reps: int = 30, warmup: int = 5) -> float:
    """Median milliseconds per call (warm-up first)."""
    from genre_edge.bench import time_calls

    return time_calls(fn, reps, warmup)["p50"]


CATALOG_DTYPES = ("int8", "fp16")


def export_bundle(model_dir: str | Path, out: str | Path, profiles: list[str] | None = None,
                  teacher_dir: str | Path | None = None, min_kept: float = 0.97, keep_fp32: bool = False,
                  tar: bool = False, data_dir: str | None = None, progress=print,
                  catalog_dtype: str = "int8", cf_neighbors: int | None = None,
                  extra_variants: tuple[str, ...] = ()) -> dict:
    """Export ``model_dir`` (a student or a teacher) to a bundle at ``out``.

    Quality is measured for the teacher (``teacher_dir``, default ``model_dir``), the model fp32
    (ONNX) and each quantized variant; export fails when the default CPU variant keeps less than
    ``min_kept`` of the teacher's validation nDCG@10. ``catalog_dtype`` (``int8`` with a scale per
    item, or ``fp16``) is how the precomputed item embeddings are stored; the quality rows of the
    default variant are measured with the stored (de-quantized) embeddings, as the device sees them.
    ``cf_neighbors`` keeps only the strongest N neighbours per item in the shipped CF table (the
    table is sorted by |weight|), measured the same way; default: the table as trained.
    ``extra_variants`` adds encoder variants no listed profile asks for (e.g. ``int8-qdq`` to compare).
    """
    bad = [v for v in extra_variants if v not in QUANT_PRESETS]
    if bad:
        raise ValueError(f"unknown variant {bad[0]!r}; choose from {', '.join(QUANT_PRESETS)}")
    if catalog_dtype not in CATALOG_DTYPES:
        raise ValueError(f"catalog_dtype must be one of {', '.join(CATALOG_DTYPES)}, not {catalog_dtype!r}")
    import torch

    from genre_edge.evaluate import category_features, evaluate

    from .text import tokenize
    from .train import Prepared, Scorer

    torch.set_num_threads(os.cpu_count() or 1)
    M = ModelDir(model_dir)
    T = ModelDir(teacher_dir) if teacher_dir else M
    if cf_neighbors is not None:
        if cf_neighbors < 1:
            raise ValueError(f"cf_neighbors must be >= 1, not {cf_neighbors}")
        if M.cf_table is None:
            raise ValueError("cf_neighbors: this model has no neighbour table (cf.kind is not cooccurrence/ease)")
        M.cf_table = (M.cf_table[0][:, :cf_neighbors], M.cf_table[1][:, :cf_neighbors])
    profiles = list(profiles or DEFAULT_PROFILES)
    variants = _variants_for(profiles)
    for v in extra_variants:
        variants.setdefault(SAME_FILE.get(v, v), [])
    out = Path(out)
    work = Path(str(out) + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    (work / "models").mkdir(parents=True)
    (work / "catalog").mkdir()
    tower, rec = M.modules()
    d = tower.dim
    c = M.conf
    texts = M.items["text"]
    ids, mask = tokenize(M.path / "encoder" / "tokenizer.json", texts, c.encoder.max_tokens)
    # --- ONNX export + parity against PyTorch
    fp32 = work / "models" / "encoder.fp32.onnx"
    progress("exporting encoder to ONNX (fp32)...")
    export_encoder(tower, fp32, c.encoder.max_tokens)
    parity = {"encoder_fp32_vs_torch": encoder_parity(tower, fp32, ids[:64], mask[:64])}
    user_fp32 = export_user_model(rec, d, work / "models" / "user.fp32.onnx")
    h = torch.nn.functional.normalize(torch.randn(3, 9, d), dim=-1)
    hm = torch.ones(3, 9)
    hm[2, 5:] = 0
    with torch.no_grad():
        ref_u = rec.user_model(h, hm)[0].numpy()
    got_u = ort_session(user_fp32).run(None, {"history": h.numpy(), "history_mask": hm.numpy()})[0]
    parity["user_fp32_vs_torch"] = {"max_abs_diff": float(np.abs(ref_u - got_u).max())}
    head_files = {}
    if c.head.kind == "mlp":
        head_files["fp32"] = export_head(rec, d, work / "models" / "head.fp32.onnx")
    # --- quantized variants
    enc_files = {"fp32": fp32}
    for v in variants:
        if v == "fp32":
            continue
        preset = QUANT_PRESETS[v]
        dst = work / "models" / f"encoder.{v}.onnx"
        progress(f"quantizing encoder: {v} ({preset.doc})...")
        calib = None
        if v == "int8-qdq":  # one item text per feed, every 4th item: covers the catalog's text lengths
            calib = [{"input_ids": ids[i : i + 1, : max(1, int(mask[i].sum()))],
                      "attention_mask": mask[i : i + 1, : max(1, int(mask[i].sum()))]} for i in range(0, len(ids), 4)]
        quantize(fp32, dst, v, calib)
        enc_files[v] = dst
        if c.head.kind == "mlp" and preset.dtype == "int8":
            # the small MLP head is quantized dynamically for every int8 variant (nothing to calibrate)
            head_files[v] = quantize(head_files["fp32"], work / "models" / f"head.{v}.onnx",
                                     "int8-avx512vnni" if v == "int8-qdq" else v)
    # --- quality: teacher fp32 vs model fp32 vs each variant on the validation split
    progress("measuring quality of each variant against the teacher...")
    prep = Prepared(c, data_dir)
    feats = category_features(prep.data.items.categories)
    t_tower, t_rec = T.modules()

    def metrics(rec_, emb):
        r = evaluate(Scorer(c, rec_, emb, prep.hist), prep.split, "valid", item_features=feats)
        return {k: r[k] for k in ("ndcg@10", "recall@20", "auc_sampled")}

    rows = {"teacher-torch-fp32": {**metrics(t_rec, T.emb), "cos_min": 1.0, "cos_mean": 1.0}}
    embs = {}
    for v, f in enc_files.items():
        e = _encode_onnx(f, ids, mask)
        embs[v] = e
        cos = cosine_rows(e, T.emb)
        rows[f"model-onnx-{v}"] = {**metrics(rec, e), "cos_min": float(cos.min()), "cos_mean": float(cos.mean())}
    # latency per query (batch 1, 1 thread, real item texts as queries)
    q_ids = [ids[i : i + 1, : max(1, int(mask[i].sum()))] for i in range(0, len(ids), max(1, len(ids) // 50))]
    torch.set_num_threads(1)
    it = iter(range(10**9))

    def run_teacher():
        x = torch.as_tensor(q_ids[next(it) % len(q_ids)])
        with torch.no_grad():
            t_tower(x, torch.ones_like(x))
    rows["teacher-torch-fp32"]["latency_ms"] = _latency_ms(run_teacher)
    for v, f in enc_files.items():
        s = ort_session(f, threads=1)
        it2 = iter(range(10**9))

        def run(s=s, it2=it2):
            x = q_ids[next(it2) % len(q_ids)]
            s.run(None, {"input_ids": x, "attention_mask": np.ones_like(x)})
        rows[f"model-onnx-{v}"]["latency_ms"] = _latency_ms(run)
    torch.set_num_threads(os.cpu_count() or 1)
    t_nd = rows["teacher-torch-fp32"]["ndcg@10"]
    t_lat = rows["teacher-torch-fp32"]["latency_ms"]
    for r in rows.values():
        r["ndcg_kept"] = r["ndcg@10"] / t_nd if t_nd else float("nan")
        r["speedup"] = t_lat / r["latency_ms"] if r.get("latency_ms") else float("nan")
    default_v = next((v for v in variants if v != "fp32"), "fp32")
    q_emb, scales = quantize_rows(embs[default_v]) if catalog_dtype == "int8" else (None, None)
    if q_emb is not None:  # the gate judges what ships: int8 encoder *and* int8 catalog
        deq = q_emb.astype(np.float32) * scales[:, None]
        row = rows[f"model-onnx-{default_v}"]
        row.update(metrics(rec, deq))
        row["ndcg_kept"] = row["ndcg@10"] / t_nd if t_nd else float("nan")
        row["catalog"] = "int8"
    kept = rows[f"model-onnx-{default_v}"]["ndcg_kept"]
    gate = {"variant": default_v, "min_kept": min_kept, "kept": kept, "passed": bool(kept >= min_kept)}
    # --- catalog: embeddings from the default variant (what on-device updates will produce too)
    cat_meta = {}
    if q_emb is not None:
        atomic_save_npy(work / "catalog" / "embeddings.int8.npy", q_emb)
        atomic_save_npy(work / "catalog" / "embedding_scales.npy", scales)
        cat_meta = {"embeddings": "catalog/embeddings.int8.npy", "embedding_scales": "catalog/embedding_scales.npy"}
    else:
        atomic_save_npy(work / "catalog" / "embeddings.fp16.npy", embs[default_v].astype(np.float16))
        cat_meta = {"embeddings": "catalog/embeddings.fp16.npy"}
    atomic_save_npy(work / "catalog" / "popularity.npy", M.pop.astype(np.float32))
    atomic_write_json(work / "catalog" / "items.json", {k: M.items[k] for k in ("ids", "title", "categories", "year", "first_seen")})
    cf_meta = {"kind": c.cf.kind}
    if c.cf.kind != "none":  # the recency weighting calibrated on validation, applied on the device too
        cf_meta.update(recency_half_life=float(rec.cf.recency[0]), recency_floor=float(rec.cf.recency[1]))
    if c.cf.kind in ("cooccurrence", "ease"):
        # int16 item ids when the catalog allows (the runtime widens them at load): -0.7 MB on ml-100k
        idx_t = "int16" if len(M.items["ids"]) <= np.iinfo(np.int16).max else "int32"
        atomic_save_npy(work / "catalog" / f"cf_idx.{idx_t}.npy", M.cf_table[0].astype(idx_t))
        atomic_save_npy(work / "catalog" / "cf_w.fp16.npy", M.cf_table[1].astype(np.float16))
        cf_meta.update(idx=f"catalog/cf_idx.{idx_t}.npy", w="catalog/cf_w.fp16.npy")
    elif c.cf.kind == "mf":
        atomic_save_npy(work / "catalog" / "mf_P.npy", rec.cf.P.weight.detach().numpy())
        atomic_save_npy(work / "catalog" / "mf_Q.npy", rec.cf.Q.weight.detach().numpy())
        cf_meta.update(P="catalog/mf_P.npy", Q="catalog/mf_Q.npy")
    # compact JSON (no indentation): the same tokenizer, ~0.3 MB smaller
    from genre_edge.tokenize import load_tokenizer

    load_tokenizer(M.path / "encoder" / "tokenizer.json", c.encoder.max_tokens).save(str(work / "tokenizer.json"),
                                                                                       pretty=False)
    if not keep_fp32 and "fp32" not in variants:
        os.remove(fp32)
        enc_files.pop("fp32")
    bw = rec.head.blend_weights()
    cf_w = bw["cf"] if c.cf.kind != "none" else 0.0
    presets = {
        "hybrid": {"content": bw["content"], "cf": cf_w, "pop": bw["pop"]},
        "content": {"content": max(bw["content"], 1.0), "cf": 0.0, "pop": 0.0},
        "cf": {"content": 0.0, "cf": cf_w, "pop": bw["pop"] if c.cf.kind != "none" else 1.0},
        "query": {"content": 10.0, "cf": cf_w, "pop": bw["pop"], "query_weight": 0.7},
    }
    rel = lambda p: str(p.relative_to(work)).replace(os.sep, "/")  # noqa: E731
    models = {"encoder": {}, "user": {"fp32": {"file": "models/user.fp32.onnx", "opset": OPSET, "preset": "fp32"}}}
    for v, f in enc_files.items():
        models["encoder"][v] = {"file": rel(f), "opset": OPSET, "preset": v, "dtype": QUANT_PRESETS[v].dtype,
                                "profiles": variants.get(v, [])}
    if head_files:
        models["head"] = {v: {"file": rel(f), "opset": OPSET, "preset": v} for v, f in head_files.items()}
    import onnxruntime
    import tokenizers
    import transformers

    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "genre_edge": __version__,
        "source_config": cfg.to_dict(c),
        "packages": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "onnxruntime": onnxruntime.__version__, "tokenizers": tokenizers.__version__,
                     "python": platform.python_version()},
        "dim": d,
        "max_tokens": c.encoder.max_tokens,
        "pooling": c.encoder.pooling,
        "tokenizer": "tokenizer.json",
        "models": models,
        "catalog": {"items": "catalog/items.json", **cat_meta,
                    "popularity": "catalog/popularity.npy", "cf": cf_meta, "n_items": len(M.items["ids"])},
        "scoring": {"template": c.encoder.template, "user_model": c.user_model.kind, "max_history": c.user_model.max_history,
                    "head": c.head.kind, "rerank_top": c.head.rerank_top, "presets": presets,
                    "defaults": {"strategy": "hybrid", "mmr_lambda": 1.0, "freshness_half_life_days": 0.0,
                                 "popularity_penalty": 0.0, "exploration": 0.0}},
        "quality": {"split": "valid", "rows": rows, "gate": gate, "parity": parity,
                    "summary": {"variant": default_v, "ndcg_kept": kept,
                                "speedup_vs_torch_teacher": rows[f"model-onnx-{default_v}"]["speedup"]}},
    }
    files = {}
    for p in sorted(work.rglob("*")):
        if p.is_file() and p.name != "manifest.json":
            files[rel(p)] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    manifest["files"] = files
    atomic_write_json(work / "manifest.json", manifest)
    if not gate["passed"]:
        fail = Path(str(out) + ".rejected")
        shutil.rmtree(fail, ignore_errors=True)
        os.replace(work, fail)
        raise QualityGateError(
            f"quality gate failed: {default_v} keeps {kept:.3f} of the teacher's validation nDCG@10, "
            f"below the required {min_kept:.3f}; the rejected bundle is in {fail} for inspection")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(work, out)
    size = sum(f["bytes"] for f in files.values())
    result = {"bundle": str(out), "bytes": size, "manifest": manifest}
    if tar:
        tgz = Path(str(out) + ".tar.gz")
        tmp = Path(str(tgz) + ".tmp")
        with tarfile.open(tmp, "w:gz") as tf:
            tf.add(out, arcname=out.name)
        os.replace(tmp, tgz)
        result["tar"] = str(tgz)
    return result
