"""A full or read-only disk (an appliance's SD card, a firmware image's read-only state): a change that cannot
be written is refused whole with a clear error (CLI exit 1, HTTP 507), the files stay as they were, and
loading and serving go on; caches that cannot be written or read back are skipped, never fatal.

The disk fills for real: the writing process runs under a file-size limit (RLIMIT_FSIZE), so the kernel cuts
a write short and fails the next one, as a full disk does (EFBIG instead of ENOSPC)."""
import errno
import json
import os
import resource
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest

from conftest import needs_tiny_bundle

PROFILE = "x86-avx512-vnni"


def _limit(n_bytes: int):
    """preexec_fn: files this process writes stop growing at ``n_bytes`` (SIGXFSZ ignored: the write fails)."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return apply


def _ids(bundle, state) -> set[str]:
    """The on-device items a fresh load of ``state`` holds (the catalog as the next start sees it)."""
    from genre_edge.recommender import Recommender

    rec = Recommender.load(bundle, PROFILE, state_dir=state)
    return {r["id"] for r in rec.search_items("", 200, 0)["items"] if r["id"].startswith("disk")}


# the same process goes on after a refused change: a long-running server must not leave a cut line behind
CHILD = r"""
import json, os, resource, signal, sys
from genre_edge.errors import StorageError
from genre_edge.recommender import Recommender
bundle, state, mode = sys.argv[1:4]
rec = Recommender.load(bundle, "x86-avx512-vnni", state_dir=state)
item = lambda i: [{"id": f"disk{i}", "title": f"Film {i} of a disk that fills up", "categories": ["Drama"]}]
rec.add_items(item(0))
rec.add_items(item(1))  # a journal line
journal = os.path.join(state, "catalog-updates.journal")
before = open(journal, "rb").read()
if mode == "truncate-fails":  # the cut-off line cannot be cut off again either
    os.ftruncate = lambda fd, n: (_ for _ in ()).throw(OSError(5, "Input/output error"))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 40, hard))  # the next line is cut after 40 bytes
try:
    rec.add_items(item(2))
    error = None
except StorageError as exc:
    error = [str(exc), exc.errno]
after = open(journal, "rb").read()
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
rec.add_items(item(3))  # room again: the same process writes on
print(json.dumps({"error": error, "unchanged": after == before, "cut": len(after) - len(before),
                  "journal_lines": open(journal, "rb").read().count(b"\n")}))
"""


@needs_tiny_bundle
@pytest.mark.parametrize("mode", ["truncate-works", "truncate-fails"])
def test_a_write_cut_short_is_refused_whole_and_the_same_process_writes_on(tiny_bundle, tmp_path, mode):
    state = tmp_path / "state"
    out = subprocess.run([sys.executable, "-c", CHILD, str(tiny_bundle / "bundle"), str(state), mode],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    message, code = got["error"]
    assert code == errno.EFBIG and "the catalog change was not saved (File too large)" in message
    assert str(state) in message and "nothing was changed" in message
    if mode == "truncate-works":  # the cut line is cut off again: the journal is byte for byte what it was
        assert got["unchanged"] and got["journal_lines"] == 3  # its header, disk1, disk3 (disk0 is in the snapshot)
    else:  # 40 bytes stay behind: the journal counts as torn, and the next change starts a new snapshot
        assert got["cut"] == 40 and got["journal_lines"] == 1
    # what the next start sees: every acknowledged change, not the refused one, and no corrupt journal
    assert _ids(tiny_bundle / "bundle", state) == {"disk0", "disk1", "disk3"}


@needs_tiny_bundle
def test_cli_on_a_full_disk_says_what_and_where_and_caches_are_skipped(tiny_bundle, tmp_path):
    """`genre items add` when the disk is full: exit code 1, one line naming the folder and the reason, no
    traceback; the optimized-model cache cannot be written either: the bundle loads without it."""
    bundle, state, cache = tiny_bundle / "bundle", tmp_path / "state", tmp_path / "cache"
    env = dict(os.environ, GENRE_CACHE_DIR=str(cache))
    add = [sys.executable, "-m", "genre_edge.cli", "items", "add", "--bundle", str(bundle), "--profile", PROFILE,
           "--state-dir", str(state), "--title", "A film for a full disk"]
    ok = subprocess.run([*add, "--id", "disk0"], capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    # a journal line of 40 items, so that the limit below is a few KB: under QEMU (make test-emulated) a cap
    # of a few hundred bytes crashes the emulated process while it loads, whatever the runtime does
    (tmp_path / "items.jsonl").write_text("".join(json.dumps({"id": f"disk0-{i}", "title": f"Film {i} " + "x" * 80})
                                                  + "\n" for i in range(40)))
    ok = subprocess.run([*add[:-2], "--file", str(tmp_path / "items.jsonl")], capture_output=True, text=True, env=env,
                        timeout=120)
    assert ok.returncode == 0, ok.stderr
    snapshot = (state / "catalog-updates.json").read_bytes()
    journal = (state / "catalog-updates.journal").read_bytes()
    for f in cache.rglob("*"):  # the next start must write its caches again (and cannot)
        if f.is_file():
            f.unlink()
    full = subprocess.run([*add, "--id", "disk1"], capture_output=True, text=True, env=env, timeout=120,
                          preexec_fn=_limit(len(journal) + 40))
    assert len(journal) > 4096
    assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr
    assert f"Error: {state}: the catalog change was not saved (File too large); nothing was changed" in full.stderr
    assert "optimized-model cache not written to" in full.stderr and "loaded without it" in full.stderr
    assert not [f for f in cache.rglob("*.tmp")]  # nothing half-written left in the cache
    assert (state / "catalog-updates.json").read_bytes() == snapshot
    assert (state / "catalog-updates.journal").read_bytes() == journal


def _post(base, path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@needs_tiny_bundle
def test_server_answers_507_on_a_full_disk_and_keeps_serving(tiny_bundle, tmp_path):
    """POST /items on a full disk: 507 with the reason (documented in the OpenAPI schema), recommendations
    still served, and after a restart every acknowledged item is there and the refused one is not."""
    from test_server import _serve_process

    p, base = _serve_process(tiny_bundle, tmp_path, env=dict(os.environ, GENRE_CACHE_DIR=str(tmp_path / "cache")),
                             preexec_fn=_limit(6000))
    try:
        acked, refused = [], None
        for i in range(400):
            st, got = _post(base, "/items", {"items": [{"id": f"disk{i}", "title": f"Served film {i} " + "x" * 60}]})
            if st != 200:
                refused = (i, st, got)
                break
            acked.append(f"disk{i}")
        assert refused is not None and acked, "the file-size limit never filled the state folder"
        i, st, got = refused
        assert st == 507 and got["error"] == "insufficient_storage", got
        assert "the catalog change was not saved (File too large); nothing was changed" in got["detail"]
        assert _post(base, "/recommend", {"history": [acked[0]], "k": 2})[0] == 200
        schema = json.loads(urllib.request.urlopen(base + "/openapi.json", timeout=5).read())
        assert "507" in schema["paths"]["/items"]["post"]["responses"]
        assert "507" in schema["paths"]["/events"]["post"]["responses"]
    finally:
        p.send_signal(signal.SIGTERM)
        log = p.communicate(timeout=30)[0]
    assert "Traceback" not in log, log
    assert _ids(tmp_path / "b", tmp_path / "state") == set(acked)


@needs_tiny_bundle
def test_a_read_only_state_folder_is_read_and_refuses_writes_by_name(tiny_bundle, tmp_path, monkeypatch, caplog):
    """A state folder baked into a read-only image: the device starts with its items (no lock file can be
    made there, and none is needed), temp files left in it are ignored, and a change is refused with the
    reason. (Root ignores permission bits, so the file system's refusal is played by os.open/unlink.)"""
    from genre_edge.errors import StorageError
    from genre_edge.recommender import Recommender

    bundle, state = tiny_bundle / "bundle", tmp_path / "state"
    Recommender.load(bundle, PROFILE, state_dir=state).add_items([{"id": "disk0", "title": "Baked in"}])
    (state / "catalog-updates.json.lock").unlink()
    (state / ".catalog-updates.json.x1.tmp").write_text("left by a crash")
    real_open, real_unlink = os.open, os.unlink

    def read_only(path, flags, *a, **k):
        if str(path).startswith(str(state)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *a, **k)

    def no_unlink(path, *a, **k):
        if str(path).startswith(str(state)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_unlink(path, *a, **k)

    monkeypatch.setattr(os, "open", read_only)
    monkeypatch.setattr(os, "unlink", no_unlink)
    with caplog.at_level("WARNING", logger="genre_edge.catalog"):
        rec = Recommender.load(bundle, PROFILE, state_dir=state)
    assert "temp files of an interrupted write not removed (Read-only file system)" in caplog.text
    assert [r["id"] for r in rec.search_items("disk0", 5, 0)["items"]] == ["disk0"]
    assert rec.recommend(["disk0"], k=3).items
    with pytest.raises(StorageError, match=r"was not saved \(Read-only file system\); nothing was changed - make it "
                                           r"writable"):
        rec.add_items([{"id": "disk1", "title": "Not saved"}])
    assert not rec.search_items("disk1", 5, 0)["items"]  # memory stays as the disk is


@needs_tiny_bundle
def test_a_damaged_optimized_model_cache_file_is_removed_and_rebuilt(tiny_bundle, tmp_path, monkeypatch, caplog):
    """A cached optimized graph cut short (a full disk, a bad sector) made the device refuse to start with
    'onnxruntime cannot load this model', naming the bundle's file: it is removed, the bundle's model loads,
    and the next start writes the cache again."""
    from genre_edge.recommender import Recommender

    monkeypatch.setenv("GENRE_CACHE_DIR", str(tmp_path / "cache"))
    bundle = tiny_bundle / "bundle"
    first = Recommender.load(bundle, PROFILE).recommend(["m0"], k=5).items
    cached = sorted((tmp_path / "cache" / "ort").glob("*.onnx"))
    assert cached
    for f in cached:
        f.write_bytes(f.read_bytes()[:100])
    with caplog.at_level("WARNING", logger="genre_edge.session"):
        again = Recommender.load(bundle, PROFILE).recommend(["m0"], k=5).items
    assert caplog.text.count("optimized-model cache file unreadable, removed") == len(cached)
    assert [i.id for i in again] == [i.id for i in first]
    assert not any(f.exists() for f in cached)
    Recommender.load(bundle, PROFILE)
    assert all(f.stat().st_size > 100 for f in cached)


def _unit_rows(n=500, d=32):
    rows = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize("bits", [8, 4])
def test_an_index_cache_that_cannot_be_written_is_skipped(tmp_path, monkeypatch, caplog, bits):
    """The int8 or 4-bit scoring index of a lean catalog is kept in the cache folder; where it cannot be
    written (here a file stands where its folder should be) it is built in memory and scores the same."""
    from genre_edge.catalog_index import Int4Index, Int8Index, quantize_rows

    kind, folder, what = ((Int8Index, "int8-index", "int8 index") if bits == 8
                          else (Int4Index, "int4-index", "4-bit index"))
    rows = _unit_rows()
    q, s = quantize_rows(rows)
    monkeypatch.setenv("GENRE_CACHE_DIR", str(tmp_path))
    (tmp_path / folder).write_text("not a folder")
    with caplog.at_level("WARNING", logger="genre_edge.catalog_index"):
        ix = kind(None, rows=(q, s), cache_key="k")
    u = rows[:7].mean(0)
    assert np.array_equal(ix.scores(u), kind(None, rows=(q, s)).scores(u))
    assert f"{what} cache not written to" in caplog.text


def test_an_approximate_index_cache_that_cannot_be_written_is_skipped(tmp_path, monkeypatch, caplog):
    pytest.importorskip("faiss", reason="the ann extra (faiss-cpu; `make test` installs it)")
    from genre_edge.catalog_ann import AnnIndex

    rows = _unit_rows(3000)
    monkeypatch.setenv("GENRE_CACHE_DIR", str(tmp_path))
    (tmp_path / "ann-index").write_text("not a folder")
    with caplog.at_level("WARNING", logger="genre_edge.catalog_ann"):
        ann = AnnIndex(rows, nprobe=8, cache_key="k")
    assert "approximate index cache not written to" in caplog.text
    assert len(ann.search(rows[:7].mean(0), 20)) == 20


@needs_tiny_bundle
def test_export_on_a_full_disk_leaves_the_previous_bundle_and_no_work_folder(tiny_bundle, tmp_path):
    """`genre export` when the disk fills mid-way: exit 1 with the folder and the reason, the bundle already
    at --out untouched, and no half-written work folder keeping the disk full."""
    import shutil

    pytest.importorskip("torch", reason="the export extra (`make test` installs it)")
    out = tmp_path / "b"
    shutil.copytree(tiny_bundle / "bundle", out)
    before = {f.name: f.read_bytes() for f in out.rglob("*") if f.is_file()}
    r = subprocess.run([sys.executable, "-m", "genre_edge.cli", "export", "--model", str(tiny_bundle / "student"),
                        "--teacher", str(tiny_bundle / "teacher"), "--out", str(out), "--profile", PROFILE,
                        "--min-kept", "0", "--min-cold-kept", "0", "--min-request-kept", "0"],
                       capture_output=True, text=True, timeout=300, preexec_fn=_limit(4096),
                       env=dict(os.environ, GENRE_CACHE_DIR=str(tmp_path / "cache")))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"Error: {tmp_path}: the bundle was not saved (File too large); nothing was changed" in r.stderr
    assert not (tmp_path / "b.tmp").exists() and not (tmp_path / "b.rejected").exists()
    assert {f.name: f.read_bytes() for f in out.rglob("*") if f.is_file()} == before


def test_every_command_reports_a_failed_write_in_one_line():
    """What the commands share (run_api): a write that fails for lack of space or a read-only file system is
    a user error (one line, exit 1); any other OSError is not hidden."""
    import click

    from genre_edge.cliutil import run_api

    def fails(code):
        raise OSError(code, os.strerror(code), "/mnt/sd/runs/teacher/checkpoint.tmp")

    for code in (errno.ENOSPC, errno.EROFS, errno.EFBIG):
        with pytest.raises(click.ClickException, match=rf"could not write /mnt/sd/runs/teacher/checkpoint.tmp: "
                                                       rf"{os.strerror(code)}; free some space"):
            run_api(fails, code)
    with pytest.raises(FileNotFoundError):
        run_api(fails, errno.ENOENT)


@needs_tiny_bundle
def test_distill_on_a_full_disk_says_so_in_one_line_and_leaves_no_temp_folder(tiny_bundle, tmp_path):
    """Training-side writers (the student folder, checkpoints, the encoder) fill a temp folder, then rename it:
    when the disk fills, the temp folder goes too, and safetensors' own I/O error reads as the OSError it is."""
    pytest.importorskip("torch", reason="the export extra (`make test` installs it)")
    out = tmp_path / "student"
    r = subprocess.run([sys.executable, "-m", "genre_edge.cli", "distill", "--teacher", str(tiny_bundle / "teacher"),
                        "--out", str(out), "--layers", "0,2", "--epochs", "1"],
                       capture_output=True, text=True, timeout=300, preexec_fn=_limit(64 * 1024),
                       env=dict(os.environ, GENRE_CACHE_DIR=str(tmp_path / "cache")))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "Error: could not write " in r.stderr and "File too large; free some space there" in r.stderr, r.stderr
    assert not [p for p in tmp_path.rglob("*.tmp")], list(tmp_path.rglob("*"))
