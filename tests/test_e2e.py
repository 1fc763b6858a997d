"""End to end with the real teacher (all-MiniLM-L6-v2) on a slice of real ml-100k."""
import numpy as np
import pytest

from conftest import have_export

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not have_export(), reason="export extra not installed")]


def test_real_teacher_on_ml100k_slice(tmp_path):
    import torch

    from genre_edge import config as cfgmod
    from genre_edge.data import load_dataset
    from genre_edge.data.fetch import get_ml100k
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
        "train": {"epochs": 2, "steps_per_epoch": 8, "batch_size": 64, "negatives": 64, "threads": 1, "patience": 0},
    })
    rep = train(conf, tmp_path / "m", progress=False, dataset=ds)
    h = rep["history"]
    assert h[-1]["valid_loss"] < h[0]["valid_loss"] + 0.05 and h[-1]["train_loss"] < 5.0
    assert h[-1]["valid_ndcg@10"] > rep["zero_shot"]["valid"]["ndcg@10"]
    assert rep["teacher"]["test"]["ndcg@10"] > 0
