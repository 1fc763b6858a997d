"""Whole-catalog scoring at scale: an int8 matrix-vector product in ONNX Runtime, and a blocked top-k.

Why: scoring reads the whole catalog per request. float32 catalog @ user vector is bound by
memory bandwidth (1M x 384 floats = 1.5 GB: ~120 ms on one core here). Stored as int8 with one
scale per item, the same product reads 4x fewer bytes, and ONNX Runtime's MatMulInteger with the
catalog as a *constant* weight is pre-packed once for the CPU's int8 dot-product instructions
(VNNI on x86, SDOT/NEON on arm64): 1.8 ms for 100k items and 22 ms for 1M on one core here.

The scoring graph is tiny (MatMulInteger -> Cast -> Mul), so it is written here as ONNX protobuf
bytes by hand rather than with the ``onnx`` package, which the runtime must not import.

On x86 CPUs without VNNI, ONNX Runtime's u8 x s8 kernel multiplies with vpmaddubsw, which sums pairs of
products into int16 and saturates: 2 x 255 x 127 > 32767 (measured on an AVX2-only EPYC: errors up to
0.03 and a top-200 overlap of 0.965 at 100k items). There the query is quantized to 7 bits (u8 values
1..127 around zero point 64), so no pair can exceed 2 x 127 x 127 = 32258; VNNI and arm64 (SDOT)
accumulate in int32 and keep the full 8 bits.
Rows changed on device after the index was built (new or updated items) are scored in float32
on top, so the index never answers with a stale embedding.

The int8 pass only has to find the candidates: the best ``REFINE_TOP`` rows it returns are scored
again with the float query against the catalog's own rows (float32, or the stored int8 rows
de-quantized), so their order does not depend on how the query was quantized. That is what makes
the 7-bit AVX2 path rank like float32 (100k items, top-200 overlap with float32 1.000; the 7-bit index alone:
0.987 on an emulated AVX2 core); it costs one partial sort and a gather of ``REFINE_TOP`` rows.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .catalog_rows import Int8Rows

log = logging.getLogger(__name__)

# Below this many items numpy's float32 product is as fast, and building an index is not worth it.
AUTO_MIN_ITEMS = 20000
# Rows re-scored exactly after the int8 pass: the re-ranking pool is 200, and the index's errors (~1e-3)
# only swap rows that close to each other. At 100k items (ml-100k rows + noise, 20 histories) the top-200
# overlap with float32 is 1.000 from 256 refined rows on (8-bit and 7-bit queries); each refined row
# costs a gather, so more buys nothing: 256 rows add 0.2-0.3 ms, 1024 rows 1.3 ms.
REFINE_TOP = 256
MODES = ("auto", "fp32", "int8", "ann")

_UINT8, _INT8, _INT32, _FLOAT = 2, 3, 6, 1  # onnx.TensorProto data types


# ---------------------------------------------------------------- minimal protobuf writer
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _int(field: int, v: int) -> bytes:
    return _key(field, 0) + _varint(v)


def _bytes(field: int, v: bytes | str) -> bytes:
    v = v.encode() if isinstance(v, str) else v
    return _key(field, 2) + _varint(len(v)) + v


def _tensor(name: str, a: np.ndarray, dtype: int) -> bytes:  # TensorProto
    return b"".join(_int(1, d) for d in a.shape) + _int(2, dtype) + _bytes(8, name) + \
        _bytes(9, np.ascontiguousarray(a).tobytes())


def _value_info(name: str, dtype: int, dims: list) -> bytes:  # ValueInfoProto
    shape = b"".join(_bytes(1, _int(1, d) if isinstance(d, int) else _bytes(2, d)) for d in dims)
    return _bytes(1, name) + _bytes(2, _bytes(1, _int(1, dtype) + _bytes(2, shape)))


def _node(op: str, inputs: list[str], outputs: list[str]) -> bytes:  # NodeProto
    return b"".join(_bytes(1, i) for i in inputs) + b"".join(_bytes(2, o) for o in outputs) + _bytes(4, op)


def _size(parts: list) -> int:
    return sum(p.nbytes if isinstance(p, np.ndarray) else len(p) for p in parts)


def _field(field: int, parts: list) -> list:
    """A length-delimited field whose payload is ``parts`` (bytes and arrays, not joined)."""
    return [_key(field, 2) + _varint(_size(parts)), *parts]


def _model_parts(q_rows: np.ndarray, scales: np.ndarray, zero_point: int) -> list:
    """The scoring model as a list of byte strings and one array (the catalog, transposed): written
    piece by piece, a million-row catalog is never copied into one Python bytes object (building
    that took 5.7 s and ~800 MB at 1M items here)."""
    n, d = q_rows.shape
    # AttributeProto {name=1, i=3, type=20 (INT=2)}: Cast(to=FLOAT)
    cast = _node("Cast", ["dot"], ["dotf"]) + _bytes(5, _bytes(1, "to") + _int(3, _FLOAT) + _int(20, 2))
    catalog_t = np.ascontiguousarray(np.asarray(q_rows).T)  # [D, N]: MatMulInteger's constant B
    tensor = [_int(1, d) + _int(1, n) + _int(2, _INT8) + _bytes(8, "catalog_t"), *_field(9, [catalog_t])]
    graph = [
        _bytes(1, _node("MatMulInteger", ["u", "catalog_t", "u_zero"], ["dot"]))
        + _bytes(1, cast)
        + _bytes(1, _node("Mul", ["dotf", "scales"], ["s1"]))
        + _bytes(1, _node("Mul", ["s1", "u_scale"], ["scores"]))
        + _bytes(2, "genre_int8_catalog"),
        *_field(5, tensor),
        _bytes(5, _tensor("u_zero", np.array(zero_point, np.uint8), _UINT8))
        + _bytes(5, _tensor("scales", scales.astype(np.float32), _FLOAT))
        + _bytes(11, _value_info("u", _UINT8, [1, d]))
        + _bytes(11, _value_info("u_scale", _FLOAT, [1]))
        + _bytes(12, _value_info("scores", _FLOAT, [1, n])),
    ]
    return [_int(1, 8) + _bytes(2, "genre-edge"), *_field(7, graph), _bytes(8, _bytes(1, "") + _int(2, 17))]


def int8_scoring_model(q_rows: np.ndarray, scales: np.ndarray, zero_point: int = 128) -> bytes:
    """ONNX model bytes: scores[1, N] = (q_rows int8 [N, D]) . (u8 query - zero_point) * scales[N] * q_scale."""
    return b"".join(p.tobytes() if isinstance(p, np.ndarray) else p for p in _model_parts(q_rows, scales, zero_point))


def write_int8_scoring_model(path: Path, q_rows: np.ndarray, scales: np.ndarray, zero_point: int = 128) -> None:
    """:func:`int8_scoring_model` written to ``path`` piece by piece (atomically: temp file, then rename)."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            for p in _model_parts(q_rows, scales, zero_point):
                fh.write(memoryview(p).cast("B") if isinstance(p, np.ndarray) else p)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def quantize_rows(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row: emb ~= q * scale[:, None] (also the bundle's int8 catalog storage: half
    of fp16 on disk; on unit-norm embeddings the dot-product error is ~1e-3)."""
    amax = np.abs(emb).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(emb / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def saturates_u8s8(flags: set[str] | None = None, arch: str | None = None) -> bool:
    """Whether this CPU's u8 x s8 int8 kernel saturates int16 pair sums (x86 without VNNI)."""
    if flags is None or arch is None:
        from .profile import machine_info

        info = machine_info()
        flags, arch = info.cpu_flags if flags is None else flags, info.arch if arch is None else arch
    return arch == "x86_64" and not ({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))


class Int8Index:
    """Scores the first ``n`` catalog rows with a pre-packed int8 product; see the module docstring.
    ``reduce_range`` (default: :func:`saturates_u8s8` of this CPU) quantizes the query to 7 bits."""

    def __init__(self, emb: np.ndarray | None, threads: int = 1, reduce_range: bool | None = None,
                 rows: tuple[np.ndarray, np.ndarray] | None = None, cache_key: str | None = None):
        """``emb`` float32 rows to quantize, or ``rows`` = (int8 rows, scales) already quantized (a
        lean catalog: nothing to convert at load). With ``cache_key`` (what identifies ``rows``, e.g.
        the bundle files' sha256), the scoring model is kept in the cache folder and the next start
        opens it without reading the rows (a million-row catalog: ~1 s instead of ~3 s)."""
        from .cache import cache_dir, prune, used
        from .ortload import onnxruntime

        ort = onnxruntime()
        self.reduce_range = saturates_u8s8() if reduce_range is None else bool(reduce_range)
        self.levels, self.zero = (63, 64) if self.reduce_range else (127, 128)
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.log_severity_level = 3
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if cache_key is not None and rows is not None:
            self.n, self.dim = rows[0].shape
            path = cache_dir() / "int8-index" / f"{cache_key}-z{self.zero}.onnx"
            try:
                if path.is_file():
                    used(path)
                else:
                    write_int8_scoring_model(path, rows[0], rows[1], self.zero)
                    prune(keep=(path,))
                try:
                    self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
                    return
                except Exception as exc:  # a damaged cache file: build it again
                    if isinstance(exc, OSError):
                        raise
                    log.warning("rebuilding the cached int8 index %s (%s)", path, exc)
                    write_int8_scoring_model(path, rows[0], rows[1], self.zero)
                    self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
                    return
            except OSError as exc:  # a full or read-only cache folder: the index is built in memory this time
                log.warning("int8 index cache not written to %s (%s); building it in memory", path.parent,
                            exc.strerror or exc)
        q, scale = rows if rows is not None else quantize_rows(np.asarray(emb, np.float32))
        self.n, self.dim = q.shape
        model = int8_scoring_model(q, scale, self.zero)
        del q
        self.session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])

    def quantize_query(self, u: np.ndarray) -> tuple[np.ndarray, float]:
        """(u8 query [1, D], its scale): symmetric around the zero point, 8 or 7 bits."""
        amax = float(np.abs(u).max())
        s = amax / self.levels if amax > 0 else 1.0
        return (np.clip(np.rint(u / s), -self.levels, self.levels) + self.zero).astype(np.uint8)[None], s

    def scores(self, u: np.ndarray) -> np.ndarray:
        uq, s = self.quantize_query(u)
        return self.session.run(None, {"u": uq, "u_scale": np.array([s], np.float32)})[0][0]


class CatalogScorer:
    """``catalog.emb @ u`` for every row, through the int8 index when it pays off (``mode``)."""

    def __init__(self, mode: str = "auto", threads: int = 1, refine_top: int = REFINE_TOP,
                 ann_candidates: int = 1000, ann_nprobe: int = 64):
        """``refine_top``: the index's best rows scored again exactly (0 = the int8 scores as they are).
        ``ann_*``: mode ``ann`` (``catalog_ann.py``): rows the approximate index proposes per request, and
        how many of its clusters it scans."""
        if mode not in MODES:
            raise ValueError(f"catalog scoring mode {mode!r}; choose one of {', '.join(MODES)}")
        if refine_top < 0:
            raise ValueError(f"refine_top must be >= 0, got {refine_top}")
        self.mode, self.threads, self.refine_top = mode, threads, int(refine_top)
        self.ann_candidates, self.ann_nprobe = int(ann_candidates), int(ann_nprobe)
        self.index: Int8Index | None = None
        self.ann = None  # catalog_ann.AnnIndex in mode "ann"
        self.popular = np.zeros(0, np.int64)  # mode "ann": the most popular rows, always candidates

    @property
    def approximate(self) -> bool:
        """Whether requests read a candidate set (mode ``ann``) instead of scoring every row."""
        return self.mode == "ann"

    def build(self, catalog) -> None:
        """(Re)build the int8 index over the catalog's current rows (call with the catalog lock held)."""
        n = len(catalog.emb)
        if self.approximate:
            from .catalog_ann import AnnIndex

            emb = catalog.emb
            key = getattr(emb, "key", None)
            # over the bundle's stored rows (the cache key names them): rows added on the device since are
            # candidates anyway, so a restart with other additions reopens the cached index
            n_rows = emb.n0 if isinstance(emb, Int8Rows) else len(emb)
            self.ann = AnnIndex(emb, self.ann_nprobe, self.threads, cache_key=key, n=n_rows)
            catalog.changed_rows = set(getattr(emb, "overwritten", ())) if isinstance(emb, Int8Rows) else set()
            self.popular = top_n(catalog.pop[: self.ann.n], None, 256)
            if isinstance(emb, Int8Rows):
                emb.release_pages()
            log.info("approximate catalog index over %d items (nprobe %d, %d candidates)", self.ann.n,
                     self.ann.nprobe, self.ann_candidates)
            return
        if self.uses_index(n):
            emb = catalog.emb
            if isinstance(emb, Int8Rows):  # the stored int8 rows as they are; overwritten rows stay exact
                self.index = Int8Index(None, self.threads, rows=(emb.q, emb.scale), cache_key=emb.key)
                catalog.changed_rows = set(emb.overwritten)
                emb.release_pages()  # building read every row; requests gather only a few
            else:
                self.index = Int8Index(emb, self.threads)
                catalog.changed_rows.clear()
            log.info("int8 catalog index over %d items", self.index.n)
        else:
            self.index = None

    def uses_index(self, n: int) -> bool:
        """Whether a catalog of ``n`` rows is scored through the int8 index."""
        return uses_index(self.mode, n)

    def candidates(self, catalog, u: np.ndarray) -> np.ndarray:
        """Mode ``ann``: the rows a request scores (unsorted, may repeat): the approximate index's best
        ``ann_candidates`` for ``u``, the most popular rows, and every row added or changed on the device
        since the index was built (scored exactly like the others)."""
        ann = self.ann
        parts = [ann.search(u, self.ann_candidates), self.popular, np.arange(ann.n, len(catalog.emb), dtype=np.int64)]
        if catalog.changed_rows:
            parts.append(np.fromiter(catalog.changed_rows, np.int64, len(catalog.changed_rows)))
        return np.concatenate(parts)

    def scores(self, catalog, u: np.ndarray) -> np.ndarray:
        idx = self.index
        if idx is None:  # numpy float32 (blocked for int8 rows); also mode ann's offline scoring (score_all)
            return catalog.emb @ u
        n = len(catalog.emb)
        out = np.empty(n, np.float32)
        out[: idx.n] = idx.scores(u)
        if self.refine_top:  # the index's best rows, exactly (see the module docstring)
            best = top_n(out[: idx.n], None, self.refine_top)
            out[best] = catalog.emb[best] @ u
        if n > idx.n:  # items added on device after the index was built
            out[idx.n :] = catalog.emb[idx.n :] @ u
        if catalog.changed_rows:  # rows updated in place: exact float32 scores
            rows = np.fromiter(catalog.changed_rows, np.int64, len(catalog.changed_rows))
            out[rows] = catalog.emb[rows] @ u
        return out


def uses_index(mode: str, n: int) -> bool:
    """Whether catalog scoring ``mode`` scores ``n`` rows through the int8 index (auto: from AUTO_MIN_ITEMS)."""
    return mode == "int8" or (mode == "auto" and n >= AUTO_MIN_ITEMS)


def top_n(scores: np.ndarray, cand_mask: np.ndarray | None, n: int, block: int | None = None) -> np.ndarray:
    """Indices of the ``n`` best-scoring rows where ``cand_mask`` is true (None: every row), unordered.

    Blocked: the n-th best block maximum is a lower bound on the n-th best score, so only rows at or
    above it need a partial sort (0.3 ms instead of 10 ms for argpartition over 1M rows here).
    """
    if cand_mask is None:
        s, n_cand = np.asarray(scores).astype(np.float32, copy=False), len(scores)
    else:
        s, n_cand = np.where(cand_mask, scores, -np.inf).astype(np.float32, copy=False), int(cand_mask.sum())
    n = min(n, n_cand)
    if n <= 0:
        return np.zeros(0, np.int64)
    # ~8 blocks per wanted row: few rows reach the threshold, and the block maxima stay cheap
    block = block or int(np.clip(len(s) // (8 * max(n, 1)), 16, 1024))
    nb = len(s) // block
    if nb > 4 * n:
        bm = s[: nb * block].reshape(nb, block).max(axis=1)
        thr = np.partition(bm, nb - n)[nb - n]
        if np.isfinite(thr):
            c = np.flatnonzero(s >= thr)
            return c[np.argpartition(-s[c], n - 1)[:n]] if len(c) > n else c
    c = np.arange(len(s)) if cand_mask is None else np.flatnonzero(cand_mask)
    return c[np.argpartition(-s[c], n - 1)[:n]] if len(c) > n else c
