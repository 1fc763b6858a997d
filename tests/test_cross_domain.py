"""Cross-domain pieces: a domain of a data set, few-shot training, and transfer with a freeze schedule."""
import numpy as np
import pytest

from conftest import GENRES, have_export, tiny_config, tiny_encoder

pytestmark = pytest.mark.skipif(not have_export(), reason="export extra not installed")


def test_a_domain_keeps_its_items_and_their_events_only(toy_data):
    from genre_edge_export.data import load_dataset
    from genre_edge.errors import ConfigError
    from genre_edge_export.data.domain import domain

    ds = load_dataset(toy_data)
    g0, g1 = GENRES[0], GENRES[1]
    sub = domain(ds, (g0, g1), (g1,))
    assert len(sub.items) == sum(1 for c in ds.items.categories if g0 in c and g1 not in c) > 0
    assert all(g0 in c for c in sub.items.categories)
    kept_ids = set(sub.items.ids)
    want = sum(ds.items.ids[i] in kept_ids for i in ds.interactions.item)
    assert len(sub.interactions) == want and sub.interactions.item.max() < len(sub.items)
    # re-indexed events still point at the same item ids
    for r in range(0, len(sub.interactions), 7):
        assert sub.items.ids[sub.interactions.item[r]] in kept_ids
    assert sub.n_users == ds.n_users and sub.impressions is None
    with pytest.raises(ConfigError, match="unknown category 'Nope'.*this data set has"):
        domain(ds, ("Nope",))


def test_few_shot_learns_from_the_sample_and_transfer_starts_from_the_source(toy_data, tmp_path):
    import torch
    from safetensors.torch import load_file

    from genre_edge.errors import ConfigError
    from genre_edge_export.train import train
    from genre_edge_export.trainer import Trainer

    enc = tiny_encoder(tmp_path / "enc")
    src_conf = tiny_config(toy_data, enc, data={"include_categories": [GENRES[0], GENRES[1]]}, cf={"kind": "none"})
    train(src_conf, tmp_path / "src", progress=False)
    with pytest.raises(ConfigError, match="needs cf.kind = 'none'"):
        tiny_config(toy_data, enc, train={"max_train_positives": 10})
    tgt = tiny_config(toy_data, enc, data={"include_categories": [GENRES[2], GENRES[3]]}, cf={"kind": "none"},
                      train={"max_train_positives": 12, "init_from": str(tmp_path / "src"), "freeze_epochs": 1,
                             "epochs": 1, "interpolate": False})
    t = Trainer(tgt, tmp_path / "tgt", progress=False)
    assert len(t.prep.learn_rows) == 12 and set(np.unique(np.concatenate([b[1] for b in t._batches()]))) <= \
        set(t.prep.split.train.item[t.prep.learn_rows])
    src = load_file(str(tmp_path / "src" / "recommender.safetensors"))
    um = {k[len("rec."):]: v for k, v in src.items() if k.startswith("rec.user_model.")}
    for k, v in um.items():
        assert torch.equal(t.rec.state_dict()[k], v)  # the source's user model, carried over
    adapter0 = t.tower.adapter.weight.detach().clone()
    assert torch.equal(adapter0, src["tower.adapter.weight"])
    rep = t.fit()
    assert torch.equal(t.tower.adapter.weight, adapter0)  # frozen for the first (only) epoch
    assert rep["train_positives"]["used"] == 12 and rep["transfer_initial"]["test"]["users"] > 0
    # the transferred model is a candidate: an epoch is kept only when it beats the start on validation
    start = rep["transfer_initial"]["valid"]["ndcg@10"]
    epochs = [h["valid_ndcg@10"] for h in rep["history"]]
    assert rep["best_epoch"] == (0 if max(epochs) <= start else 1 + int(np.argmax(epochs)))
    if rep["best_epoch"] == 0:
        assert abs(rep["teacher"]["valid"]["ndcg@10"] - start) < 1e-9
    bad = tiny_config(toy_data, enc, cf={"kind": "none"}, user_model={"kind": "mean"},
                      train={"init_from": str(tmp_path / "src")})
    with pytest.raises(ConfigError, match="source's user_model is 'attention'"):
        Trainer(bad, tmp_path / "bad", progress=False)
