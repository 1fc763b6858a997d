"""The committed benchmark scripts run end to end on a tiny real bundle (no timing is asserted)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import have_export

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not have_export(), reason="export extra not installed")


def test_runtime_bench_writes_json_markdown_and_targets(tiny_bundle, tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "runtime_bench.py"), "--bundle",
                        str(tiny_bundle / "bundle"), "--reps", "10", "--starts", "1", "--history-len", "5",
                        "--name", "tiny", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert p.returncode in (0, 1), p.stderr  # 1 = a target missed; the tiny bundle is not the target
    res = json.loads((tmp_path / "runtime-tiny.json").read_text())
    assert set(res["targets"]) == {"history 50, MMR top-10 p50 ms", "history 50 + query, MMR top-10 p50 ms",
                                   "RSS after load MiB", "load to first answer s"}
    lat = next(iter(res["latency_ms"].values()))
    assert lat["n"] == 10 and 0 < lat["p50"] <= lat["p99"]
    assert res["memory_mib"]["peak"] >= res["memory_mib"]["after_load"] > 0
    assert res["machine"]["onnxruntime"] and res["machine"]["git"]
    assert p.returncode == (0 if all(t["met"] for t in res["targets"].values()) else 1)
    md = (tmp_path / "runtime-tiny.md").read_text()
    assert "## Targets" in md and "p99" in md


def test_runtime_bench_rejects_a_folder_without_bundle(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "runtime_bench.py"), "--bundle", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "no manifest.json" in p.stderr


def test_teacher_table_joins_reports_and_refuses_another_split(tiny_bundle, tmp_path, toy_data):
    from genre_edge.data import load_dataset
    from genre_edge.split import make_split
    from genre_edge_export.baselines import run_baselines
    from genre_edge_export.loading import ModelDir

    teacher = tiny_bundle / "teacher"
    split = make_split(load_dataset(toy_data), ModelDir(teacher).conf.split)
    rows = [{"model": r.name, "warm": r.warm, "cold": r.cold} for r in run_baselines(split, ("popularity", "ease"))]
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"split": split.summary(), "results": rows}))
    script = str(ROOT / "benchmarks" / "teacher_table.py")
    p = subprocess.run([sys.executable, script, "--baselines", str(base), "--teacher", f"tiny={teacher}",
                        "--bundle", f"tiny={tiny_bundle / 'bundle'}", "--out", str(tmp_path / "t")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads((tmp_path / "t.json").read_text())
    assert [r["model"] for r in out["rows"]][-1] == "tiny" and out["bundles"][0]["bytes"] > 0
    assert "## Compression: tiny" in (tmp_path / "t.md").read_text()
    from genre_edge.split import SplitConfig

    other = make_split(load_dataset(toy_data), SplitConfig(kind="user_holdout"))  # not the teacher's split
    base.write_text(json.dumps({"split": other.summary(), "results": rows}))
    p = subprocess.run([sys.executable, script, "--baselines", str(base), "--teacher", f"tiny={teacher}",
                        "--out", str(tmp_path / "t2")], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "different split" in p.stderr
