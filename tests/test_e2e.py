"""End to end with the real teacher (all-MiniLM-L6-v2) on a slice of real ml-100k."""
import numpy as np
import pytest

from conftest import have_export

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not have_export(), reason="export extra not installed")]


def test_real_teacher_on_ml100k_slice(tmp_path):
    import torch

    from genre_edge import config as cfgmod
    from genre_edge_export.data import load_dataset
    from genre_edge_export.data.fetch import get_ml100k
    from genre_edge_export.train import train
    from genre_edge_export.train_config import Config

    torch.set_num_threads(1)
    path = get_ml100k().path
    ds = load_dataset(path)
    # a slice: the 150 most active users
    inter = ds.interactions
    top = np.argsort(-np.bincount(inter.user))[:150]
    keep = np.isin(inter.user, top)
    ds.interactions = inter.take(keep)
    conf = cfgmod.from_dict(Config, {
        "encoder": {"trainable_layers": 1},
        # the packaged presets' CF part: the real encoder's item similarity in EASE, chosen on validation
        "cf": {"side_information": "encoder", "ease_lambda": "auto", "neighbors": 500},
        "train": {"epochs": 2, "steps_per_epoch": 8, "batch_size": 64, "negatives": 64, "threads": 1, "patience": 0},
    })
    rep = train(conf, tmp_path / "m", progress=False, dataset=ds)
    grid = rep["cf_ease"]["grid"]
    assert rep["cf_ease"]["side_information"] == "encoder" and len(grid) == 24
    assert max(g["valid_ndcg@10"] for g in grid) == max(
        g["valid_ndcg@10"] for g in grid if (g["lambda"], g["side_weight"]) == (rep["cf_ease"]["lambda"], rep["cf_ease"]["side_weight"]))
    h = rep["history"]
    assert h[-1]["valid_loss"] < h[0]["valid_loss"] + 0.05 and h[-1]["train_loss"] < 5.0
    assert h[-1]["valid_ndcg@10"] > rep["zero_shot"]["valid"]["ndcg@10"]
    assert rep["teacher"]["test"]["ndcg@10"] > 0

    # ---- export the real model, then the shipped CLI answers from it: recommend, and serve over HTTP
    import json
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from genre_edge_export.bundle_writer import export_bundle

    export_bundle(tmp_path / "m", tmp_path / "b", ["x86-avx512-vnni"], min_kept=0.0, min_request_kept=0.0, min_cold_kept=0.0,
                  progress=lambda m: None)
    genre = [sys.executable, "-m", "genre_edge.cli"]
    env = {**os.environ, "GENRE_STATE_DIR": str(tmp_path / "state"), "HF_HUB_OFFLINE": "1"}
    items = json.loads((tmp_path / "b" / "catalog" / "items.json").read_text())
    hist = [items["ids"][i] for i in (0, 49, 180)]  # Toy Story, Star Wars, Return of the Jedi
    p = subprocess.run(genre + ["recommend", "--bundle", str(tmp_path / "b"), "--profile", "x86-avx512-vnni",
                                "--history", ",".join(hist), "-k", "5", "--explain", "--json"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert len(out["items"]) == 5 and not set(i["id"] for i in out["items"]) & set(hist)
    assert all(i["title"] in items["title"] for i in out["items"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = subprocess.Popen(genre + ["serve", "--bundle", str(tmp_path / "b"), "--profile", "auto",
                                    "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("genre serve did not come up: " + srv.stderr.read1().decode(errors="replace"))
        req = urllib.request.Request(base + "/recommend", method="POST", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"history": hist, "query": "a funny family comedy", "k": 5}).encode())
        with urllib.request.urlopen(req, timeout=10) as r:
            body = json.loads(r.read())
        assert len(body["items"]) == 5
        with urllib.request.urlopen(base + "/info", timeout=5) as r:
            info = json.loads(r.read())
        assert info["profile"] == "x86-avx512-vnni" or info["profile"].startswith("x86")  # auto-detected here
    finally:
        srv.terminate()
        srv.wait(10)
