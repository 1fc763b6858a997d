"""Training and distillation on a device other than the CPU (``--device``), checked without a GPU.

Every tensor a training or distillation step touches must live on the training device: one CPU tensor
mixed into a GPU computation stops the run ("Expected all tensors to be on the same device"). PyTorch's
``meta`` device is a second device every build has (tensors with shapes and no data), and mixing it with the
CPU raises the same error, so a step run there proves the placement a CUDA run needs, forward and backward,
on machines without a GPU. What it cannot prove (CUDA kernels, speed) is left to a GPU run.
"""
import numpy as np
import pytest

from conftest import have_export, tiny_config, tiny_encoder

pytestmark = pytest.mark.skipif(not have_export(), reason="export extra not installed")


@pytest.fixture(scope="module")
def enc(tmp_path_factory):
    return tiny_encoder(tmp_path_factory.mktemp("enc") / "e")


def test_mixing_meta_and_cpu_tensors_fails_as_cuda_and_cpu_would():
    """The premise of this file: meta catches a CPU tensor in a device computation."""
    import torch

    with pytest.raises(RuntimeError, match="device"):
        torch.zeros(3, device="meta") + torch.zeros(3)


@pytest.mark.parametrize("over", [
    {"user_model": {"kind": "attention"}, "head": {"kind": "dot"}, "cf": {"kind": "mf"}},
    {"user_model": {"kind": "mean"}, "head": {"kind": "mlp"}, "cf": {"kind": "none"}},
    {"user_model": {"kind": "nrms"}, "head": {"kind": "dot"}, "cf": {"kind": "mf"},
     "train": {"impression_negatives": 0, "example_history": "before"}},
    {"user_model": {"kind": "sasrec"}, "head": {"kind": "mlp"}, "cf": {"kind": "mf"}},
])
def test_a_training_step_runs_wholly_on_the_training_device(tmp_path, toy_data, enc, over):
    """Trainer._loss with the modules and tables on meta: every tensor of the step (candidates, histories,
    masks, accidental-hit mask, targets, the heads' index tensors) is created there, and the backward reaches
    the trainable weights there. The neighbour-table CF part (a sparse matrix) has no meta kernels; its dense
    sibling mf stands in for it, and its own tensors are placed by the same code (CFPart.scores)."""
    import torch

    from genre_edge_export.trainer import Trainer

    t = Trainer(tiny_config(toy_data, enc, **over), tmp_path / "m", progress=False)
    meta = torch.device("meta")
    t.dev = meta
    t.tower.to(meta)
    t.rec.to(meta)
    t._bottom_cache()
    t.E = t.table(np.zeros((t.prep.data.n_items, t.tower.dim), np.float32))
    assert t.E.device == meta and t.bottom.device == meta
    users, targets, times = next(t._batches())
    loss = t._loss(users, targets, times, t.seen_matrix())
    assert loss.device == meta and loss.shape == ()
    loss.backward()
    grads = [p.grad for p in [*t.tower.parameters(), *t.rec.parameters()] if p.requires_grad and p.grad is not None]
    assert grads and all(g.device == meta for g in grads)


def test_the_sparse_cf_vote_stays_fp32_under_bf16_autocast():
    """CUDA has no bf16 sparse product: on an H200, `--precision bf16` with an EASE/co-occurrence CF part
    stopped at its first step ("addmm_sparse_cuda" not implemented for 'BFloat16'). The vote runs with autocast
    off, so it is fp32 under any autocast (here the CPU's, where the product did run in bf16 and rounded it)."""
    import torch

    from genre_edge_export.models import CFPart, neighbour_table

    rng = np.random.default_rng(0)
    W = (rng.normal(size=(50, 50)) * 1e-2).astype(np.float32)
    cf = CFPart("ease", 50, neighbour_table(W, 20))
    hist, mask = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]]), torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    ref = cf.scores(hist, mask, None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = cf.scores(hist, mask, None)
        cand = cf.scores(hist, mask, torch.tensor([[7, 8], [9, 10]]))
    assert got.dtype == torch.float32 and cand.dtype == torch.float32
    assert torch.equal(got, ref) and torch.equal(cand, ref.gather(1, torch.tensor([[7, 8], [9, 10]])))


def test_the_dot_head_scores_shared_negatives_under_bf16_autocast():
    """A fp32 user vector against fp32 rows under bf16 autocast (CUDA keeps some user-model outputs in fp32):
    the products come out bf16, and the first bf16 run on an H200 stopped at `index_copy` (Float vs BFloat16).
    CPU autocast promotes index_copy to the wider type and CUDA's does not, so that failure shows only on a GPU;
    here: score_rows gives forward's scores within bf16 rounding, in fp32 after the blend."""
    import torch

    from genre_edge_export.models import DotHead

    torch.manual_seed(0)
    head = DotHead(8)
    u, rows = torch.randn(3, 8), torch.randn(20, 8)
    inv = torch.tensor([[0, 5, 6, 7], [1, 5, 6, 7], [2, 5, 6, 7]])  # one own positive, three shared negatives
    cf, pop = torch.randn(3, 4), torch.randn(3, 4)
    ref = head(u, rows[inv], cf, pop)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = head.score_rows(u, rows, inv, cf, pop, shared=slice(1, 4))
    assert got.dtype == torch.float32 and not torch.equal(got, ref)  # the products really ran in bf16
    torch.testing.assert_close(got, ref, rtol=0.05, atol=0.3)


def test_a_distillation_batch_runs_wholly_on_the_device(tmp_path, toy_data, enc):
    """distill.batch_loss with the student, the teacher's rows and user vectors on meta: embedding match, the
    ranking KL over items and the request KL over the catalog, forward and backward."""
    import torch

    from genre_edge_export.distill import DistillConfig, batch_loss
    from genre_edge_export.models import ItemTower, load_hf_encoder

    meta = torch.device("meta")
    student = ItemTower(load_hf_encoder(enc), "mean", 0, True).to(meta)
    B, L, D, N = 6, 8, student.dim, 20
    ids = np.random.default_rng(0).integers(100, 2000, (B, L))
    mask = np.ones((B, L), np.int64)
    items = np.array([0, 3, -1, 5, -1, 7])  # two request texts (-1), four item texts
    conf = DistillConfig(layers=(0, 1), kl_weight=1.0, request_kl_weight=2.0)
    target = torch.zeros(B, D, device=meta)
    U = torch.zeros(10, D, device=meta)
    E_t = torch.zeros(N, D, device=meta)
    loss = batch_loss(torch, conf, student, ids, mask, target, items, U, E_t, 20.0, np.arange(4))
    assert loss.device == meta
    loss.backward()
    assert all(p.grad.device == meta for p in student.parameters() if p.grad is not None)
    assert student.adapter.weight.grad is not None


def test_device_choice_is_refused_with_what_to_do(monkeypatch):
    """cuda without a usable GPU is an error naming the install line (never a silent CPU run); auto falls back
    to the CPU; an unknown name lists the choices."""
    import torch

    from genre_edge.errors import ConfigError
    from genre_edge_export.device import CUDA_INSTALL, resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(ConfigError, match="CPU-only build") as exc:
        resolve_device(torch, "cuda")
    assert CUDA_INSTALL in str(exc.value) and "--device cpu" in str(exc.value)
    monkeypatch.setattr(torch.version, "cuda", "12.6")
    with pytest.raises(ConfigError, match="finds no usable GPU"):
        resolve_device(torch, "cuda")
    assert resolve_device(torch, "auto") == torch.device("cpu")
    assert resolve_device(torch, "cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="cpu, cuda, auto"):
        resolve_device(torch, "gpu")
    # a process of a node needs its own GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match="needs GPU 2, but torch sees 2"):
        resolve_device(torch, "cuda", local_rank=2)


def test_cli_device_option_reaches_the_config_and_fails_cleanly(tmp_path, toy_data, enc, monkeypatch):
    """`genre train --device cuda` on a machine whose torch sees no GPU: exit 1 with the reason, nothing written;
    a device that is not a choice is a usage error; the config key is validated too."""
    import torch
    from click.testing import CliRunner

    from genre_edge import config as cfgmod
    from genre_edge.errors import ConfigError
    from genre_edge_export.cli import distill, train

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    conf = tmp_path / "c.toml"
    conf.write_text(cfgmod.dumps_toml(cfgmod.to_dict(tiny_config(toy_data, enc))))
    r = CliRunner().invoke(train, ["--config", str(conf), "--out", str(tmp_path / "m"), "--device", "cuda"])
    assert r.exit_code == 1 and "device 'cuda'" in r.output and "pip install --force-reinstall torch" in r.output, r.output
    assert not (tmp_path / "m" / "report.json").exists()
    r = CliRunner().invoke(train, ["--config", str(conf), "--out", str(tmp_path / "m"), "--device", "gpu"])
    assert r.exit_code == 2 and "cpu" in r.output and "cuda" in r.output
    r = CliRunner().invoke(distill, ["--teacher", str(tmp_path), "--out", str(tmp_path / "s"), "--precision", "fp16"])
    assert r.exit_code == 2 and "bf16" in r.output
    with pytest.raises(ConfigError, match="device.*cpu.*cuda.*auto"):
        cfgmod.from_dict(type(tiny_config(toy_data, enc)), {"train": {"device": "tpu"}}, "test:")


def test_cpu_run_reports_its_device_and_saves_cpu_tensors(tmp_path, toy_data, enc):
    """The report says where training ran; checkpoints and the model folder hold CPU tensors (cpu_tensors is
    what makes a GPU run's files loadable anywhere)."""
    import torch
    from safetensors.torch import load_file

    from genre_edge_export.runloop import cpu_tensors
    from genre_edge_export.train import train

    rep = train(tiny_config(toy_data, enc, train={"device": "auto", "interpolate": False}), tmp_path / "m",
                progress=False)
    assert rep["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    st = load_file(str(tmp_path / "m" / "recommender.safetensors"))
    assert st and all(v.device.type == "cpu" for v in st.values())
    x = torch.zeros(2, 3).t()  # not contiguous
    out = cpu_tensors({"x": x, "y": torch.ones(1, requires_grad=True)})
    assert out["x"].is_contiguous() and not out["y"].requires_grad
