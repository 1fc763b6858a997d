"""Bulk catalog embedding: item texts -> the bundle's encoder -> sharded Parquet files + a manifest.

Two engines, one output format. ``local`` runs the encoder in this process, batch by batch.
``ray`` runs it with Ray Data (the ``scale`` extra): ``read_json`` over the items file,
``map_batches`` over one ONNX Runtime session per worker (CPU, or CUDA with ``device="cuda"``, a
GPU profile and onnxruntime-gpu), ``write_parquet``; on a laptop a local Ray instance starts, on a
cluster ``address`` (or ``RAY_ADDRESS``) names it. Measured on an x86 + H200 stand-in, the fp16
student embeds ~39,000 texts/s at batch 256 against 224/s on one CPU thread: re-embedding a
10M-item catalog is a job for GPUs or a cluster, not for the device.

Output (``out``): ``shards/*.parquet`` with columns ``id`` (string) and ``embedding`` (float32 x dim,
L2-normalised), and ``embeddings.json``: the bundle and encoder variant (with the encoder file's
sha256) that produced them, the text template, rows, dim, and each shard's rows and sha256.
:func:`read_embeddings` checks all of it; ``genre export --catalog-embeddings`` takes such a folder as
the stored catalog of the variant it was made with (the encoder file's sha256 must match).
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from genre_edge.catalog import ITEM_KEYS, ItemInput, item_records, item_text
from genre_edge.errors import ConfigError, GenreError
from genre_edge.fsutil import atomic_write_json

from . import require

log = logging.getLogger(__name__)

FORMAT = "genre-embeddings/1"
MANIFEST = "embeddings.json"
ENGINES = ("local", "ray")
DEVICES = ("cpu", "cuda")


def read_items(path: str | Path):
    """Items of a JSON-lines file (``{id, title, categories?, year?, text?}`` per line) or a CSV / TSV with those
    columns, as ``genre items add --file`` reads them, validated; a bad line raises naming the file and line."""
    with open(path, encoding="utf-8", newline="") as fh:  # newline="": quoted CSV fields may hold line breaks
        records = item_records(fh, str(path))
        while True:
            try:
                n, obj = next(records)
            except StopIteration:
                return
            except GenreError as exc:
                raise ConfigError(str(exc)) from None
            try:
                yield ItemInput(**obj).validate()
            except (TypeError, ValueError, GenreError) as exc:
                raise ConfigError(f"{path}:{n}: {exc}") from None


def _schema(dim: int):
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("embedding", pa.list_(pa.float32(), dim))])


def _table(ids: list[str], emb: np.ndarray):
    import pyarrow as pa

    dim = emb.shape[1]
    flat = pa.array(np.ascontiguousarray(emb, np.float32).reshape(-1), pa.float32())
    return pa.Table.from_arrays([pa.array(ids, pa.string()), pa.FixedSizeListArray.from_arrays(flat, dim)],
                                schema=_schema(dim))


class EmbedBatch:
    """One worker's encoder (a Ray actor holds one; the local engine one too): a batch of item records
    in, a table of ids and embeddings out."""

    def __init__(self, bundle: str, profile: str = "auto", variant: str | None = None):
        from genre_edge.recommender import load_encoder

        self.encoder, self.variant, b = load_encoder(bundle, profile, variant)
        self.template = b.manifest.scoring.template

    def texts(self, items: list[ItemInput]) -> list[str]:
        return [item_text(self.template, it) for it in items]

    def __call__(self, batch):
        """A Ray Data batch (pyarrow Table of item records) -> pyarrow Table (id, embedding)."""
        rows = batch.to_pylist()
        items = [ItemInput(**{k: v for k, v in r.items() if k in ITEM_KEYS and v is not None}) for r in rows]
        return _table([it.id for it in items], self.encoder.embed(self.texts(items)))


def embed_catalog(bundle: str | Path, items_path: str | Path, out: str | Path, engine: str = "local",
                  profile: str = "auto", variant: str | None = None, batch_size: int = 256, workers: int = 1,
                  device: str = "cpu", shard_rows: int = 100_000, address: str | None = None,
                  progress=None) -> dict:
    """Embed every item of ``items_path`` with the bundle's encoder into ``out`` (see the module
    docstring); returns the manifest. ``out`` must not hold an earlier result (nothing is overwritten)."""
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if device not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    for name, v, lo in (("batch_size", batch_size, 1), ("workers", workers, 1), ("shard_rows", shard_rows, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ConfigError(f"{name} must be an integer >= {lo}, got {v!r}")
    if engine == "local" and (workers != 1 or address):
        raise ConfigError("workers and address are the Ray engine's (--engine ray); the local engine runs in this "
                          "process")
    if device == "cuda" and profile == "auto":
        profile = "x86-cuda"  # a GPU does not mean the GPU build is installed: the profile says so explicitly
    items_path, out = Path(items_path), Path(out)
    if not items_path.is_file():
        raise ConfigError(f"items file {items_path} does not exist")
    with open(items_path, "rb") as fh:  # an empty file would leave a manifest of 0 shards that no export can use
        if not any(line.strip() for line in fh):
            raise ConfigError(f"items file {items_path} holds no items (JSON lines: one {{id, title, ...}} per line)")
    if (out / MANIFEST).exists() or (out / "shards").exists():
        raise ConfigError(f"{out} already holds embeddings: choose a new folder (nothing is overwritten)")
    require("pyarrow", "scale", "bulk embedding (Parquet shards)")
    from genre_edge.bundle import open_bundle

    b = open_bundle(bundle, verify=True)
    probe = EmbedBatch(str(bundle), profile, variant)  # fails early (bad profile/variant) and names the variant
    chosen = probe.variant
    if engine == "local" and device == "cuda" and "CUDAExecutionProvider" not in probe.encoder.session.get_providers():
        # (Ray workers may run elsewhere, with their own onnxruntime: they are not judged by this process)
        raise ConfigError("device cuda: this process's onnxruntime runs the encoder on "
                          f"{probe.encoder.session.get_providers()[0]}, not CUDA (install the GPU build: pip uninstall "
                          "-y onnxruntime && pip install onnxruntime-gpu; README 'GPU hosts'), or use device cpu")
    enc_file = b.manifest.models.encoder[chosen].file
    t0 = time.perf_counter()
    tmp, made_out = out / "shards.tmp", not out.exists()
    if tmp.exists():  # an interrupted run's partial shards: never part of a manifest, so nothing is lost
        log.warning("removing %s left by an interrupted run", tmp)
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        if engine == "local":
            n = _embed_local(probe, items_path, tmp, batch_size, shard_rows, progress)
        else:
            del probe
            n = _embed_ray(str(bundle), profile, chosen, items_path, tmp, batch_size, workers, device,
                           shard_rows, address)
    except BaseException:
        # a bad line or an interrupt: no partial shards left behind (a retry into the same folder starts clean)
        shutil.rmtree(tmp, ignore_errors=True)
        if made_out and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    seconds = time.perf_counter() - t0
    (out / "shards.tmp").rename(out / "shards")
    shards = []
    for f in sorted((out / "shards").glob("*.parquet")):
        import pyarrow.parquet as pq

        shards.append({"file": f"shards/{f.name}", "rows": pq.ParquetFile(f).metadata.num_rows, "sha256": _sha256(f)})
    rows = sum(s["rows"] for s in shards)
    if rows != n:
        raise RuntimeError(f"wrote {rows} rows but embedded {n}")
    manifest = {"format": FORMAT, "bundle": Path(bundle).name, "variant": chosen,
                "encoder_file": enc_file, "encoder_sha256": b.sha256(enc_file), "template": b.manifest.scoring.template,
                "dim": b.manifest.dim, "rows": rows, "engine": engine, "device": device, "workers": workers,
                "batch_size": batch_size, "seconds": round(seconds, 3), "texts_per_s": round(rows / max(seconds, 1e-9), 1),
                "shards": shards}
    atomic_write_json(out / MANIFEST, manifest)
    log.info("embedded %d items in %.1f s (%.0f texts/s, %s engine)", rows, seconds, manifest["texts_per_s"], engine)
    return manifest


def _embed_local(emb: EmbedBatch, items_path: Path, shards: Path, batch_size: int, shard_rows: int, progress) -> int:
    import pyarrow.parquet as pq

    n, k, ids, vecs, buf = 0, 0, [], [], []

    def flush():
        nonlocal k, ids, vecs
        if ids:
            tmp = shards / f"part-{k:05d}.parquet.tmp"
            pq.write_table(_table(ids, np.concatenate(vecs)), tmp)
            tmp.rename(shards / f"part-{k:05d}.parquet")
            k, ids, vecs = k + 1, [], []

    def run(batch):
        nonlocal n
        vecs.append(emb.encoder.embed(emb.texts(batch)))
        ids.extend(it.id for it in batch)
        n += len(batch)
        if progress:
            progress(n)
        if len(ids) >= shard_rows:
            flush()

    seen = set()
    for it in read_items(items_path):
        if it.id in seen:
            raise ConfigError(f"{items_path}: item id {it.id!r} appears twice")
        seen.add(it.id)
        buf.append(it)
        if len(buf) == batch_size:
            run(buf)
            buf = []
    if buf:
        run(buf)
    flush()
    return n


def _embed_ray(bundle: str, profile: str, variant: str | None, items_path: Path, shards: Path, batch_size: int,
               workers: int, device: str, shard_rows: int, address: str | None) -> int:
    if str(items_path).lower().endswith((".csv", ".tsv")):
        raise ConfigError(f"{items_path}: the ray engine reads JSON lines (one {{id, title, ...}} object a line); "
                          "--engine local reads CSV / TSV too")
    require("ray.data", "scale", "the ray engine of bulk embedding")
    import ray

    ids = [it.id for it in read_items(items_path)]  # validated once, here, with line numbers in the errors
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{items_path}: item ids are not unique")
    logging.getLogger("ray").setLevel(logging.WARNING)  # Ray Data's per-stage INFO lines: our progress is the log
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 logging_level=logging.WARNING,
                 **({} if address else {"num_cpus": workers + 1}))
    try:
        import pyarrow as pa
        import pyarrow.json as pajson

        # the item schema, explicitly: type inference would read ids such as "50" as numbers
        schema = pa.schema([("id", pa.string()), ("title", pa.string()), ("categories", pa.list_(pa.string())),
                            ("year", pa.int64()), ("text", pa.string()), ("timestamp", pa.int64())])
        ds = ray.data.read_json(str(items_path),  # pyarrow reads JSON lines
                                parse_options=pajson.ParseOptions(explicit_schema=schema, newlines_in_values=False))
        ds = ds.map_batches(EmbedBatch, fn_constructor_kwargs={"bundle": bundle, "profile": profile, "variant": variant},
                            batch_size=batch_size, batch_format="pyarrow", concurrency=workers,
                            num_gpus=1 if device == "cuda" else 0, num_cpus=1)
        ds.write_parquet(str(shards), max_rows_per_file=shard_rows)
    finally:
        if started:
            ray.shutdown()
    return len(ids)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_embeddings(folder: str | Path) -> tuple[dict, list[str], np.ndarray]:
    """``(manifest, ids, embeddings [N, dim] float32)`` of an :func:`embed_catalog` folder, every shard's
    sha256 and row count checked against the manifest."""
    require("pyarrow", "scale", "reading bulk embeddings (Parquet shards)")
    import pyarrow.parquet as pq

    folder = Path(folder)
    try:
        m = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{folder}: no readable {MANIFEST} ({exc})") from None
    if m.get("format") != FORMAT:
        raise ConfigError(f"{folder}/{MANIFEST}: format {m.get('format')!r}, expected {FORMAT!r}")
    ids, parts = [], []
    for s in m["shards"]:
        f = folder / s["file"]
        if not f.is_file() or _sha256(f) != s["sha256"]:
            raise ConfigError(f"{f}: missing or changed since it was written (sha256 differs from {MANIFEST})")
        t = pq.read_table(f)
        col = t.column("embedding").combine_chunks()
        e = np.asarray(col.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(len(t), -1)
        if e.shape[1] != m["dim"] or len(t) != s["rows"]:
            raise ConfigError(f"{f}: {len(t)} rows of dim {e.shape[1]}, the manifest says {s['rows']} of dim {m['dim']}")
        ids += t.column("id").to_pylist()
        parts.append(e)
    emb = np.concatenate(parts) if parts else np.zeros((0, m["dim"]), np.float32)
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{folder}: an item id appears in more than one row")
    return m, ids, emb
