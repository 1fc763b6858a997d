"""Data-parallel training and distillation: 2 processes (gloo, launched by torchrun and by accelerate) at
the same global batch follow 1 process; only rank 0 writes and prints."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import assert_same_weights, have_export, tiny_config, tiny_encoder

pytestmark = pytest.mark.skipif(not have_export(), reason="export extra not installed")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, toy_data):
    from genre_edge import config as cfg

    root = tmp_path_factory.mktemp("dist")
    conf = tiny_config(toy_data, tiny_encoder(root / "enc"), train={"epochs": 2, "steps_per_epoch": 4, "batch_size": 32})
    (root / "c.toml").write_text(cfg.dumps_toml(cfg.to_dict(conf)))
    return root, conf


def _launch(launcher: list[str], args: list[str], tmp):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([*launcher, "-m", "genre_edge.cli", *args, "--json"], capture_output=True, text=True, env=env,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def _port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def torchrun():
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
            "--master-port", _port()]


@pytest.fixture(scope="module")
def two_processes(setup, tmp_path_factory):
    """The setup's config trained by 2 processes under torchrun: (model folder, what rank 0 printed, temp folder)."""
    root, _ = setup
    tmp = tmp_path_factory.mktemp("torchrun")
    (tmp / "t").mkdir()
    out = _launch(torchrun(), ["train", "--config", str(root / "c.toml"), "--out", str(tmp / "two")], tmp / "t")
    return tmp / "two", out, tmp / "t"


def test_two_processes_train_like_one_at_the_same_global_batch(setup, two_processes, tmp_path):
    from genre_edge_export.train import train

    root, conf = setup
    one = train(conf, tmp_path / "one", progress=False)
    folder, out, tmp = two_processes
    assert out.count('"format"') == 1  # rank 0 prints; the other rank says nothing
    two = json.loads((folder / "report.json").read_text())
    for a, b in zip(one["history"], two["history"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.01)
        assert b["valid_ndcg@10"] == pytest.approx(a["valid_ndcg@10"], abs=0.02)
    assert two["teacher"]["test"]["ndcg@10"] == pytest.approx(one["teacher"]["test"]["ndcg@10"], abs=0.02)
    assert not list(tmp.glob("genre-rank*"))  # the other rank's private folder is gone


def test_two_processes_distill_like_one(setup, tmp_path):
    from genre_edge_export.distill import DistillConfig, distill
    from genre_edge_export.train import train

    root, conf = setup
    train(conf, tmp_path / "teacher", progress=False)
    one = distill(tmp_path / "teacher", DistillConfig(layers=(0, 1), epochs=1, threads=1, batch_size=32), tmp_path / "s1",
                  progress=False)
    (tmp_path / "d.toml").write_text("layers = [0, 1]\nepochs = 1\nbatch_size = 32\n")
    (tmp_path / "t").mkdir()
    _launch(torchrun(), ["distill", "--teacher", str(tmp_path / "teacher"), "--config", str(tmp_path / "d.toml"),
                       "--out", str(tmp_path / "s2")], tmp_path / "t")
    two = json.loads((tmp_path / "s2" / "distill.json").read_text())
    assert two["history"][-1]["cos_mean"] == pytest.approx(one["history"][-1]["cos_mean"], abs=0.01)
    assert two["history"][-1]["loss"] == pytest.approx(one["history"][-1]["loss"], rel=0.05)


@pytest.mark.skipif(shutil.which("accelerate") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable),
                    "accelerate")), reason="accelerate is not installed (the 'scale' extra)")
def test_accelerate_launch_starts_the_same_data_parallel_training(setup, two_processes, tmp_path):
    root, _ = setup
    acc = os.path.join(os.path.dirname(sys.executable), "accelerate")
    (tmp_path / "t").mkdir()
    # accelerate's multi-process launcher (named multi_gpu) runs on CPUs too: the processes use gloo there
    out = _launch([acc, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                   "--dynamo_backend", "no", "--main_process_ip", "127.0.0.1", "--main_process_port", _port()],
                  ["train", "--config", str(root / "c.toml"), "--out", str(tmp_path / "acc")], tmp_path / "t")
    assert out.count('"format"') == 1 and (tmp_path / "acc" / "report.json").is_file()
    # and the same weights, bit for bit, as torchrun's 2 processes (deterministic on the CPU, whichever launcher)
    assert_same_weights(tmp_path / "acc", two_processes[0])
