"""Every config choice trains on a tiny random BERT; resume works; outputs are pickle-free."""
import pytest

from conftest import have_export, tiny_config, tiny_encoder

pytestmark = pytest.mark.skipif(not have_export(), reason="export extra not installed")


@pytest.fixture(scope="module")
def enc(tmp_path_factory):
    return tiny_encoder(tmp_path_factory.mktemp("enc") / "e")


@pytest.mark.parametrize("over", [
    {"user_model": {"kind": "mean"}, "head": {"kind": "dot"}, "cf": {"kind": "none"}},
    {"user_model": {"kind": "attention"}, "head": {"kind": "mlp"}, "cf": {"kind": "cooccurrence"}},
    {"user_model": {"kind": "nrms"}, "head": {"kind": "dot"}, "cf": {"kind": "mf"}, "encoder": {"pooling": "cls"}},
    {"encoder": {"trainable_layers": 0, "adapter": False}, "cf": {"kind": "ease"}},
])
def test_each_config_choice_trains(tmp_path, toy_data, enc, over):
    from genre_edge_export.train import train

    conf = tiny_config(toy_data, enc, **over)
    rep = train(conf, tmp_path / "m", progress=False)
    assert {"valid", "test", "cold"} <= set(rep["teacher"])
    assert 0 <= rep["teacher"]["test"]["ndcg@10"] <= 1
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"recommender.safetensors", "item_embeddings.npy", "config.toml", "report.json", "encoder"} <= files
    assert not list((tmp_path / "m").rglob("*.bin")) and not list((tmp_path / "m").rglob("*.pt"))


def test_resume_continues_from_checkpoint(tmp_path, toy_data, enc):
    from genre_edge_export.train import train

    conf = tiny_config(toy_data, enc, train={"epochs": 1})
    train(conf, tmp_path / "m", progress=False)
    conf2 = tiny_config(toy_data, enc, train={"epochs": 2})
    rep = train(conf2, tmp_path / "m", progress=False)
    assert [h["epoch"] for h in rep["history"]] == [1, 2]  # epoch 1 came from the checkpoint
    conf3 = tiny_config(toy_data, enc, user_model={"kind": "nrms"})
    from genre_edge.errors import ConfigError

    with pytest.raises(ConfigError, match="checkpoint does not match"):
        train(conf3, tmp_path / "m", progress=False)


def test_mlp_and_mf_bundle_export_and_serve(tmp_path, toy_data, enc):
    from genre_edge.recommender import Recommender
    from genre_edge_export.bundle_writer import export_bundle
    from genre_edge_export.train import train

    conf = tiny_config(toy_data, enc, head={"kind": "mlp"}, cf={"kind": "mf"})
    train(conf, tmp_path / "m", progress=False)
    export_bundle(tmp_path / "m", tmp_path / "b", ["x86-avx512-vnni"], min_kept=0.0, progress=lambda m: None)
    r = Recommender.load(tmp_path / "b", "x86-avx512-vnni", state_dir=tmp_path / "s")
    assert r.head_session is not None
    out = r.recommend(["m0", "m1"], k=5, explain=True)
    assert len(out.items) == 5


def test_quality_gate_fails_clearly(tmp_path, toy_data, enc):
    from genre_edge_export.bundle_writer import QualityGateError, export_bundle
    from genre_edge_export.train import train

    conf = tiny_config(toy_data, enc)
    train(conf, tmp_path / "m", progress=False)
    with pytest.raises(QualityGateError, match="quality gate failed"):
        export_bundle(tmp_path / "m", tmp_path / "b", ["x86-avx512-vnni"], min_kept=1.5, progress=lambda m: None)
    assert not (tmp_path / "b").exists() and (tmp_path / "b.rejected" / "manifest.json").is_file()
