"""The bundle contract between export and runtime: a typed manifest, verification, and file parsing.

One module writes and reads the manifest: the exporter builds these frozen dataclasses and
serializes them with :func:`manifest_json`; the runtime parses ``manifest.json`` back with the
project's config validation (unknown keys, bad types, unknown variants and CF kinds are refused
with the key named). :meth:`Bundle.load_catalog` and :meth:`Bundle.load_cf` own all parsing of the
bundle's data files.

Nothing in a bundle is executed: models are ONNX (no custom-op libraries are ever registered),
arrays are .npy read with ``allow_pickle=False``, metadata is JSON.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import config as cfg
from .catalog import Catalog
from .errors import BundleError, ConfigError
from .catalog_rows import Int8Rows
from .fsutil import loads_strict, sha256_file
from .request import STRATEGIES
from .scorer import CFScorer
from .trending import Trend
from .variants import VARIANTS

log = logging.getLogger(__name__)

FORMAT = "genre-bundle"
FORMAT_VERSION = 1  # what the exporter writes
SUPPORTED_VERSIONS = (1,)
MANIFEST = "manifest.json"
CF_KINDS = ("none", "cooccurrence", "ease", "mf")
HEAD_KINDS = ("dot", "mlp")


# ------------------------------------------------------------------ the manifest, typed
@dataclass(frozen=True)
class FileEntry:
    """A listed file: its sha256 and size, checked before anything is loaded."""
    sha256: str
    bytes: int


@dataclass(frozen=True)
class ModelEntry:
    """One ONNX model of a part (encoder, user, head) for one variant."""
    file: str
    opset: int | None = None
    preset: str | None = None
    dtype: str | None = None  # encoder only
    profiles: tuple[str, ...] | None = None  # encoder only: the built-in profiles it was built for


@dataclass(frozen=True, kw_only=True)
class Models:
    encoder: dict[str, ModelEntry]
    user: dict[str, ModelEntry]
    head: dict[str, ModelEntry] | None = None  # only with scoring.head = "mlp"

    def validate(self):
        unknown = [v for v in self.encoder if v not in VARIANTS]
        if unknown:
            raise ConfigError(f"models.encoder: unknown variant {unknown[0]!r}; this runtime knows: {', '.join(VARIANTS)}")


@dataclass(frozen=True, kw_only=True)
class ShortCFSpec:
    """A neighbour table for short histories: what a history of ``max_history`` items or fewer reads (the
    first such table, by ``max_history``, that fits it), its blend scale folded into ``w``."""
    max_history: int = cfg.bounded(1, 1, None)
    idx: str
    w: str


@dataclass(frozen=True)
class CFSpec:
    """The collaborative part: neighbour tables (``idx``/``w``) or factors (``P``/``Q``), with the
    recency weighting calibrated on validation (absent: every history item counts the same). A neighbour
    part may carry tables for short histories (``short``, ascending ``max_history``; chosen for them in
    training) that those histories read instead of ``idx``/``w``."""
    kind: str = cfg.choice("none", CF_KINDS)
    recency_half_life: float | None = None
    recency_floor: float | None = None
    idx: str | None = None
    w: str | None = None
    P: str | None = None
    Q: str | None = None
    short: tuple[ShortCFSpec, ...] | None = None

    def validate(self):
        hl = 0.0 if self.recency_half_life is None else self.recency_half_life
        floor = 1.0 if self.recency_floor is None else self.recency_floor
        if hl < 0 or not 0 <= floor <= 1:
            raise ConfigError(f"catalog.cf: recency_half_life must be >= 0 and recency_floor in [0, 1] "
                              f"(got {hl!r}, {floor!r})")
        need = {"cooccurrence": ("idx", "w"), "ease": ("idx", "w"), "mf": ("P", "Q")}.get(self.kind, ())
        missing = [k for k in need if getattr(self, k) is None]
        if missing:
            raise ConfigError(f"catalog.cf: kind {self.kind!r} needs the file field(s) {', '.join(missing)}")
        if self.short:
            if self.kind not in ("cooccurrence", "ease"):
                raise ConfigError(f"catalog.cf.short: short-history tables need kind 'ease' or 'cooccurrence', "
                                  f"not {self.kind!r}")
            ts = [t.max_history for t in self.short]
            if ts != sorted(set(ts)):
                raise ConfigError(f"catalog.cf.short: max_history must ascend without repeats, got {ts}")


@dataclass(frozen=True, kw_only=True)
class TrendSpec:
    """Trending popularity (:mod:`genre_edge.trending`): per-item event counts decayed with ``half_life_s``
    to ``as_of`` (unix seconds, the training log's end); the blend's popularity is read from them as of
    the request time. Absent: the static ``popularity`` file is the blend's popularity."""
    counts: str
    half_life_s: float
    as_of: float

    def validate(self):
        if not (math.isfinite(self.half_life_s) and self.half_life_s > 0):
            raise ConfigError(f"catalog.trend.half_life_s must be a positive number of seconds, got {self.half_life_s!r}")
        if not (math.isfinite(self.as_of) and self.as_of >= 0):
            raise ConfigError(f"catalog.trend.as_of must be unix seconds >= 0, got {self.as_of!r}")


@dataclass(frozen=True, kw_only=True)
class CatalogSpec:
    items: str
    embeddings: str  # int8 (with embedding_scales), float16 or float32 rows
    embedding_scales: str | None = None
    popularity: str
    cf: CFSpec = field(default_factory=CFSpec)
    n_items: int | None = None
    trend: TrendSpec | None = None


@dataclass(frozen=True, kw_only=True)
class Preset:
    """Blend weights of one strategy: content, CF and popularity (+ the query's share for 'query')."""
    content: float
    cf: float
    pop: float
    query_weight: float | None = None


@dataclass(frozen=True)
class ScoringDefaults:
    """What a request gets for the options it leaves out."""
    strategy: str = cfg.choice("hybrid", STRATEGIES)
    mmr_lambda: float = cfg.bounded(1.0, 0.0, 1.0)
    freshness_half_life_days: float = cfg.bounded(0.0, 0.0, 1e6)
    popularity_penalty: float = cfg.bounded(0.0, 0.0, 100.0)
    exploration: float = cfg.bounded(0.0, 0.0, 10.0)


@dataclass(frozen=True, kw_only=True)
class Scoring:
    template: str
    user_model: str | None = None
    max_history: int = cfg.bounded(50, 1, 100000)
    head: str = cfg.choice("dot", HEAD_KINDS)
    rerank_top: int = cfg.bounded(200, 1, 100000)
    presets: dict[str, Preset]
    defaults: ScoringDefaults = field(default_factory=ScoringDefaults)

    def validate(self):
        missing = [s for s in STRATEGIES if s not in self.presets]
        if missing:
            raise ConfigError(f"scoring.presets: missing the strateg{'ies' if len(missing) > 1 else 'y'} "
                              f"{', '.join(missing)}")


@dataclass(frozen=True)
class QueryParserSpec:
    """The request parser's vocabulary: category -> the phrases a request may name it by."""
    vocabulary: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Gate:
    """The export's quality gate: the default variant (it embedded the shipped catalog) keeps ``kept`` of
    the teacher's validation nDCG@10; ``variants`` gives, per shipped encoder variant, what it keeps of
    the teacher's warm (``warm``) and cold-validation (``cold``) nDCG@10 and request precision@10
    (``request``), each held to its minimum."""
    variant: str
    min_kept: float
    kept: float
    passed: bool
    min_cold_kept: float | None = None
    min_request_kept: float | None = None
    variants: dict[str, dict[str, float]] | None = None


@dataclass(frozen=True, kw_only=True)
class Quality:
    split: str = "valid"
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> metric -> value
    gate: Gate | None = None
    parity: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Manifest:
    format: str = FORMAT
    format_version: int
    created_at: str | None = None
    genre_edge: str | None = None
    source_config: dict[str, Any] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)
    dim: int
    max_tokens: int
    pooling: str | None = None
    tokenizer: str
    models: Models
    catalog: CatalogSpec
    scoring: Scoring
    query_parser: QueryParserSpec | None = None  # absent in older bundles: the catalog's category names
    quality: Quality | None = None
    files: dict[str, FileEntry] = field(default_factory=dict)

    def validate(self):
        for part, entries in (("encoder", self.models.encoder), ("user", self.models.user),
                              ("head", self.models.head or {})):
            for v, meta in entries.items():
                if meta.file not in self.files:
                    raise ConfigError(f"models.{part}.{v}: file {meta.file!r} is not listed in files")


def manifest_json(m) -> dict:
    """A manifest (or a part of one) as JSON data: fields that are None (optional parts) are left out, and a
    measurement that is not a finite number (NaN: "not measured", e.g. a share of a zero) becomes null, so
    the manifest stays standard JSON, which the runtime's strict reader requires."""
    return _finite_json(cfg.to_dict(m, drop_none=True))


def _finite_json(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite_json(x) for x in v]
    return v


# ------------------------------------------------------------------ reading and verification
def safe_path(root: Path, rel: str) -> Path:
    """Resolve ``rel`` inside ``root``; refuse absolute paths, '..', and symlinks leading out."""
    if not isinstance(rel, str) or not rel or rel.startswith(("/", "\\")) or "\\" in rel or ":" in rel:
        raise BundleError(f"manifest names an unsafe file path {rel!r} (must be relative, inside the bundle)")
    parts = Path(rel).parts
    if any(p in ("..", ".") for p in parts):
        raise BundleError(f"manifest names an unsafe file path {rel!r} ('..' is not allowed)")
    p = root / rel
    real_root = root.resolve()
    try:
        real = p.resolve(strict=False)
    except (OSError, RuntimeError) as exc:
        raise BundleError(f"{rel}: cannot resolve path ({exc})") from None
    if real_root != real and real_root not in real.parents:
        raise BundleError(f"{rel}: resolves outside the bundle (symlink?); refused")
    return p


def _require(d: dict, key: str, typ, where: str = "manifest"):
    if key not in d:
        raise BundleError(f"{where}: missing field {key!r}")
    if not isinstance(d[key], typ):
        raise BundleError(f"{where}.{key}: expected {getattr(typ, '__name__', typ)}, got {type(d[key]).__name__}")
    return d[key]


def read_manifest(root: Path, trusted_key: str | Path | None = None) -> Manifest:
    """Parse and validate ``root/manifest.json``: the format envelope first (format, version, files),
    then every field against the typed contract. With ``trusted_key`` (a public key file), the bytes
    parsed must carry a valid ``manifest.sig`` by that key (see :mod:`genre_edge.signing`)."""
    mp = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle folder")
    if not mp.is_file():
        raise BundleError(f"{root}: no {MANIFEST}; not a genre-edge bundle")
    try:
        raw = mp.read_bytes()
    except OSError as exc:
        raise BundleError(f"{mp}: cannot be read ({exc})") from None
    if trusted_key is not None:  # the very bytes parsed below are the ones checked
        from .signing import check_signature

        check_signature(root, raw, trusted_key)
    try:
        m = loads_strict(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{mp}: not valid JSON ({exc})") from None
    if not isinstance(m, dict):
        raise BundleError(f"{mp}: expected a JSON object")
    if m.get("format") != FORMAT:
        raise BundleError(f"{mp}: format {m.get('format')!r} is not {FORMAT!r}")
    ver = m.get("format_version")
    if ver not in SUPPORTED_VERSIONS:
        raise BundleError(f"{mp}: format_version {ver!r} is not supported by this runtime "
                          f"(supports {', '.join(map(str, SUPPORTED_VERSIONS))}); upgrade genre-edge or re-export")
    files = _require(m, "files", dict)
    for rel, meta in files.items():
        if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str) or not isinstance(meta.get("bytes"), int):
            raise BundleError(f"manifest.files[{rel!r}]: needs sha256 (string) and bytes (integer)")
    for key, typ in (("dim", int), ("max_tokens", int), ("tokenizer", str), ("models", dict), ("catalog", dict),
                     ("scoring", dict)):
        _require(m, key, typ)
    try:
        return cfg.from_dict(Manifest, m, "manifest")
    except ConfigError as exc:
        raise BundleError(f"{mp}: {exc}") from None


def verify_files(root: Path, manifest: Manifest) -> list[str]:
    """Problems with the listed files (missing, symlinked, resized, altered); empty when all match."""
    problems = []
    for rel, meta in manifest.files.items():
        try:
            p = safe_path(root, rel)
        except BundleError as exc:
            problems.append(str(exc))
            continue
        if p.is_symlink():
            problems.append(f"{rel}: is a symlink; refused")
            continue
        if not p.is_file():
            problems.append(f"{rel}: missing")
            continue
        size = os.path.getsize(p)
        if size != meta.bytes:
            problems.append(f"{rel}: {size} bytes, manifest says {meta.bytes} (truncated or replaced)")
            continue
        got = sha256_file(p)
        if got != meta.sha256:
            problems.append(f"{rel}: sha256 {got[:16]}... does not match the manifest ({meta.sha256[:16]}...)")
    return problems


def open_bundle(path: str | Path, verify: bool = True, trusted_key: str | Path | None = None) -> "Bundle":
    """Open a bundle folder; with ``verify`` check every listed file's size and sha256 first, and with
    ``trusted_key`` the manifest's signature by that public key."""
    root = Path(path)
    m = read_manifest(root, trusted_key)
    if verify:
        problems = verify_files(root, m)
        if problems:
            raise BundleError(f"{root}: bundle verification failed:\n  " + "\n  ".join(problems[:10]))
    return Bundle(root, m)


@dataclass
class Bundle:
    """An opened bundle: its folder and typed manifest; every file access goes through here."""
    root: Path
    manifest: Manifest

    def path(self, rel: str) -> Path:
        if rel not in self.manifest.files:
            raise BundleError(f"{rel}: not listed in the manifest's files; refused")
        return safe_path(self.root, rel)

    def sha256(self, rel: str) -> str:
        return self.manifest.files[rel].sha256

    def size(self) -> int:
        """Bytes of every listed file together."""
        return sum(f.bytes for f in self.manifest.files.values())

    def load_npy(self, rel: str, dtype=None, ndim: int | None = None, mmap: bool = False) -> np.ndarray:
        p = self.path(rel)
        try:
            arr = np.load(p, allow_pickle=False, mmap_mode="r" if mmap else None)
        # a malformed header reaches numpy's header parser: SyntaxError/TokenError besides ValueError
        except Exception as exc:
            raise BundleError(f"{rel}: not a valid .npy array ({exc})") from None
        if dtype is not None and arr.dtype != np.dtype(dtype):
            raise BundleError(f"{rel}: dtype {arr.dtype}, expected {np.dtype(dtype)}")
        if ndim is not None and arr.ndim != ndim:
            raise BundleError(f"{rel}: {arr.ndim}-d array, expected {ndim}-d")
        return arr

    def load_json(self, rel: str):
        p = self.path(rel)
        try:
            return loads_strict(p.read_text(encoding="utf-8"))
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            raise BundleError(f"{rel}: not valid JSON ({exc})") from None

    def model(self, part: str, variant: str) -> ModelEntry:
        models = getattr(self.manifest.models, part, None) or {}
        if variant not in models:
            raise BundleError(f"bundle has no {part} model for variant {variant!r}; it has: {', '.join(models) or 'none'}")
        return models[variant]

    def variants(self, part: str = "encoder") -> list[str]:
        return list(getattr(self.manifest.models, part, None) or {})

    # -------------------------------------------------------------- data files
    def load_catalog(self, lean: bool = False):
        """The bundle's catalog (items, embeddings, popularity), shapes and types checked. Embeddings are
        float32, or with ``lean`` and an int8 catalog file, int8 rows memory-mapped from the bundle with
        their scales (:class:`~genre_edge.catalog_rows.Int8Rows`: large catalogs, scored by the int8 index)."""
        cat, dim = self.manifest.catalog, self.manifest.dim
        items = _check_items(self.load_json(cat.items), cat.items)
        emb = self.load_npy(cat.embeddings, ndim=2, mmap=lean)
        if emb.dtype == np.int8:  # int8 with one scale per item (half of fp16 on disk)
            if cat.embedding_scales is None:
                raise BundleError(f"{cat.embeddings} is int8 but the manifest names no embedding_scales")
            scales = _finite(self.load_npy(cat.embedding_scales, np.float32, 1), cat.embedding_scales)
            if scales.shape != (emb.shape[0],):
                raise BundleError(f"{cat.embedding_scales}: shape {scales.shape}, expected ({emb.shape[0]},)")
            key = (self.sha256(cat.embeddings) or "")[:16] + (self.sha256(cat.embedding_scales) or "")[:16]
            emb = Int8Rows(emb, scales, key or None) if lean else emb.astype(np.float32) * scales[:, None]
        elif lean:
            emb = np.array(emb)  # an fp16/fp32 catalog file: read it whole, as without lean
        elif emb.dtype not in (np.float16, np.float32):
            raise BundleError(f"{cat.embeddings}: dtype {emb.dtype}, expected int8, float16 or float32")
        pop = self.load_npy(cat.popularity, np.float32, 1)
        if not isinstance(emb, Int8Rows):  # int8 rows are finite; their scales were checked
            _finite(emb, cat.embeddings)
        _finite(pop, cat.popularity)
        n = len(items["ids"])
        if emb.shape != (n, dim) or pop.shape != (n,):
            raise BundleError(f"catalog shapes disagree: {n} items, embeddings {emb.shape}, popularity {pop.shape}, dim {dim}")
        trend = None
        if cat.trend is not None:
            counts = _finite(self.load_npy(cat.trend.counts, np.float64, 1), cat.trend.counts)
            if counts.shape != (n,) or (counts < 0).any():
                raise BundleError(f"{cat.trend.counts}: expected {n} counts >= 0, got shape {counts.shape}")
            trend = Trend(counts, cat.trend.half_life_s, cat.trend.as_of)
        return Catalog(items["ids"], items["title"], items["categories"], items["year"], items["first_seen"], emb, pop,
                       trend=trend, trend_key=(self.sha256(cat.trend.counts) or "")[:16] if trend is not None else "")

    def load_cf(self, n_items: int, lean: bool = False):
        """The CF scorer for a catalog of ``n_items`` bundle items (tables checked against it).

        ``lean``: the neighbour tables stay memory-mapped as stored (int16/int32 ids, float16 weights; a
        request gathers its history's rows only), for large catalogs: 200 neighbours of 1M items are 1.6 GB
        widened to int32/float32 in memory. Scores are the same (float16 -> float32 is exact either way)."""
        cfm = self.manifest.catalog.cf
        recency = {"half_life": 0.0 if cfm.recency_half_life is None else cfm.recency_half_life,
                   "floor": 1.0 if cfm.recency_floor is None else cfm.recency_floor}
        if cfm.kind in ("cooccurrence", "ease"):
            idx, w = self._neighbour_table(cfm.idx, cfm.w, n_items, lean)
            short = [(t.max_history, *self._neighbour_table(t.idx, t.w, n_items, lean)) for t in cfm.short or ()]
            return CFScorer(cfm.kind, idx=idx, w=w, **recency, short=short)
        if cfm.kind == "mf":
            P, Q = _finite(self.load_npy(cfm.P, np.float32, 2), cfm.P), _finite(self.load_npy(cfm.Q, np.float32, 2), cfm.Q)
            if P.shape != Q.shape or P.shape[0] != n_items:
                raise BundleError("CF factor tables have bad shapes")
            return CFScorer("mf", P=P, Q=Q, **recency)
        return CFScorer("none")


    def _neighbour_table(self, rel_idx: str, rel_w: str, n_items: int, lean: bool) -> tuple[np.ndarray, np.ndarray]:
        """A CF neighbour table's (ids, weights), checked against a catalog of ``n_items`` (see :meth:`load_cf`)."""
        idx = self.load_npy(rel_idx, None, 2, mmap=lean)
        if idx.dtype not in (np.int16, np.int32):
            raise BundleError(f"{rel_idx}: dtype {idx.dtype}, expected int16 or int32")
        w = self.load_npy(rel_w, None, 2, mmap=lean)
        if idx.shape != w.shape or idx.shape[0] != n_items:
            raise BundleError(f"{rel_idx}: CF neighbour table has bad shape or out-of-range item indices")
        for a in range(0, len(idx), 65536):  # checked in blocks: a mapped table is never copied whole
            b = idx[a: a + 65536]
            if b.size and (b.min() < 0 or b.max() >= n_items):
                raise BundleError(f"{rel_idx}: CF neighbour table has bad shape or out-of-range item indices")
            _finite(np.asarray(w[a: a + 65536]), rel_w)
        if not lean:  # int16 on disk halves the table for catalogs under 32768 items; int32 in memory gathers faster
            return idx.astype(np.int32), w.astype(np.float32)
        from .catalog_rows import release_pages  # the checks read every page: let them go until requests gather them

        release_pages(idx)
        release_pages(w)
        return idx, w


def _finite(arr: np.ndarray, rel: str) -> np.ndarray:
    """``arr``, refused when it holds NaN or infinity (one would turn every score into NaN)."""
    if not np.isfinite(arr).all():
        raise BundleError(f"{rel}: holds NaN or infinite values; re-export the bundle")
    return arr


def _check_items(items, rel: str) -> dict:
    """The catalog's item metadata must be parallel lists of the right types (a re-signed or
    hand-edited bundle is refused here, not by a TypeError deep inside a request)."""
    def bad(msg):
        return BundleError(f"{rel}: items {msg}")

    if not isinstance(items, dict):
        raise bad("must be a JSON object of parallel lists")
    need = {"ids": str, "title": str, "categories": list, "year": int, "first_seen": int}
    missing = [k for k in need if not isinstance(items.get(k), list)]
    if missing:
        raise bad(f"field(s) {', '.join(missing)} missing or not lists")
    n = len(items["ids"])
    for k, tp in need.items():
        col = items[k]
        if len(col) != n:
            raise bad(f"field {k} has {len(col)} entries, ids has {n}")
        if not all(isinstance(v, tp) and not isinstance(v, bool) for v in col):
            raise bad(f"field {k} must hold only {tp.__name__} values")
    if not all(-9999 <= y <= 9999 for y in items["year"]):
        raise bad("year must be within -9999..9999 (0: unknown)")
    if not all(-2**63 <= t < 2**63 for t in items["first_seen"]):
        raise bad("first_seen must be a 64-bit integer (seconds since the epoch)")
    if not all(isinstance(c, str) for cats in items["categories"] for c in cats):
        raise bad("categories must be lists of strings")
    if len(set(items["ids"])) != n or not all(items["ids"]):
        raise bad("ids must be unique, non-empty strings")
    return items
