"""Write a self-describing, quality-gated bundle: ONNX models per variant, catalog, manifest.

:func:`export_bundle` runs five stages over one :class:`BundleBuild`:
export + parity (PyTorch vs ONNX) -> quantize (one file per variant) -> measure + gate (quality and
latency of every variant against the teacher) -> catalog (embeddings, popularity, CF tables) ->
manifest + publish (typed :class:`~genre_edge.bundle.Manifest`, sha256 of every file, one rename).
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from genre_edge import __version__
from genre_edge import config as cfg
from genre_edge.bench.timing import time_calls
from genre_edge.bundle import (FORMAT, FORMAT_VERSION, CatalogSpec, CFSpec, FileEntry, Gate, Manifest, ModelEntry, Models,
                               Preset, Quality, Scoring, ScoringDefaults, ShortCFSpec, TrendSpec, manifest_json,
                               sha256_file)
# symmetric int8 per item: the bundle's catalog and the runtime's int8 scoring index quantize alike
from genre_edge.catalog_index import quantize_rows
from genre_edge.errors import WRITE_FAILURES, ConfigError, GenreError, storage_error
from genre_edge.fsutil import atomic_save_npy, atomic_write_json, scratch_folder
from genre_edge.profile import load_profile
from genre_edge.tokenize import load_tokenizer
from genre_edge.variants import SAME_FILE

from .evaluate import category_features, evaluate
from .model_folder import ModelDir, check_replaceable
from .onnx_export import OPSET, cosine_rows, encoder_parity, export_encoder, export_head, export_user_model, ort_session
from .prepare import Prepared
from .quantize import QUANT_PRESETS, quantize
from .requests import CategoryMembers, for_items
from .scoring import Scorer, popularity_rows
from .trend import end_counts
from .text import tokenize
from .vocabulary import vocabulary

log = logging.getLogger(__name__)

DEFAULT_PROFILES = ("x86-avx512-vnni", "rpi4", "rpi5")
CATALOG_DTYPES = ("int8", "fp16")


class QualityGateError(GenreError):
    """The int8 student keeps too little of the teacher's quality."""


@dataclass
class BundleBuild:
    """What the stages pass along: inputs, the work folder, and what each stage produced."""
    M: ModelDir  # the model to export
    T: ModelDir  # the teacher it is measured against
    work: Path  # <out>.tmp: renamed to <out> only when everything passed
    variants: dict[str, list[str]]  # variant -> profiles that asked for it
    catalog_dtype: str
    data_dir: str | None
    progress: Callable[[str], Any]
    ids: np.ndarray = None  # tokenized item texts (the catalog, quality and latency all read them)
    mask: np.ndarray = None
    tower: Any = None
    rec: Any = None
    parity: dict = field(default_factory=dict)
    enc_files: dict[str, Path] = field(default_factory=dict)
    head_files: dict[str, Path] = field(default_factory=dict)
    embs: dict[str, np.ndarray] = field(default_factory=dict)
    rows: dict[str, dict] = field(default_factory=dict)
    default_variant: str = "fp32"
    catalog_rows: tuple | None = None  # (int8 rows, per-row scales) of the default variant, as stored
    gate: Gate | None = None
    catalog: CatalogSpec | None = None
    given: tuple | None = None  # (manifest, ids, embeddings) of --catalog-embeddings (bulk_embed.py)

    def rel(self, p: Path) -> str:
        return str(p.relative_to(self.work)).replace(os.sep, "/")


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


def _given_embeddings(b: BundleBuild, v: str, f: Path) -> np.ndarray:
    """The --catalog-embeddings rows for variant ``v``, in catalog order, checked against this export."""
    from .bulk_embed import _sha256

    m, ids, emb = b.given
    if _sha256(f) != m["encoder_sha256"]:
        raise ValueError(f"--catalog-embeddings were made with another {v} encoder file ({m['encoder_file']} of bundle "
                         f"{m['bundle']}): embed again with a bundle from this model (same inputs give the same file)")
    where = {iid: i for i, iid in enumerate(ids)}
    cat = [str(i) for i in b.M.items["ids"]]
    missing = [i for i in cat if i not in where]
    if missing:
        raise ValueError(f"--catalog-embeddings lack {len(missing)} of the {len(cat)} catalog items (e.g. {missing[0]!r})")
    e = emb[[where[i] for i in cat]]
    sample = np.linspace(0, len(cat) - 1, min(64, len(cat))).astype(int)
    here = _encode_onnx(f, b.ids[sample], b.mask[sample])
    cos = float((here * e[sample]).sum(1).min())
    if cos < 0.99:
        raise ValueError(f"--catalog-embeddings disagree with this export's encoding of the same items (min cosine "
                         f"{cos:.3f} on {len(sample)} items): were the texts rendered with another template?")
    b.progress(f"catalog embeddings of {v} taken from {m['engine']} bulk embedding ({m['rows']} rows; sample cosine "
               f">= {cos:.4f})")
    return e


def _latency_ms(fn, reps: int = 30, warmup: int = 5) -> float:
    """Median milliseconds per call (warm-up first)."""
    return time_calls(fn, reps, warmup)["p50"]


def export_bundle(model_dir: str | Path, out: str | Path, profiles: list[str] | None = None,
                  teacher_dir: str | Path | None = None, min_kept: float = 0.97, keep_fp32: bool = False,
                  tar: bool = False, data_dir: str | None = None, progress=print,
                  catalog_dtype: str = "int8", cf_neighbors: int | None = None,
                  extra_variants: tuple[str, ...] = (), min_request_kept: float = 0.9,
                  min_cold_kept: float = 0.8, catalog_embeddings: str | Path | None = None) -> dict:
    """Export ``model_dir`` (a student or a teacher) to a bundle at ``out``.

    Quality is measured for the teacher (``teacher_dir``, default ``model_dir``), the model fp32
    (ONNX) and each quantized variant; export fails when the default CPU variant keeps less than
    ``min_kept`` of the teacher's validation nDCG@10. ``catalog_dtype`` (``int8`` with a scale per
    item, or ``fp16``) is how the precomputed item embeddings are stored; the quality rows of the
    default variant are measured with the stored (de-quantized) embeddings, as the device sees them.
    ``cf_neighbors`` keeps only the strongest N neighbours per item in the shipped CF table(s) (each
    table is sorted by |weight|), measured the same way; default: the tables as trained.
    ``extra_variants`` adds encoder variants no listed profile asks for (e.g. ``int8-qdq`` to compare).
    Every shipped encoder variant must keep ``min_kept`` of the teacher's validation nDCG@10,
    ``min_cold_kept`` of its cold-validation nDCG@10 (items held out of training) and ``min_request_kept``
    of its precision@10 on generated free-text requests (the ``valid`` part of export/requests.py,
    ranked against the shipped catalog). ``catalog_embeddings``: a :func:`~genre_edge_export.bulk_embed.
    embed_catalog` folder (e.g. embedded on a Ray cluster) used as the item embeddings of the variant it was
    made with, instead of encoding the catalog here: the encoder file's sha256 must match, every item must
    be there, and a sample re-encoded here must agree (cosine >= 0.99; catches another text template).
    Returns ``{"bundle", "bytes", "manifest"}`` (+ ``"tar"``), the manifest typed.
    """
    bad = [v for v in extra_variants if v not in QUANT_PRESETS]
    if bad:
        raise ValueError(f"unknown variant {bad[0]!r}; choose from {', '.join(QUANT_PRESETS)}")
    if catalog_dtype not in CATALOG_DTYPES:
        raise ValueError(f"catalog_dtype must be one of {', '.join(CATALOG_DTYPES)}, not {catalog_dtype!r}")
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    M = ModelDir(model_dir)
    T = ModelDir(teacher_dir) if teacher_dir else M
    if cf_neighbors is not None:
        if cf_neighbors < 1:
            raise ValueError(f"cf_neighbors must be >= 1, not {cf_neighbors}")
        if M.cf_table is None:
            raise ValueError("cf_neighbors: this model has no neighbour table (cf.kind is not cooccurrence/ease)")
        M.cf_table = (M.cf_table[0][:, :cf_neighbors], M.cf_table[1][:, :cf_neighbors])
        # the short-history tables too: every table is sorted by |weight|
        M.cf_short = [(T, (i[:, :cf_neighbors], w[:, :cf_neighbors])) for T, (i, w) in M.cf_short]
    variants = _variants_for(list(profiles or DEFAULT_PROFILES))
    for v in extra_variants:
        variants.setdefault(SAME_FILE.get(v, v), [])
    out = Path(out)
    work = Path(str(out) + ".tmp")
    check_replaceable(out, [Path(model_dir)] + ([Path(teacher_dir)] if teacher_dir else []), ("manifest.json",), "bundle")
    # a failed export (a full disk, a bad input, Ctrl-C) leaves no half-written work folder keeping the disk full
    try:
        with scratch_folder(work):
            (work / "models").mkdir(parents=True)
            (work / "catalog").mkdir()
            b = BundleBuild(M, T, work, variants, catalog_dtype, data_dir, progress)
            if catalog_embeddings is not None:
                from .bulk_embed import read_embeddings

                b.given = read_embeddings(catalog_embeddings)
                if b.given[0]["variant"] not in variants:
                    raise ValueError(f"--catalog-embeddings were made with variant {b.given[0]['variant']!r}, which "
                                     f"this export does not build (it builds {', '.join(variants)})")
            export_models(b)
            quantize_variants(b)
            measure(b, min_kept, min_request_kept, min_cold_kept)
            write_catalog(b)
            manifest = write_manifest(b, keep_fp32)
    except OSError as exc:
        if exc.errno in WRITE_FAILURES:
            raise storage_error(exc, "the bundle", work.parent) from None
        raise
    return publish(b, manifest, out, tar)


# ------------------------------------------------------------------ stage 1: ONNX export + parity
def export_models(b: BundleBuild) -> None:
    """The fp32 encoder, user model (and MLP head) as ONNX, each checked against PyTorch."""
    import torch

    b.tower, b.rec = b.M.modules()
    d, c = b.tower.dim, b.M.conf
    b.ids, b.mask = tokenize(b.M.path / "encoder" / "tokenizer.json", b.M.items["text"], c.encoder.max_tokens)
    fp32 = b.work / "models" / "encoder.fp32.onnx"
    b.progress("exporting encoder to ONNX (fp32)...")
    export_encoder(b.tower, fp32, c.encoder.max_tokens)
    b.parity = {"encoder_fp32_vs_torch": encoder_parity(b.tower, fp32, b.ids[:64], b.mask[:64])}
    user_fp32 = export_user_model(b.rec, d, b.work / "models" / "user.fp32.onnx")
    # fixed inputs (seeded): the parity figure goes into the manifest, which must not change run to run
    h = torch.nn.functional.normalize(torch.randn(3, 9, d, generator=torch.Generator().manual_seed(0)), dim=-1)
    hm = torch.ones(3, 9)
    hm[2, 5:] = 0
    with torch.no_grad():
        ref_u = b.rec.user_model(h, hm)[0].numpy()
    got_u = ort_session(user_fp32).run(None, {"history": h.numpy(), "history_mask": hm.numpy()})[0]
    b.parity["user_fp32_vs_torch"] = {"max_abs_diff": float(np.abs(ref_u - got_u).max())}
    if c.head.kind == "mlp":
        b.head_files["fp32"] = export_head(b.rec, d, b.work / "models" / "head.fp32.onnx")
    b.enc_files["fp32"] = fp32


# ------------------------------------------------------------------ stage 2: quantized variants
def quantize_variants(b: BundleBuild) -> None:
    """One encoder file per variant (and an int8 MLP head for every int8 variant)."""
    ids, mask, fp32 = b.ids, b.mask, b.enc_files["fp32"]
    for v in b.variants:
        if v == "fp32":
            continue
        preset = QUANT_PRESETS[v]
        dst = b.work / "models" / f"encoder.{v}.onnx"
        b.progress(f"quantizing encoder: {v} ({preset.doc})...")
        calib = None
        if v == "int8-qdq":  # one item text per feed, every 4th item: covers the catalog's text lengths
            calib = [{"input_ids": ids[i : i + 1, : max(1, int(mask[i].sum()))],
                      "attention_mask": mask[i : i + 1, : max(1, int(mask[i].sum()))]} for i in range(0, len(ids), 4)]
        quantize(fp32, dst, v, calib, hf_config=b.M.path / "encoder" / "config.json")
        b.enc_files[v] = dst
        if b.M.conf.head.kind == "mlp" and preset.dtype == "int8":
            # the small MLP head is quantized dynamically for every int8 variant (nothing to calibrate)
            b.head_files[v] = quantize(b.head_files["fp32"], b.work / "models" / f"head.{v}.onnx",
                                       "int8-avx512vnni" if v == "int8-qdq" else v)


# ------------------------------------------------------------------ stage 3: measure + gate
def measure(b: BundleBuild, min_kept: float, min_request_kept: float, min_cold_kept: float) -> None:
    """Validation quality and batch-1 latency of the teacher, the model fp32 and every variant. The gate
    judges every shipped variant on what it keeps of the teacher's warm validation nDCG@10, cold-validation
    nDCG@10 (items never trained on; the lower share of all of them and of all but the one with the most
    positives) and request precision@10; the default variant with the stored catalog."""
    import torch

    b.progress("measuring quality of each variant against the teacher...")
    c, ids, mask = b.M.conf, b.ids, b.mask
    prep = Prepared(c, b.data_dir)
    feats = category_features(prep.data.items.categories)
    t_tower, t_rec = b.T.modules()

    has_cold = len(prep.split.cold_valid_items) > 0
    # a few dozen cold items can be decided by one film (Titanic holds 40% of ml-100k's cold-validation
    # positives): the gate also reads the cold items without the one with the most positives
    cold_wo_top, _ = prep.split.without_top_items("cold_valid", 1) if has_cold else (None, [])

    def scorer(rec_, emb, which):  # trending popularity (if calibrated) as of the requests of ``which``
        return Scorer(c, rec_, emb, prep.hist, pop_rows=popularity_rows(rec_, prep.split, prep.split.request_times(which)))

    def metrics(rec_, emb):
        r = evaluate(scorer(rec_, emb, "valid"), prep.split, "valid", item_features=feats)
        out = {k: r[k] for k in ("ndcg@10", "recall@20", "auc_sampled")}
        if has_cold:  # the cold-validation items: held out of training, as new items are on a device
            out["cold_ndcg@10"] = evaluate(scorer(rec_, emb, "cold_valid"), prep.split, "cold_valid",
                                           n_neg=1).get("ndcg@10", 0.0)
            wo = evaluate(scorer(rec_, emb, "cold_valid"), cold_wo_top, "cold_valid", n_neg=1).get("ndcg@10")
            if wo is not None:
                out["cold_ndcg@10_wo_top1"] = wo
        return out

    rows = {"teacher-torch-fp32": {**metrics(t_rec, b.T.emb), "cos_min": 1.0, "cos_mean": 1.0}}
    for v, f in b.enc_files.items():
        e = _given_embeddings(b, v, f) if b.given and b.given[0]["variant"] == v else _encode_onnx(f, ids, mask)
        b.embs[v] = e
        cos = cosine_rows(e, b.T.emb)
        rows[f"model-onnx-{v}"] = {**metrics(b.rec, e), "cos_min": float(cos.min()), "cos_mean": float(cos.mean())}
    # latency per query (batch 1, 1 thread, real item texts as queries)
    q_ids = [ids[i : i + 1, : max(1, int(mask[i].sum()))] for i in range(0, len(ids), max(1, len(ids) // 50))]
    torch.set_num_threads(1)
    it = iter(range(10**9))

    def run_teacher():
        x = torch.as_tensor(q_ids[next(it) % len(q_ids)])
        with torch.no_grad():
            t_tower(x, torch.ones_like(x))
    rows["teacher-torch-fp32"]["latency_ms"] = _latency_ms(run_teacher)
    for v, f in b.enc_files.items():
        s = ort_session(f, threads=1)
        it2 = iter(range(10**9))

        def run(s=s, it2=it2):
            x = q_ids[next(it2) % len(q_ids)]
            s.run(None, {"input_ids": x, "attention_mask": np.ones_like(x)})
        rows[f"model-onnx-{v}"]["latency_ms"] = _latency_ms(run)
    torch.set_num_threads(os.cpu_count() or 1)
    t_lat = rows["teacher-torch-fp32"]["latency_ms"]
    for r in rows.values():
        r["speedup"] = t_lat / r["latency_ms"] if r.get("latency_ms") else float("nan")
    b.default_variant = next((v for v in b.variants if v != "fp32"), "fp32")
    row = rows[f"model-onnx-{b.default_variant}"]
    if b.catalog_dtype == "int8":  # the gate judges what ships: int8 encoder *and* int8 catalog
        q_emb, scales = b.catalog_rows = quantize_rows(b.embs[b.default_variant])
        row.update(metrics(b.rec, q_emb.astype(np.float32) * scales[:, None]))
        row["catalog"] = "int8"
    t = rows["teacher-torch-fp32"]
    for r in rows.values():
        r["ndcg_kept"] = r["ndcg@10"] / t["ndcg@10"] if t["ndcg@10"] else float("nan")
        if has_cold:
            def kept(key, r=r):
                return r[key] / t[key] if t.get(key) else None
            r["cold_kept_all"] = kept("cold_ndcg@10")
            r["cold_kept_wo_top1"] = kept("cold_ndcg@10_wo_top1") if "cold_ndcg@10_wo_top1" in r else None
            # the gate's cold share: the lower of the two (one film cannot carry a variant through)
            ks = [k for k in (r["cold_kept_all"], r["cold_kept_wo_top1"]) if k is not None]
            r["cold_kept"] = min(ks) if ks else float("nan")
    shipped = b.catalog_rows[0].astype(np.float32) * b.catalog_rows[1][:, None] if b.catalog_rows is not None \
        else b.embs[b.default_variant].astype(np.float16).astype(np.float32)
    request_quality(b, rows, t_tower, shipped)
    b.rows = rows
    per = {v: {"warm": rows[f"model-onnx-{v}"]["ndcg_kept"],
               **({"cold": rows[f"model-onnx-{v}"]["cold_kept"]} if has_cold else {}),
               **({"request": rows[f"model-onnx-{v}"]["request_kept"]} if "request_kept" in rows[f"model-onnx-{v}"]
                  else {})}
           for v in b.enc_files if v in b.variants}  # shipped: built for a profile (fp32 only when asked for)
    need = {"warm": min_kept, "cold": min_cold_kept, "request": min_request_kept}
    ok = all(k >= need[what] for v in per.values() for what, k in v.items())
    b.gate = Gate(variant=b.default_variant, min_kept=min_kept, kept=row["ndcg_kept"], passed=bool(ok),
                  min_cold_kept=min_cold_kept, min_request_kept=min_request_kept, variants=per)


def request_quality(b: BundleBuild, rows: dict, t_tower, shipped: np.ndarray) -> None:
    """Precision@10 on the ``valid`` generated requests (whole request embedded, no history, no parser):
    the teacher against its catalog, each variant against the catalog the bundle ships. Adds
    ``request_p@10`` and ``request_kept`` (the share of the teacher's) to the rows."""
    import torch

    reqs = for_items(b.M.items, "valid", 40)
    if not reqs:
        return
    M, T = b.M, b.T
    cats, years = M.items["categories"], np.asarray(M.items["year"])
    members = CategoryMembers(cats)
    rels = [r.relevant(members, years) for r in reqs]
    texts = [r.text for r in reqs]

    def p_at_10(Q, E):
        tops = np.argsort(-(Q @ E.T), axis=1, kind="stable")[:, :10]
        return float(np.mean([rel[t].mean() for rel, t in zip(rels, tops)]))

    ids, mask = tokenize(T.path / "encoder" / "tokenizer.json", texts, T.conf.encoder.max_tokens)
    with torch.no_grad():
        q_t = t_tower(torch.as_tensor(ids), torch.as_tensor(mask)).numpy()
    t_p = p_at_10(q_t, T.emb)
    rows["teacher-torch-fp32"]["request_p@10"] = t_p
    ids, mask = tokenize(M.path / "encoder" / "tokenizer.json", texts, M.conf.encoder.max_tokens)
    for v, f in b.enc_files.items():
        rp = p_at_10(_encode_onnx(f, ids, mask), shipped)
        rows[f"model-onnx-{v}"]["request_p@10"] = rp
        rows[f"model-onnx-{v}"]["request_kept"] = rp / t_p if t_p else float("nan")


# ------------------------------------------------------------------ stage 4: catalog
def write_catalog(b: BundleBuild) -> None:
    """Item embeddings from the default variant (what on-device updates will produce too), popularity,
    item metadata, CF tables and the tokenizer."""
    M, c, cat = b.M, b.M.conf, b.work / "catalog"
    if b.catalog_rows is not None:
        q_emb, scales = b.catalog_rows
        atomic_save_npy(cat / "embeddings.int8.npy", q_emb)
        atomic_save_npy(cat / "embedding_scales.npy", scales)
        files = {"embeddings": "catalog/embeddings.int8.npy", "embedding_scales": "catalog/embedding_scales.npy"}
    else:
        atomic_save_npy(cat / "embeddings.fp16.npy", b.embs[b.default_variant].astype(np.float16))
        files = {"embeddings": "catalog/embeddings.fp16.npy"}
    atomic_save_npy(cat / "popularity.npy", M.pop.astype(np.float32))
    atomic_write_json(cat / "items.json", {k: M.items[k] for k in ("ids", "title", "categories", "year", "first_seen")})
    cf = {"kind": c.cf.kind}
    if c.cf.kind != "none":  # the recency weighting calibrated on validation, applied on the device too
        cf.update(recency_half_life=float(b.rec.cf.recency[0]), recency_floor=float(b.rec.cf.recency[1]))
    if c.cf.kind in ("cooccurrence", "ease"):
        # int16 item ids when the catalog allows (the runtime widens them at load): -0.7 MB on ml-100k
        idx_t = "int16" if len(M.items["ids"]) <= np.iinfo(np.int16).max else "int32"
        atomic_save_npy(cat / f"cf_idx.{idx_t}.npy", M.cf_table[0].astype(idx_t))
        atomic_save_npy(cat / "cf_w.fp16.npy", M.cf_table[1].astype(np.float16))
        cf.update(idx=f"catalog/cf_idx.{idx_t}.npy", w="catalog/cf_w.fp16.npy")
        short = []
        for T, (sidx, sw) in M.cf_short:  # the tables for short histories (cf.short_history) training kept
            atomic_save_npy(cat / f"cf_short{T}_idx.{idx_t}.npy", sidx.astype(idx_t))
            atomic_save_npy(cat / f"cf_short{T}_w.fp16.npy", sw.astype(np.float16))
            short.append(ShortCFSpec(max_history=int(T), idx=f"catalog/cf_short{T}_idx.{idx_t}.npy",
                                     w=f"catalog/cf_short{T}_w.fp16.npy"))
        if short:
            cf["short"] = tuple(short)
    elif c.cf.kind == "mf":
        atomic_save_npy(cat / "mf_P.npy", b.rec.cf.P.weight.detach().numpy())
        atomic_save_npy(cat / "mf_Q.npy", b.rec.cf.Q.weight.detach().numpy())
        cf.update(P="catalog/mf_P.npy", Q="catalog/mf_Q.npy")
    trend = None
    hl = float(b.rec.pop_half_life)
    if hl > 0:  # calibrated with trending popularity: the training events' decayed counts travel to the device
        counts, as_of = end_counts(Prepared(c, b.data_dir).split, hl)
        atomic_save_npy(cat / "trend_counts.npy", counts.astype(np.float64))
        trend = TrendSpec(counts="catalog/trend_counts.npy", half_life_s=hl, as_of=as_of)
    b.catalog = CatalogSpec(items="catalog/items.json", **files, popularity="catalog/popularity.npy", cf=CFSpec(**cf),
                            n_items=len(M.items["ids"]), trend=trend)
    # compact JSON (no indentation): the same tokenizer, ~0.3 MB smaller
    load_tokenizer(M.path / "encoder" / "tokenizer.json", c.encoder.max_tokens).save(str(b.work / "tokenizer.json"),
                                                                                       pretty=False)


# ------------------------------------------------------------------ stage 5: manifest + publish
def write_manifest(b: BundleBuild, keep_fp32: bool) -> Manifest:
    """The typed manifest over every file in the work folder (sha256 + size), written as JSON."""
    import tokenizers
    import torch
    import transformers

    from genre_edge.ortload import onnxruntime as _ort

    onnxruntime = _ort()

    c = b.M.conf
    if not keep_fp32 and "fp32" not in b.variants:
        os.remove(b.enc_files.pop("fp32"))
    bw = b.rec.head.blend_weights()
    cf_w = bw["cf"] if c.cf.kind != "none" else 0.0
    presets = {
        "hybrid": Preset(content=bw["content"], cf=cf_w, pop=bw["pop"]),
        "content": Preset(content=max(bw["content"], 1.0), cf=0.0, pop=0.0),
        "cf": Preset(content=0.0, cf=cf_w, pop=bw["pop"] if c.cf.kind != "none" else 1.0),
        "query": Preset(content=10.0, cf=cf_w, pop=bw["pop"], query_weight=0.7),
    }
    models = Models(
        encoder={v: ModelEntry(b.rel(f), OPSET, v, QUANT_PRESETS[v].dtype, tuple(b.variants.get(v, [])))
                 for v, f in b.enc_files.items()},
        user={"fp32": ModelEntry("models/user.fp32.onnx", OPSET, "fp32")},
        head={v: ModelEntry(b.rel(f), OPSET, v) for v, f in b.head_files.items()} or None)
    files = {b.rel(p): FileEntry(sha256_file(p), p.stat().st_size)
             for p in sorted(b.work.rglob("*")) if p.is_file() and p.name != "manifest.json"}
    dv = b.default_variant
    epoch = source_date_epoch()
    rows, speedup = b.rows, b.rows[f"model-onnx-{dv}"]["speedup"]
    if epoch is not None:  # reproducible: measured timings vary run to run, so they stay out of the manifest
        rows = {k: {m: v for m, v in r.items() if m not in TIMING_KEYS} for k, r in b.rows.items()}
        speedup = None
    created = _dt.datetime.now(_dt.timezone.utc) if epoch is None else _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc)
    manifest = Manifest(
        format=FORMAT, format_version=FORMAT_VERSION,
        created_at=created.isoformat(timespec="seconds"),
        genre_edge=__version__, source_config=cfg.to_dict(c),
        packages={"torch": torch.__version__, "transformers": transformers.__version__,
                  "onnxruntime": onnxruntime.__version__, "tokenizers": tokenizers.__version__,
                  "python": platform.python_version()},
        dim=b.tower.dim, max_tokens=c.encoder.max_tokens, pooling=c.encoder.pooling, tokenizer="tokenizer.json",
        models=models, catalog=b.catalog,
        scoring=Scoring(template=c.encoder.template, user_model=c.user_model.kind, max_history=c.user_model.max_history,
                        head=c.head.kind, rerank_top=c.head.rerank_top, presets=presets, defaults=ScoringDefaults()),
        query_parser=vocabulary([x for cs in b.M.items["categories"] for x in cs], c.query_parser),
        quality=Quality(split="valid", rows=rows, gate=b.gate, parity=b.parity,
                        summary={"variant": dv, "ndcg_kept": b.gate.kept, "speedup_vs_torch_teacher": speedup}),
        files=files)
    atomic_write_json(b.work / "manifest.json", manifest_json(manifest))
    return manifest


def publish(b: BundleBuild, manifest: Manifest, out: Path, tar: bool) -> dict:
    """Rename the work folder into place when the gate passed (else to ``<out>.rejected``), optionally tar it."""
    g = b.gate
    if not g.passed:
        fail = Path(str(out) + ".rejected")
        shutil.rmtree(fail, ignore_errors=True)
        os.replace(b.work, fail)
        need = {"warm": (g.min_kept, "validation nDCG@10"), "cold": (g.min_cold_kept, "cold-validation nDCG@10"),
                "request": (g.min_request_kept, "request precision@10")}
        why = [f"{v} keeps {k:.3f} of the teacher's {need[what][1]} (required {need[what][0]:.3f})"
               for v, per in (g.variants or {}).items() for what, k in per.items() if not k >= need[what][0]]
        fp32 = b.rows.get("model-onnx-fp32", {}).get("ndcg_kept")
        warm = [per["warm"] for per in (g.variants or {}).values() if "warm" in per and not per["warm"] >= g.min_kept]
        hint = ""
        if warm and fp32 is not None:
            # say where the quality went: before quantization (the exported model itself) or in it
            hint = f" (the same model's fp32 export keeps {fp32:.3f}: "
            hint += ("most of the loss comes before quantization: distil longer or with more layers (genre distill "
                     "--epochs/--layers, genre quickstart --distill-epochs) or export the teacher's encoder"
                     if fp32 < g.min_kept and fp32 - min(warm) < 1 - fp32 else
                     "most of the loss comes from int8 (encoder or catalog): --keep-fp32 ships fp32, "
                     "--catalog-dtype fp16 keeps the catalog in fp16")
            hint += "; a small validation set makes this share noisy: --min-kept (genre export, genre quickstart) sets the bar)"
        raise QualityGateError(f"quality gate failed: {'; '.join(why)}{hint}; the rejected bundle is in {fail} for "
                               "inspection")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(b.work, out)
    result = {"bundle": str(out), "bytes": sum(f.bytes for f in manifest.files.values()), "manifest": manifest}
    if tar:
        tgz = Path(str(out) + ".tar.gz")
        tmp = Path(str(tgz) + ".tmp")
        try:
            write_tar(out, tmp, source_date_epoch())
            os.replace(tmp, tgz)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        result["tar"] = str(tgz)
    result["timings_ms"] = {k: r["latency_ms"] for k, r in b.rows.items() if "latency_ms" in r}
    return result


TIMING_KEYS = ("latency_ms", "speedup")


def source_date_epoch() -> int | None:
    """``SOURCE_DATE_EPOCH`` (reproducible builds): the bundle's time stamps, and no run-dependent timings
    in the manifest, so the same inputs give a byte-identical bundle and tar."""
    v = os.environ.get("SOURCE_DATE_EPOCH")
    if v is None or v == "":
        return None
    try:
        epoch = int(v)
    except ValueError:
        epoch = -1
    if epoch < 0:
        raise ConfigError(f"SOURCE_DATE_EPOCH must be a non-negative integer (seconds since 1970), not {v!r}")
    return epoch


def write_tar(folder: Path, dst: Path, epoch: int | None) -> None:
    """``folder`` as a gzip'd tar: entries sorted, owner 0/root, and with ``epoch`` every time stamp (the
    files' and gzip's) fixed, so equal folders give equal bytes."""
    import gzip

    def norm(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        ti.mode = 0o755 if ti.isdir() else 0o644
        if epoch is not None:
            ti.mtime = epoch
        return ti

    with open(dst, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=epoch or 0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.add(folder, arcname=folder.name, recursive=False, filter=norm)
        for p in sorted(folder.rglob("*")):
            tf.add(p, arcname=f"{folder.name}/{p.relative_to(folder).as_posix()}", recursive=False, filter=norm)
