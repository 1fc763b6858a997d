"""The runtime's cache folder stays under GENRE_CACHE_MAX_MB on a device that receives bundle after bundle:
entries of bundles no longer used are removed, least recently used first; the bundle in use keeps its own."""
import os
import time

import pytest

from conftest import needs_tiny_bundle

MB = 1 << 20


def _entry(folder, name, mb: float, age_s: float):
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_bytes(b"\0" * int(mb * MB))
    t = time.time() - age_s
    os.utime(p, (t, t))
    return p


def test_prune_removes_the_least_recently_used_down_to_the_cap(tmp_path, monkeypatch):
    from genre_edge.cache import prune

    monkeypatch.setenv("GENRE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("GENRE_CACHE_MAX_MB", "3")
    day = 24 * 3600
    oldest = _entry(tmp_path / "ort", "a-old.onnx", 1, 30 * day)
    older = _entry(tmp_path / "int8-index", "b-old.onnx", 1, 20 * day)
    newer = _entry(tmp_path / "ann-index", "c.faiss", 1, 10 * day)
    kept = _entry(tmp_path / "ort", "d-this-start.onnx", 1.5, 5 * day)  # written by this start: never pruned
    recent = _entry(tmp_path / "ort", "e-in-use.onnx", 0.5, 60)  # used a minute ago by another process
    stale_tmp = _entry(tmp_path / "ort", "x.onnx.123.tmp", 0.1, 2 * day)  # left by a process that died writing
    fresh_tmp = _entry(tmp_path / "ort", "y.onnx.456.tmp", 0.1, 10)  # being written now
    not_ours = _entry(tmp_path / "data", "ml-100k.zip", 5, 90 * day)  # the export side's data cache: not pruned
    removed = prune(keep=(kept,))
    assert set(removed) == {oldest, older, stale_tmp}
    assert all(p.exists() for p in (newer, kept, recent, fresh_tmp, not_ours))
    assert sum(p.stat().st_size for p in (newer, kept, recent)) <= 3 * MB
    # under the cap already: nothing goes
    assert prune() == [] and newer.exists()


def test_a_bad_cap_is_refused_by_name(monkeypatch, tmp_path):
    from genre_edge.cache import max_bytes
    from genre_edge.errors import ConfigError

    monkeypatch.setenv("GENRE_CACHE_DIR", str(tmp_path))
    for bad in ("-1", "lots", "nan"):
        monkeypatch.setenv("GENRE_CACHE_MAX_MB", bad)
        with pytest.raises(ConfigError, match=rf"GENRE_CACHE_MAX_MB='{bad}': expected a size in MiB, a number >= 0"):
            max_bytes()
    monkeypatch.setenv("GENRE_CACHE_MAX_MB", "0.5")
    assert max_bytes() == MB // 2
    monkeypatch.delenv("GENRE_CACHE_MAX_MB")
    assert max_bytes() == 1024 * MB


@needs_tiny_bundle
def test_loading_a_new_bundle_prunes_old_bundles_entries_and_touches_its_own(tiny_bundle, tmp_path, monkeypatch):
    """A start that writes its optimized graphs removes the entries of bundles it replaced (over the cap);
    a later start that reuses its entries marks them used, so they are the last to go."""
    from genre_edge.recommender import Recommender

    monkeypatch.setenv("GENRE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("GENRE_CACHE_MAX_MB", "1")
    old = [_entry(tmp_path / "ort", f"old-bundle-{i}.onnx", 0.4, (30 - i) * 24 * 3600) for i in range(3)]
    Recommender.load(tiny_bundle / "bundle", "x86-avx512-vnni")
    mine = [p for p in (tmp_path / "ort").iterdir() if not p.name.startswith("old-bundle")]
    assert mine and not any(p.name.endswith(".tmp") for p in mine)
    room = 1 * MB - sum(p.stat().st_size for p in mine)
    left = [p for p in old if p.exists()]
    assert left == old[len(old) - len(left):]  # the oldest went first
    assert sum(p.stat().st_size for p in left) <= max(room, 0)
    assert len(left) < len(old)
    t = time.time() - 3600
    for p in mine:
        os.utime(p, (t, t))
    Recommender.load(tiny_bundle / "bundle", "x86-avx512-vnni")  # reads its entries: they count as used now
    assert all(p.stat().st_mtime > time.time() - 60 for p in mine)


@needs_tiny_bundle
def test_a_bad_cap_stops_a_start_that_caches(tiny_bundle, tmp_path, monkeypatch):
    from genre_edge.errors import ConfigError
    from genre_edge.recommender import Recommender

    monkeypatch.setenv("GENRE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("GENRE_CACHE_MAX_MB", "1GB")
    with pytest.raises(ConfigError, match="GENRE_CACHE_MAX_MB='1GB'"):
        Recommender.load(tiny_bundle / "bundle", "x86-avx512-vnni")


@pytest.mark.parametrize("kind", ["int8-index", "int4-index", "ann-index"])
def test_index_caches_are_marked_used_when_reopened(kind, tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.setenv("GENRE_CACHE_DIR", str(tmp_path))
    rows = np.random.default_rng(0).standard_normal((3000, 16)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    if kind == "int8-index":
        from genre_edge.catalog_index import Int8Index, quantize_rows

        make = lambda: Int8Index(None, rows=quantize_rows(rows), cache_key="k")  # noqa: E731
    elif kind == "int4-index":
        from genre_edge.catalog_index import Int4Index, quantize_rows

        make = lambda: Int4Index(None, rows=quantize_rows(rows), cache_key="k")  # noqa: E731
    else:
        pytest.importorskip("faiss", reason="the ann extra (faiss-cpu; `make test` installs it)")
        from genre_edge.catalog_ann import AnnIndex

        make = lambda: AnnIndex(rows, nprobe=8, cache_key="k")  # noqa: E731
    make()
    (entry,) = list((tmp_path / kind).iterdir())
    t = time.time() - 7 * 24 * 3600
    os.utime(entry, (t, t))
    ino = entry.stat().st_ino
    make()
    assert entry.stat().st_ino == ino and entry.stat().st_mtime > time.time() - 60
