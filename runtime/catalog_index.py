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

On such CPUs the 8-bit scan is also where a request spends its time, and it is bound by memory bandwidth
(100k items: 38.4 MB read per request, 2.4-2.8 ms on a real AVX2-only EPYC at ~14 GB/s, the speed numpy sums
memory at there). So mode ``auto`` scans 4-bit rows there instead, for embeddings of :data:`INT4_MIN_DIM`
dimensions or more (:class:`Int4Index`: blocks of 32 values
with one float scale each, ONNX Runtime's ``MatMulNBits`` with int8 compute): 24 MB, 1.7 ms, and 4-bit x
8-bit products cannot saturate. It finds candidates less precisely, so its best ``REFINE_TOP_INT4`` rows are
re-scored (256 gave a top-200 overlap of 0.979, 512 gives 1.000 there and with VNNI:
``benchmarks/index_bits.py``). With VNNI the 8-bit scan is as fast (1.21 vs 1.24 ms), so it stays there; the
Pis keep 8 bits until a real board says otherwise (emulated times say nothing).
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
REFINE_TOP_INT4 = 512  # the 4-bit index's candidates are coarser (index_bits.py: 256 rows gave 0.96-0.98)
INT4_BLOCK = 32  # values per scale: block 64 saves 2.4 MB at 100k items but kept a top-200 overlap of only 0.995
# auto picks 4 bits only for embeddings this wide: measured exact at 384 dims (requests at 100k items: the same
# lists as float32's), while at 32 dims (the tests' tiny model, one block a row) its errors (~0.1) swamp near-ties
INT4_MIN_DIM = 256
MODES = ("auto", "fp32", "int8", "int4", "ann")

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


def _node(op: str, inputs: list[str], outputs: list[str], domain: str = "", **ints: int) -> bytes:  # NodeProto
    # AttributeProto {name=1, i=3, type=20 (INT=2)} per integer attribute; domain=7
    attrs = b"".join(_bytes(5, _bytes(1, k) + _int(3, v) + _int(20, 2)) for k, v in ints.items())
    return (b"".join(_bytes(1, i) for i in inputs) + b"".join(_bytes(2, o) for o in outputs) + _bytes(4, op) + attrs
            + (_bytes(7, domain) if domain else b""))


def _opset(domain: str, version: int) -> bytes:  # ModelProto.opset_import (OperatorSetIdProto)
    return _bytes(8, _bytes(1, domain) + _int(2, version))


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
    return [_int(1, 8) + _bytes(2, "genre-edge"), *_field(7, graph), _opset("", 17)]


def _join(parts: list) -> bytes:
    return b"".join(p.tobytes() if isinstance(p, np.ndarray) else p for p in parts)


def int8_scoring_model(q_rows: np.ndarray, scales: np.ndarray, zero_point: int = 128) -> bytes:
    """ONNX model bytes: scores[1, N] = (q_rows int8 [N, D]) . (u8 query - zero_point) * scales[N] * q_scale."""
    return _join(_model_parts(q_rows, scales, zero_point))


def write_int8_scoring_model(path: Path, q_rows: np.ndarray, scales: np.ndarray, zero_point: int = 128) -> None:
    """:func:`int8_scoring_model` written to ``path`` piece by piece (atomically: temp file, then rename)."""
    write_model(path, _model_parts(q_rows, scales, zero_point))


def _int4_model_parts(packed: np.ndarray, scales: np.ndarray, dim: int, block: int) -> list:
    """scores[1, N] = u float [1, dim] . rows, the rows 4-bit (``packed`` [N, blocks, block / 2], two values a
    byte, the low nibble first, zero point 8) with one scale per block (``scales`` [N, blocks]):
    ``MatMulNBits`` (com.microsoft), int8 compute (``accuracy_level`` 4)."""
    n = packed.shape[0]
    node = _node("MatMulNBits", ["u", "catalog_q4", "scales"], ["scores"], domain="com.microsoft", K=dim, N=n, bits=4,
                 block_size=block, accuracy_level=4)
    tensor = [b"".join(_int(1, d) for d in packed.shape) + _int(2, _UINT8) + _bytes(8, "catalog_q4"),
              *_field(9, [np.ascontiguousarray(packed)])]
    graph = [
        _bytes(1, node) + _bytes(2, "genre_int4_catalog"),
        *_field(5, tensor),
        _bytes(5, _tensor("scales", scales.reshape(-1).astype(np.float32), _FLOAT))
        + _bytes(11, _value_info("u", _FLOAT, [1, dim]))
        + _bytes(12, _value_info("scores", _FLOAT, [1, n])),
    ]
    return [_int(1, 8) + _bytes(2, "genre-edge"), *_field(7, graph), _opset("", 17), _opset("com.microsoft", 1)]


def quantize_rows_int4(emb, block: int = INT4_BLOCK, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """4-bit rows in blocks along the embedding, symmetric per block (values -7..7 around zero point 8; a
    dimension that is not a multiple of ``block`` is padded with zeros): (packed uint8 [N, blocks, block / 2],
    scales float32 [N, blocks]). ``emb`` is float rows, or (int8 rows, scales) as the bundle stores them,
    converted ``chunk`` rows at a time (a million-row catalog never exists as float32 at once)."""
    q8, s8 = emb if isinstance(emb, tuple) else (emb, None)
    n, d = q8.shape
    nblk = -(-d // block)
    packed = np.empty((n, nblk, block // 2), np.uint8)
    scales = np.empty((n, nblk), np.float32)
    for a in range(0, n, chunk):
        x = np.asarray(q8[a: a + chunk], np.float32)
        if s8 is not None:
            x *= np.asarray(s8[a: a + chunk], np.float32)[:, None]
        if nblk * block != d:
            x = np.pad(x, ((0, 0), (0, nblk * block - d)))
        w = x.reshape(len(x), nblk, block)
        amax = np.abs(w).max(axis=2)
        sc = np.where(amax > 0, amax / 7.0, 1.0).astype(np.float32)
        q = (np.clip(np.rint(w / sc[..., None]), -7, 7) + 8).astype(np.uint8)
        packed[a: a + chunk] = q[..., 0::2] | (q[..., 1::2] << 4)
        scales[a: a + chunk] = sc
    return packed, scales


def write_model(path: Path, parts: list) -> None:
    """A model given as parts (bytes and arrays) written to ``path`` piece by piece, atomically."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            for p in parts:
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


def _session_options(threads: int):
    from .ortload import onnxruntime

    so = onnxruntime().SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def _cached_session(path: Path, parts, so, what: str):
    """A session on the scoring model kept at ``path`` in the cache folder: opened if there, else written from
    ``parts()`` first (a damaged file is written again). None where the folder cannot be written or read (full,
    read-only): the caller builds the model in memory this time."""
    from .cache import prune, used
    from .ortload import onnxruntime

    ort = onnxruntime()
    try:
        if path.is_file():
            used(path)
        else:
            write_model(path, parts())
            prune(keep=(path,))
        try:
            return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a damaged cache file: build it again
            if isinstance(exc, OSError):
                raise
            log.warning("rebuilding the cached %s %s (%s)", what, path, exc)
            write_model(path, parts())
            return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except OSError as exc:
        log.warning("%s cache not written to %s (%s); building it in memory", what, path.parent, exc.strerror or exc)
        return None


def _memory_session(parts: list, so):
    from .ortload import onnxruntime

    return onnxruntime().InferenceSession(_join(parts), so, providers=["CPUExecutionProvider"])


class Int8Index:
    """Scores the first ``n`` catalog rows with a pre-packed int8 product; see the module docstring.
    ``reduce_range`` (default: :func:`saturates_u8s8` of this CPU) quantizes the query to 7 bits."""

    bits = 8

    def __init__(self, emb: np.ndarray | None, threads: int = 1, reduce_range: bool | None = None,
                 rows: tuple[np.ndarray, np.ndarray] | None = None, cache_key: str | None = None):
        """``emb`` float32 rows to quantize, or ``rows`` = (int8 rows, scales) already quantized (a
        lean catalog: nothing to convert at load). With ``cache_key`` (what identifies ``rows``, e.g.
        the bundle files' sha256), the scoring model is kept in the cache folder and the next start
        opens it without reading the rows (a million-row catalog: ~1 s instead of ~3 s)."""
        from .cache import cache_dir

        self.reduce_range = saturates_u8s8() if reduce_range is None else bool(reduce_range)
        self.levels, self.zero = (63, 64) if self.reduce_range else (127, 128)
        so = _session_options(threads)
        if cache_key is not None and rows is not None:
            self.n, self.dim = rows[0].shape
            self.session = _cached_session(cache_dir() / "int8-index" / f"{cache_key}-z{self.zero}.onnx",
                                           lambda: _model_parts(rows[0], rows[1], self.zero), so, "int8 index")
            if self.session is not None:
                return
        q, scale = rows if rows is not None else quantize_rows(np.asarray(emb, np.float32))
        self.n, self.dim = q.shape
        self.session = _memory_session(_model_parts(q, scale, self.zero), so)

    def quantize_query(self, u: np.ndarray) -> tuple[np.ndarray, float]:
        """(u8 query [1, D], its scale): symmetric around the zero point, 8 or 7 bits."""
        amax = float(np.abs(u).max())
        s = amax / self.levels if amax > 0 else 1.0
        return (np.clip(np.rint(u / s), -self.levels, self.levels) + self.zero).astype(np.uint8)[None], s

    def scores(self, u: np.ndarray) -> np.ndarray:
        uq, s = self.quantize_query(u)
        return self.session.run(None, {"u": uq, "u_scale": np.array([s], np.float32)})[0][0]


class Int4Index:
    """Scores the first ``n`` catalog rows with 4-bit rows (blocks of ``block`` values, a float scale each;
    ONNX Runtime's ``MatMulNBits``, int8 compute): half the bytes of :class:`Int8Index`'s scan, coarser
    scores (re-score its best :data:`REFINE_TOP_INT4` rows). Arguments as :class:`Int8Index`'s (no
    ``reduce_range``: the query stays float, the kernel quantizes it per block to int8, and 4-bit x 8-bit
    products cannot saturate)."""

    bits = 4

    def __init__(self, emb: np.ndarray | None, threads: int = 1, rows: tuple[np.ndarray, np.ndarray] | None = None,
                 cache_key: str | None = None, block: int = INT4_BLOCK):
        from .cache import cache_dir

        if block < 16 or block & (block - 1):
            raise ValueError(f"4-bit block size must be a power of 2 from 16 on, got {block}")
        src = rows if rows is not None else np.asarray(emb, np.float32)
        self.n, self.dim = (rows[0] if rows is not None else src).shape
        self.block = block
        so = _session_options(threads)

        def parts():
            packed, scales = quantize_rows_int4(src, block)
            return _int4_model_parts(packed, scales, self.dim, block)
        if cache_key is not None and rows is not None:
            self.session = _cached_session(cache_dir() / "int4-index" / f"{cache_key}-b{block}.onnx", parts, so,
                                           "4-bit index")
            if self.session is not None:
                return
        self.session = _memory_session(parts(), so)

    def scores(self, u: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"u": np.asarray(u, np.float32)[None]})[0][0]


class CatalogScorer:
    """``catalog.emb @ u`` for every row, through an int8 or 4-bit index when it pays off (``mode``: auto =
    an index from :data:`AUTO_MIN_ITEMS` rows on, 4-bit on CPUs whose 8-bit kernel saturates (x86 without
    VNNI; see the module docstring), 8-bit elsewhere)."""

    def __init__(self, mode: str = "auto", threads: int = 1, refine_top: int | None = None,
                 ann_candidates: int = 1000, ann_nprobe: int = 64):
        """``refine_top``: the index's best rows scored again exactly (0 = the index's scores as they are;
        None: :data:`REFINE_TOP` for the 8-bit index, :data:`REFINE_TOP_INT4` for the 4-bit one).
        ``ann_*``: mode ``ann`` (``catalog_ann.py``): rows the approximate index proposes per request, and
        how many of its clusters it scans."""
        if mode not in MODES:
            raise ValueError(f"catalog scoring mode {mode!r}; choose one of {', '.join(MODES)}")
        if refine_top is not None and refine_top < 0:
            raise ValueError(f"refine_top must be >= 0, got {refine_top}")
        self.mode, self.threads = mode, threads
        self._refine_top = None if refine_top is None else int(refine_top)
        self.ann_candidates, self.ann_nprobe = int(ann_candidates), int(ann_nprobe)
        self.index: Int8Index | Int4Index | None = None
        self.ann = None  # catalog_ann.AnnIndex in mode "ann"
        self.popular = np.zeros(0, np.int64)  # mode "ann": the most popular rows, always candidates

    @property
    def refine_top(self) -> int:
        """Rows of the index's best re-scored exactly per request."""
        if self._refine_top is not None:
            return self._refine_top
        return REFINE_TOP_INT4 if self.index is not None and self.index.bits == 4 else REFINE_TOP

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
            kind = Int4Index if index_bits(self.mode, emb.shape[1]) == 4 else Int8Index
            if isinstance(emb, Int8Rows):  # the stored int8 rows as they are; overwritten rows stay exact
                self.index = kind(None, self.threads, rows=(emb.q, emb.scale), cache_key=emb.key)
                catalog.changed_rows = set(emb.overwritten)
                emb.release_pages()  # building read every row; requests gather only a few
            else:
                self.index = kind(emb, self.threads)
                catalog.changed_rows.clear()
            log.info("%s catalog index over %d items", "4-bit" if kind is Int4Index else "int8", self.index.n)
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
        out = idx.scores(u)  # a fresh array of the index's n rows
        if n > idx.n:
            out = np.concatenate([out, np.empty(n - idx.n, np.float32)])
        refine = self.refine_top
        if refine:  # the index's best rows, exactly (see the module docstring)
            best = top_n(out[: idx.n], None, refine)
            out[best] = catalog.emb[best] @ u
        if n > idx.n:  # items added on device after the index was built
            out[idx.n :] = catalog.emb[idx.n :] @ u
        if catalog.changed_rows:  # rows updated in place: exact float32 scores
            rows = np.fromiter(catalog.changed_rows, np.int64, len(catalog.changed_rows))
            out[rows] = catalog.emb[rows] @ u
        return out


def uses_index(mode: str, n: int) -> bool:
    """Whether catalog scoring ``mode`` scores ``n`` rows through an index (auto: from AUTO_MIN_ITEMS)."""
    return mode in ("int8", "int4") or (mode == "auto" and n >= AUTO_MIN_ITEMS)


def index_bits(mode: str, dim: int) -> int:
    """Bits per value of the index ``mode`` builds over ``dim``-wide rows: 4 for ``int4``, and for ``auto`` where
    this CPU's 8-bit kernel saturates (:func:`saturates_u8s8`: there the 8-bit scan is also the slow part) and
    the rows are at least :data:`INT4_MIN_DIM` wide; else 8."""
    return 4 if mode == "int4" or (mode == "auto" and dim >= INT4_MIN_DIM and saturates_u8s8()) else 8


def index_bytes_per_row(bits: int, dim: int, block: int = INT4_BLOCK) -> int:
    """Memory an index holds per catalog row: 8-bit values (ONNX Runtime's packed copy; the scales are the
    catalog's), or 4-bit values and a float32 scale per ``block`` values."""
    return dim if bits == 8 else -(-dim // block) * (block // 2 + 4)


def top_n(scores: np.ndarray, cand_mask: np.ndarray | None, n: int, block: int | None = None) -> np.ndarray:
    """Indices of the ``n`` best-scoring rows where ``cand_mask`` is true (None: every row), unordered.

    Blocked: the rows are split into groups, and the n-th best group maximum is a lower bound on the
    n-th best score (n groups hold a row at least that good), so only rows at or above it need a partial
    sort (0.3 ms instead of 10 ms for argpartition over 1M rows here). Group g is rows g, g + G, g + 2G, ...
    (G groups): their maxima are one element-wise maximum over ``block`` contiguous slices, where
    contiguous groups cost a reduction per short row (100k rows: 0.08 ms instead of 0.17; any partition
    gives the same bound). The scalar arithmetic stays in Python: ``np.clip`` on a scalar took ~25 us.
    """
    if cand_mask is None:
        s, n_cand = np.asarray(scores).astype(np.float32, copy=False), len(scores)
    else:
        n_cand = int(np.count_nonzero(cand_mask))
        s = np.where(cand_mask, scores, np.float32(-np.inf)).astype(np.float32, copy=False)
    n = min(n, n_cand)
    if n <= 0:
        return np.zeros(0, np.int64)
    # ~8 groups per wanted row: few rows reach the threshold, and the group maxima stay cheap
    block = block or min(max(len(s) // (8 * n), 16), 1024)
    nb = len(s) // block
    if nb > 4 * n:
        bm = s[: nb * block].reshape(block, nb).max(axis=0)
        thr = np.partition(bm, nb - n)[nb - n]
        if np.isfinite(thr):
            c = np.flatnonzero(s >= thr)
            return c[np.argpartition(-s[c], n - 1)[:n]] if len(c) > n else c
    c = np.arange(len(s)) if cand_mask is None else np.flatnonzero(cand_mask)
    return c[np.argpartition(-s[c], n - 1)[:n]] if len(c) > n else c
