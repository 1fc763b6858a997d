"""Issue 18 F7/F8: hostile files give clear errors, never tracebacks or NaN scores, and the runtime
writes nothing outside its folders (onnxruntime's telemetry store stays off)."""
import base64
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import needs_tiny_bundle
from genre_edge.errors import BundleError
from genre_edge.fsutil import loads_strict, sha256_file
from genre_edge.recommender import Recommender

pytestmark = needs_tiny_bundle

DEEP = "[" * 200_000 + "]" * 200_000


def test_loads_strict_refuses_what_json_loads_lets_through():
    for text in ("NaN", '{"year": Infinity}', "[-Infinity]", "1e400", '{"a": [1, 2, -1e999]}'):
        json.loads(text)  # the standard parser takes every one of them
        with pytest.raises(ValueError, match="NaN and Infinity|out of range"):
            loads_strict(text)
    with pytest.raises(RecursionError):
        json.loads(DEEP)
    with pytest.raises(ValueError, match="nested too deeply"):
        loads_strict(DEEP)
    assert loads_strict('{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}


def _resign(b, rel):
    m = json.loads((b / "manifest.json").read_text())
    m["files"][rel] = {"sha256": sha256_file(b / rel), "bytes": (b / rel).stat().st_size}
    (b / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("case", ["manifest-deep", "items-deep", "year-infinity", "year-huge", "nan-embedding"])
def test_hostile_bundle_files_are_refused_clearly(tiny_bundle, tmp_path, case):
    b = tmp_path / "b"
    shutil.copytree(tiny_bundle / "bundle", b)
    m = json.loads((b / "manifest.json").read_text())
    items_rel = m["catalog"]["items"]
    items = json.loads((b / items_rel).read_text())
    if case == "manifest-deep":
        (b / "manifest.json").write_text(json.dumps(m)[:-1] + ', "x": ' + DEEP + "}")
    elif case == "items-deep":
        (b / items_rel).write_text(json.dumps(items)[:-1] + ', "x": ' + DEEP + "}")
        _resign(b, items_rel)
    elif case in ("year-infinity", "year-huge"):
        items["year"][0] = "@@YEAR@@"
        (b / items_rel).write_text(json.dumps(items).replace('"@@YEAR@@"', "Infinity" if case == "year-infinity"
                                                              else "9" * 400))
        _resign(b, items_rel)
    else:
        rel = m["catalog"]["embeddings"]
        emb = np.load(b / rel)
        if emb.dtype == np.int8:  # NaN goes in through the per-row scales
            rel = m["catalog"]["embedding_scales"]
            emb = np.load(b / rel)
        emb = emb.astype(emb.dtype)
        emb.reshape(-1)[0] = np.nan
        np.save(b / rel, emb)
        _resign(b, rel)
    with pytest.raises(BundleError) as err:
        Recommender.load(b, "x86-avx512-vnni", state_dir=tmp_path / "s")
    assert any(w in str(err.value) for w in ("nested too deeply", "NaN", "year", "not valid JSON")), str(err.value)


@pytest.mark.parametrize("case", ["array", "deep", "nan-embedding", "year-infinity", "year-huge"])
def test_hostile_state_files_are_refused_clearly(tiny_bundle, tmp_path, case):
    state = tmp_path / "state"
    rec = Recommender.load(tiny_bundle / "bundle", "x86-avx512-vnni", state_dir=state)
    rec.add_items([{"id": "new1", "title": "A new film", "categories": ["Drama"], "year": 2024}])
    path = state / "catalog-updates.json"
    good = json.loads(path.read_text())
    rec_ = good["added"][0]
    if case == "array":
        text = json.dumps([good])
    elif case == "deep":
        text = json.dumps(good)[:-1] + ', "x": ' + DEEP + "}"
    elif case == "nan-embedding":
        e = np.frombuffer(base64.b64decode(rec_["embedding"]), np.float16).copy()
        e[3] = np.nan
        rec_["embedding"] = base64.b64encode(e.tobytes()).decode()
        text = json.dumps(good)
    else:
        rec_["year"] = "@@YEAR@@"
        text = json.dumps(good).replace('"@@YEAR@@"', "Infinity" if case == "year-infinity" else "9" * 400)
    path.write_text(text)
    with pytest.raises(BundleError, match="catalog updates file is corrupt"):
        Recommender.load(tiny_bundle / "bundle", "x86-avx512-vnni", state_dir=state)


def test_items_add_file_with_hostile_json_lines_is_a_clear_error(tiny_bundle, tmp_path):
    from genre_edge.cli import main

    for line in (DEEP, '{"id": "x", "title": "t", "year": Infinity}', '{"id": "x", "title": "t", "year": 1e400}'):
        f = tmp_path / "items.jsonl"
        f.write_text(line + "\n")
        r = CliRunner().invoke(main, ["items", "add", "--bundle", str(tiny_bundle / "bundle"), "--state-dir",
                                      str(tmp_path / "s"), "--file", str(f)])
        assert r.exit_code == 1 and "items.jsonl:1: not valid JSON" in r.output, r.output
        assert "Traceback" not in r.output


def test_runtime_writes_no_onnxruntime_telemetry_store(tiny_bundle, tmp_path):
    """F8: with HOME pointing at an empty folder, loading a bundle and answering requests (the
    encoder included) leaves nothing under ~/.cache/Microsoft (ORT_DISABLE_TELEMETRY, set by the
    runtime before onnxruntime loads)."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")}
    env.update(HOME=str(home), GENRE_CACHE_DIR=str(tmp_path / "cache"))
    code = ("import sys; from genre_edge.recommender import Recommender; "
            "r = Recommender.load(sys.argv[1], 'auto', state_dir=sys.argv[2]); "
            "r.recommend(list(r.catalog.ids[:3]), query='a film', k=3); "
            "r.add_items([{'id': 'n1', 'title': 'New', 'categories': ['Drama'], 'year': 2020}]); print('ok')")
    out = subprocess.run([sys.executable, "-c", code, str(tiny_bundle / "bundle"), str(tmp_path / "state")],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
    assert not (home / ".cache" / "Microsoft").exists(), sorted(str(p) for p in home.rglob("*"))
