"""Every config choice trains on a tiny random BERT; resume works; outputs are pickle-free."""
import json

import pytest

from conftest import assert_same_weights, have_export, tiny_config, tiny_encoder

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


def test_progress_off_a_terminal_is_one_line_per_epoch(tmp_path, toy_data, enc, capsys):
    """Training with progress on, its stderr a file (a log, CI): the epoch lines, no progress bar redraws
    (`make demo > log` was 137 KB of them)."""
    from genre_edge_export.train import train

    train(tiny_config(toy_data, enc, train={"epochs": 2, "steps_per_epoch": 4}), tmp_path / "m", progress=True)
    got = capsys.readouterr()
    assert "epoch 1: train loss" in got.out and "epoch 2: train loss" in got.out
    assert "step/s" not in got.err and "\r" not in got.err, got.err[:500]


def test_wise_interpolation_is_chosen_on_cold_validation(tmp_path, toy_data, enc):
    import numpy as np

    from genre_edge_export.train import train

    conf = tiny_config(toy_data, enc, split={"cold_quantile": 0.85, "cold_valid_quantile": 0.6},
                       train={"epochs": 1, "steps_per_epoch": 6})
    rep = train(conf, tmp_path / "m", progress=False)
    it = rep["interpolation"]
    assert [r["alpha"] for r in it["grid"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    total = [r["valid_ndcg@10"] + r["cold_valid_ndcg@10"] for r in it["grid"]]
    assert it["alpha"] == it["grid"][int(np.argmax(total))]["alpha"]
    assert rep["teacher"]["cold_valid"]["users"] > 0
    # switched off: no interpolation record, trained weights kept
    rep2 = train(tiny_config(toy_data, enc, train={"interpolate": False}), tmp_path / "m2", progress=False)
    assert rep2["interpolation"] is None


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
    # the same parameters under another config (here no CF part): refused, not resumed as if it were this run
    # (a finished run of one config was once rewritten under another's name, with the first one's weights)
    conf4 = tiny_config(toy_data, enc, train={"epochs": 2}, cf={"kind": "none"})
    with pytest.raises(ConfigError, match=r"checkpoint of another training config \(differs in cf\.kind\)"):
        train(conf4, tmp_path / "m", progress=False)
    from genre_edge_export.runloop import checkpoint_differences

    assert checkpoint_differences(tmp_path / "m", conf4) == ["cf.kind"]  # what quickstart restarts on
    assert checkpoint_differences(tmp_path / "m", conf2) == []  # more epochs of the same run: resumable
    assert checkpoint_differences(tmp_path / "nowhere", conf4) == []
    rep = train(conf4, tmp_path / "m", restart=True, progress=False)  # --restart: this config from scratch
    assert [h["epoch"] for h in rep["history"]] == [1, 2]
    assert checkpoint_differences(tmp_path / "m", conf4) == []


def test_mlp_and_mf_bundle_export_and_serve(tmp_path, toy_data, enc):
    from genre_edge.recommender import Recommender
    from genre_edge_export.bundle_writer import export_bundle
    from genre_edge_export.train import train

    conf = tiny_config(toy_data, enc, head={"kind": "mlp"}, cf={"kind": "mf"})
    train(conf, tmp_path / "m", progress=False)
    export_bundle(tmp_path / "m", tmp_path / "b", ["x86-avx512-vnni"], min_kept=0.0, min_request_kept=0.0, min_cold_kept=0.0,
                  progress=lambda m: None,
                  catalog_dtype="fp16", extra_variants=("int8-qdq", "fp16"))
    r = Recommender.load(tmp_path / "b", "x86-avx512-vnni", state_dir=tmp_path / "s")
    assert r.bundle.manifest.catalog.embeddings.endswith(".fp16.npy")
    # the static QDQ variant is built, measured against the teacher, and loadable on request
    rows = r.bundle.manifest.quality.rows
    assert rows["model-onnx-int8-qdq"]["cos_mean"] > 0.9 and rows["model-onnx-int8-qdq"]["latency_ms"] > 0
    q = Recommender.load(tmp_path / "b", "x86-avx512-vnni", state_dir=tmp_path / "s2", variant="int8-qdq")
    e_dyn, e_qdq = r.embed(["a space adventure", "a quiet drama"]), q.embed(["a space adventure", "a quiet drama"])
    assert (e_dyn * e_qdq).sum(1).min() > 0.9
    # the GPU variant: optimum's ORTOptimizer fused the attention (one Attention node per layer) before fp16,
    # and it matches the fp32 encoder (checked on the CPU here; GPU numbers: benchmarks/gpu_bench.py)
    import onnx

    fp16 = onnx.load(str(tmp_path / "b" / r.bundle.manifest.models.encoder["fp16"].file))
    ops = [n.op_type for n in fp16.graph.node]
    layers = json.loads((tmp_path / "m" / "encoder" / "config.json").read_text())["num_hidden_layers"]
    assert ops.count("Attention") == layers and "SkipLayerNormalization" in ops
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16.graph.initializer)
    assert rows["model-onnx-fp16"]["cos_mean"] > 0.999
    assert r.head_session is not None
    out = r.recommend(["m0", "m1"], k=5, explain=True)
    assert len(out.items) == 5


def test_quality_gate_fails_clearly(tmp_path, toy_data, enc):
    from genre_edge_export.bundle_writer import QualityGateError, export_bundle
    from genre_edge_export.train import train

    conf = tiny_config(toy_data, enc)
    train(conf, tmp_path / "m", progress=False)
    # and says where the quality went: the same model's fp32 export, before quantization, or int8
    with pytest.raises(QualityGateError, match=r"quality gate failed: .*the same model.s fp32 export keeps [0-9.]+: "
                                               r"most of the loss comes .*--min-kept \(genre export, genre quickstart\) sets"):
        export_bundle(tmp_path / "m", tmp_path / "b", ["x86-avx512-vnni"], min_kept=1.5, progress=lambda m: None)
    assert not (tmp_path / "b").exists() and (tmp_path / "b.rejected" / "manifest.json").is_file()
    # every shipped variant is held to each threshold, and the message names what failed
    with pytest.raises(QualityGateError, match=r"int8-avx512vnni keeps .* request precision@10 \(required 50\.000\)"):
        export_bundle(tmp_path / "m", tmp_path / "b", ["x86-avx512-vnni"], min_kept=0.0, min_request_kept=50.0,
                      min_cold_kept=0.0, progress=lambda m: None)
    import json

    gate = json.loads((tmp_path / "b.rejected" / "manifest.json").read_text())["quality"]["gate"]
    # the toy split has no cold-validation items, so there is no cold figure to gate on
    assert set(gate["variants"]["int8-avx512vnni"]) == {"warm", "request"} and not gate["passed"]


def test_bundle_size_trims_keep_parity(tiny_bundle):
    """int16 neighbour ids, a position table cut to max_tokens, compact tokenizer JSON: same answers."""
    import json

    import numpy as np
    import onnx

    b = tiny_bundle / "bundle"
    m = json.loads((b / "manifest.json").read_text())
    assert m["catalog"]["cf"]["idx"].endswith(".int16.npy")
    assert np.load(b / m["catalog"]["cf"]["idx"]).dtype == np.int16
    g = onnx.load(str(b / m["models"]["encoder"]["fp32"]["file"])).graph
    pos = [i for i in g.initializer if "position_embeddings" in i.name]
    assert pos and pos[0].dims[0] == m["max_tokens"]
    assert m["quality"]["parity"]["encoder_fp32_vs_torch"]["max_abs_diff"] < 1e-4
    assert "\n" not in (b / "tokenizer.json").read_text()[:2000]


def test_dynamic_int8_quantization_is_quiet_and_leaves_other_warnings(tmp_path, caplog):
    """onnxruntime's advice to pre-process (fuse) before quantizing is dropped - the unfused graph is quantized
    on purpose - while other warnings on the root logger still get through, during and after."""
    import logging

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from genre_edge.ortload import onnxruntime
    from genre_edge_export.quantize import quantize

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])], [w])
    src = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), src)
    with caplog.at_level(logging.WARNING):
        quantize(src, tmp_path / "m.int8.onnx", "int8-avx2")
        logging.warning("another warning")
    assert "pre-processing" not in caplog.text and "another warning" in caplog.text
    assert not logging.getLogger().filters
    x = np.ones((2, 8), np.float32)
    y = onnxruntime().InferenceSession(str(tmp_path / "m.int8.onnx")).run(None, {"x": x})[0]
    assert np.allclose(y, x @ numpy_helper.to_array(w), atol=0.1)


def test_int8_catalog_matches_the_encoder(tiny_bundle):
    """The int8 catalog (one scale per item) de-quantizes to what the int8 encoder produces."""
    import numpy as np

    from genre_edge.recommender import Recommender

    r = Recommender.load(tiny_bundle / "bundle", "x86-avx512-vnni", state_dir=tiny_bundle / "int8-cat-state")
    assert r.bundle.manifest.catalog.embeddings.endswith(".int8.npy")
    n = len(r.catalog.ids)
    texts = __import__("json").loads((tiny_bundle / "student" / "items.json").read_text())["text"]
    e = r.embed(texts[:n])
    cos = (e * r.catalog.emb[:n]).sum(1) / np.linalg.norm(r.catalog.emb[:n], axis=1)
    assert cos.min() > 0.999


def test_impression_negatives_come_from_the_same_impression(tmp_path, toy_data, enc):
    """MIND-style data: items shown with a click but not clicked become that example's negatives."""
    import numpy as np

    from genre_edge_export.data import load_dataset
    from genre_edge_export.data.schema import Interactions
    from genre_edge_export.prepare import Prepared
    from genre_edge_export.train import train

    ds = load_dataset(toy_data)
    it = ds.interactions
    pos = np.flatnonzero(it.label == 1)
    rng = np.random.default_rng(0)
    shown = rng.integers(0, ds.n_items, (len(pos), 2)).astype(np.int32)
    n = 2 * len(pos)
    ds.interactions = Interactions(
        np.concatenate([it.user, np.repeat(it.user[pos], 2)]), np.concatenate([it.item, shown.ravel()]),
        np.concatenate([it.time, np.repeat(it.time[pos], 2)]),
        np.concatenate([it.rating, np.full(n, np.nan, np.float32)]),
        np.concatenate([it.label, np.zeros(n, np.int8)]))
    conf = tiny_config(toy_data, enc, train={"impression_negatives": 3})
    prep = Prepared(conf, dataset=ds)
    assert prep.impression_coverage > 0.5
    tr = prep.split.train
    p = np.flatnonzero(tr.label == 1)[:20]
    ids, ok = prep.impression_negatives(tr.user[p], tr.time[p], 3, rng)
    for r, k in enumerate(p):
        same = tr.item[(tr.user == tr.user[k]) & (tr.time == tr.time[k]) & (tr.label == 0)]
        assert ok[r].sum() == min(3, len(same)) and set(ids[r, ok[r]]) <= set(same)
    rep = train(conf, tmp_path / "m", progress=False, dataset=ds)
    assert rep["impression_negatives"]["positives_with_impressions"] > 0.5
    assert rep["history"][0]["train_loss"] > 0


@pytest.mark.parametrize("kind", ["ease", "mf"])
def test_recency_weighted_cf_matches_between_training_and_runtime(kind):
    """The device's CF scorer gives the PyTorch CF part's scores, recency weighting included."""
    import numpy as np
    import torch

    from genre_edge.scorer import CFScorer
    from genre_edge_export.models import CFPart, neighbour_table
    from genre_edge_export.scoring import pad

    rng = np.random.default_rng(0)
    n = 40
    W = rng.normal(size=(n, n)).astype(np.float32)
    np.fill_diagonal(W, 0)
    idx, w = neighbour_table(W, 12)
    part = CFPart(kind, n, (idx, w) if kind == "ease" else None, mf_dim=8, recency_floor=0.3)
    if kind == "mf":
        torch.nn.init.normal_(part.Q.weight)
    part.recency[0] = 4.0
    hists = [rng.choice(n, size=s, replace=False) for s in (1, 5, 17)]
    ids, mask = map(torch.as_tensor, pad(hists))  # left-aligned, padded with id 0 at weight 0, as training pads
    with torch.no_grad():
        ref = part.scores(ids, mask, None).numpy()
    dev = (CFScorer("ease", idx=idx, w=w, half_life=4.0, floor=0.3) if kind == "ease" else
           CFScorer("mf", P=part.P.weight.detach().numpy(), Q=part.Q.weight.detach().numpy(), half_life=4.0, floor=0.3))
    for r, h in enumerate(hists):
        np.testing.assert_allclose(dev.scores(h.astype(np.int64), n), ref[r], rtol=1e-4, atol=1e-5)
    # recency matters: the same items in another order score differently (for histories of 2+)
    assert not np.allclose(dev.scores(hists[2][::-1].astype(np.int64), n), ref[2], atol=1e-4)
    # explanations add up to the score they explain
    item = int(np.argmax(ref[2]))
    assert dev.contributions(hists[2].astype(np.int64), item).sum() == pytest.approx(ref[2][item], rel=1e-4, abs=1e-5)


def test_short_history_cf_tables_serve_short_histories_alike_in_training_and_on_the_device():
    """With tables for histories of 1 and of 2-3 items, the PyTorch CF part and the device's scorer read each for
    those (and only those) histories, recency weighting included; explanations add up to the score either way."""
    import numpy as np
    import torch

    from genre_edge.scorer import CFScorer
    from genre_edge_export.models import CFPart, neighbour_table
    from genre_edge_export.scoring import pad

    rng = np.random.default_rng(2)
    n = 40
    W, W1, W3 = (rng.normal(size=(n, n)).astype(np.float32) for _ in range(3))
    for M in (W, W1, W3):
        np.fill_diagonal(M, 0)
    (idx, w), t1, (sidx, sw) = neighbour_table(W, 12), neighbour_table(W1, 5), neighbour_table(W3, 6)
    part = CFPart("ease", n, (idx, w), recency_floor=0.3)
    part.recency[0] = 2.0
    part.set_short([(1, t1), (3, (sidx, sw))])
    hists = [rng.choice(n, size=s, replace=False) for s in (1, 2, 3, 4, 9)]
    ids, mask = map(torch.as_tensor, pad(hists))
    with torch.no_grad():
        ref = part.scores(ids, mask, None).numpy()
        part.set_short(None)
        one_table = part.scores(ids, mask, None).numpy()
        part.set_short([(3, (sidx, sw))])
        only3 = part.scores(ids, mask, None).numpy()
    with pytest.raises(ValueError, match="ascending"):
        part.set_short([(3, t1), (1, t1)])
    dev = CFScorer("ease", idx=idx, w=w, half_life=2.0, floor=0.3, short=[(3, sidx, sw), (1, *t1)])  # any order
    main = CFScorer("ease", idx=idx, w=w, half_life=2.0, floor=0.3)
    for r, h in enumerate(hists):
        h = h.astype(np.int64)
        np.testing.assert_allclose(dev.scores(h, n), ref[r], rtol=1e-4, atol=1e-5)
        # short tables for 1-3 items only: longer histories score as with one table
        assert np.allclose(ref[r], one_table[r], atol=1e-5) == (len(h) > 3)
        # the 1-item table for 1 item only; 2-3 items read the other
        assert np.allclose(ref[r], only3[r], atol=1e-5) == (len(h) > 1)
        np.testing.assert_allclose(main.scores(h, n), one_table[r], rtol=1e-4, atol=1e-5)
        rows, vals = dev.sparse(h)  # what candidate-set requests read
        np.testing.assert_allclose(vals, ref[r][rows], rtol=1e-4, atol=1e-5)
        item = int(np.argmax(ref[r]))
        assert dev.contributions(h, item).sum() == pytest.approx(ref[r][item], rel=1e-4, abs=1e-5)
    # items added on the device (beyond the bundle) have no CF and do not count towards the length
    h = np.array([hists[2][0], n + 5, n + 6, n + 7, hists[2][1]], np.int64)
    short_only = CFScorer("ease", idx=sidx, w=sw, half_life=2.0, floor=0.3)  # 2 kept items: the 2-3 item table
    np.testing.assert_allclose(dev.scores(h, n + 8), short_only.scores(h, n + 8), rtol=1e-5, atol=1e-6)
    assert not np.allclose(dev.scores(h, n + 8), main.scores(h, n + 8), atol=1e-4)


def test_cf_votes_of_item_zero_and_repeats_count_as_on_the_device():
    """Histories are padded with id 0 (weight 0): the PyTorch CF part must still count a real item 0 in a padded
    row (it lost it when padding overwrote the vote: Toy Story, row 0 of ml-100k, voted for no one), and an item
    seen twice votes twice, as the device's bincount counts it."""
    import numpy as np
    import torch

    from genre_edge.scorer import CFScorer
    from genre_edge_export.models import CFPart, neighbour_table
    from genre_edge_export.scoring import pad

    rng = np.random.default_rng(1)
    n = 30
    W = rng.normal(size=(n, n)).astype(np.float32)
    np.fill_diagonal(W, 0)
    idx, w = neighbour_table(W, 10)
    part = CFPart("ease", n, (idx, w), recency_floor=0.5)
    part.recency[0] = 3.0
    hists = [np.array([0, 4]), np.array([7, 0, 9, 0]), np.array([5, 6, 8, 11, 12, 13])]
    ids, mask = map(torch.as_tensor, pad(hists))
    with torch.no_grad():
        ref = part.scores(ids, mask, None).numpy()
    dev = CFScorer("ease", idx=idx, w=w, half_life=3.0, floor=0.5)
    for r, h in enumerate(hists):
        np.testing.assert_allclose(ref[r], dev.scores(h.astype(np.int64), n), rtol=1e-5, atol=1e-6)
    # what the lost vote gave: the scores of item 4 alone (the check above is the one that would fail)
    assert not np.allclose(ref[0], dev.scores(np.array([4]), n), atol=1e-4)


def test_mind_impressions_give_negatives_of_training_clicks_only(tmp_path, toy_data, enc):
    """MIND keeps shown-but-not-clicked news in impression logs: those become the click's negatives."""
    import random

    import numpy as np

    from genre_edge_export.data import load_dataset
    from genre_edge_export.prepare import Prepared

    rng = random.Random(0)
    d = tmp_path / "mind"
    d.mkdir()
    (d / "news.tsv").write_text("".join(f"N{i}\tcat{i % 4}\tsub\tTitle {i}\tAbstract {i}\thttp://x\t[]\t[]\n"
                                        for i in range(40)))
    rows = []
    for u in range(30):
        for j in range(6):
            shown = rng.sample(range(40), 5)
            click = shown[0]
            imp = " ".join(f"N{x}-{int(x == click)}" for x in shown)
            rows.append(f"{u * 10 + j}\tU{u}\t11/{1 + j}/2019 {1 + u % 11}:00:00 AM\t\t{imp}\n")
    (d / "behaviors.tsv").write_text("".join(rows))
    ds = load_dataset(d)
    conf = tiny_config(toy_data, enc, split={"kind": "user_holdout"}, train={"impression_negatives": 4})
    prep = Prepared(conf, dataset=ds)
    assert prep.impression_coverage > 0.9  # every training click came with 4 non-clicked news
    tr = prep.split.train
    p = np.flatnonzero(tr.label == 1)
    ids, ok = prep.impression_negatives(tr.user[p], tr.time[p], 4, np.random.default_rng(0))
    by_key = {(imp.user, imp.time): set(imp.items[imp.labels == 0].tolist()) for imp in ds.impressions}
    for r, k in enumerate(p):
        assert ok[r].all() and set(ids[r].tolist()) <= by_key[(tr.user[k], tr.time[k])]


def test_seen_pairs_index_like_the_dense_matrix_they_replace():
    """Issue 20: the training's seen-item mask is sorted (user, item) keys, not a users x items bool matrix."""
    import numpy as np

    from genre_edge_export.trainer import SeenPairs

    rng = np.random.default_rng(4)
    n_users, n_items = 50, 300
    hist = [rng.choice(n_items, size=rng.integers(0, 30), replace=False) for _ in range(n_users)]
    dense = np.zeros((n_users, n_items), bool)
    for u, h in enumerate(hist):
        dense[u, h] = True
    seen = SeenPairs(hist, n_items)
    users, negs = rng.integers(0, n_users, 64), rng.integers(0, n_items, 40)
    assert np.array_equal(seen[users[:, None], negs[None, :]], dense[users[:, None], negs[None, :]])
    assert seen.keys.nbytes == 8 * int(dense.sum())
    assert not SeenPairs([np.array([], np.int64)] * 3, 10)[np.array([[0], [2]]), np.array([[1, 2]])].any()


def test_dense_cf_that_cannot_fit_is_refused_with_the_alternative(monkeypatch):
    import os

    import numpy as np
    import pytest

    from genre_edge.errors import ConfigError
    from genre_edge_export import baselines

    real = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda k: 1024 if k == "SC_PHYS_PAGES" else real(k))  # a 4 MiB machine
    with pytest.raises(ConfigError, match="EASE over 1000 items .* use cf.kind"):
        baselines.ease_weights(np.zeros((5, 1000), np.float32), 100.0)


@pytest.mark.parametrize("head", ["dot", "mlp"])
@pytest.mark.parametrize("own_after", [0, 3])
def test_scoring_candidate_rows_equals_the_gathered_forward_with_its_gradients(head, own_after):
    """A training step scores [positive | K shared negatives | own impression negatives] from the unique
    rows without gathering a [B, C, D] tensor: the same scores and the same gradients as the gathered form."""
    import torch

    from genre_edge_export.models import DotHead, MLPHead

    torch.manual_seed(0)
    B, K, D, U = 6, 5, 8, 20
    h = (DotHead if head == "dot" else MLPHead)(D)
    with torch.no_grad():
        h.b.fill_(0.7)
        h.c.fill_(-0.3)
    inv = torch.cat([torch.randint(0, U, (B, 1)), torch.randint(0, U, (1, K)).expand(B, K),
                     torch.randint(0, U, (B, own_after))], 1)
    cf, pop = torch.randn(B, inv.shape[1]), torch.randn(B, inv.shape[1])
    grads = []
    for fast in (True, False):
        u = torch.randn(B, D, generator=torch.Generator().manual_seed(1), requires_grad=True)
        rows = torch.randn(U, D, generator=torch.Generator().manual_seed(2), requires_grad=True)
        s = h.score_rows(u, rows, inv, cf, pop, shared=slice(1, K + 1)) if fast else h(u, rows[inv], cf, pop)
        (s * torch.linspace(-1, 1, s.numel()).reshape(s.shape)).sum().backward()
        grads.append((s.detach(), u.grad, rows.grad, h.log_a.grad.clone()))
        h.zero_grad()
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_the_same_seed_gives_bit_identical_weights_with_two_threads(tmp_path, toy_data, enc):
    """Training and distillation on the CPU with 2 threads: the same config and seed give the same weights bit
    for bit. Without PyTorch's deterministic algorithms the backward of a step's candidate gather (``rows[inv]``)
    accumulates in a thread-dependent order: the ml-100k quick preset differed by ~3e-5 per weight between two
    runs, and the int8 encoder distilled from it by one film's rank in the export gate."""
    import torch

    from genre_edge_export.device import seed_torch
    from genre_edge_export.distill import DistillConfig, distill
    from genre_edge_export.models import DotHead
    from genre_edge_export.train import train

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        # the step's own op, sized so its backward runs on 2 threads: repeated, the gradients agree bit for bit
        seed_torch(torch, 0, torch.device("cpu"))
        assert torch.are_deterministic_algorithms_enabled()
        g = torch.Generator().manual_seed(0)
        rows = torch.randn(2000, 64, generator=g, requires_grad=True)
        inv = torch.randint(0, 2000, (256, 129), generator=g)
        u = torch.randn(256, 64, generator=g)
        head, grads = DotHead(64), []
        for _ in range(6):
            rows.grad = None
            s = head.score_rows(u, rows, inv, torch.zeros(inv.shape), torch.zeros(inv.shape), shared=slice(1, 1))
            s.logsumexp(1).sum().backward()
            grads.append(rows.grad.clone())
        assert all(torch.equal(gr, grads[0]) for gr in grads[1:])
        seed_torch(torch, 0, torch.device("cuda"))  # a GPU run (none needed to set it) goes without the switch
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(threads)
    # whole runs: train twice, distill the first teacher twice, every weight equal
    conf = tiny_config(toy_data, enc, train={"epochs": 1, "steps_per_epoch": 6, "threads": 2})
    for run in ("a", "b"):
        train(conf, tmp_path / f"t{run}", progress=False)
        distill(tmp_path / "ta", DistillConfig(layers=(0, 2), epochs=1, threads=2), tmp_path / f"s{run}",
                progress=False)
    for kind, report in (("t", "report.json"), ("s", "distill.json")):
        facts = json.loads((tmp_path / f"{kind}a" / report).read_text())
        assert (facts["threads"], facts["device"], facts["torch"], facts["deterministic"]) == (
            2, "cpu", torch.__version__, True), kind  # what reproducing these weights takes
        assert_same_weights(tmp_path / f"{kind}a", tmp_path / f"{kind}b")


def test_bf16_training_and_distillation_follow_fp32(tmp_path, toy_data, enc):
    """train.precision = "bf16" (and distillation's) runs the forward pass in bfloat16: losses near the
    fp32 run's but not bit-identical (the autocast really ran), and a bad value is refused by name. Both with
    a fine-tuned top layer and with the encoder frozen (the quick preset: the item rows come from a fp32 table)."""
    from genre_edge import config as cfgmod
    from genre_edge.errors import ConfigError
    from genre_edge_export.distill import DistillConfig, distill
    from genre_edge_export.train import train

    for layers in (1, 0):
        loss = {}
        for p in ("fp32", "bf16"):
            conf = tiny_config(toy_data, enc, encoder={"trainable_layers": layers},
                               train={"precision": p, "interpolate": False})
            rep = train(conf, tmp_path / f"{p}-{layers}", progress=False)
            loss[p] = rep["history"][0]["train_loss"]
            assert rep["precision"] == p  # the report says how it was trained
        assert loss["bf16"] != loss["fp32"] and abs(loss["bf16"] - loss["fp32"]) < 0.05 * loss["fp32"], (layers, loss)
    d = {}
    for p in ("fp32", "bf16"):
        d[p] = distill(tmp_path / "fp32-1", DistillConfig(layers=(0, 1), epochs=1, threads=1, precision=p),
                       tmp_path / f"s-{p}", progress=False)
    a, b = d["fp32"]["history"][-1]["loss"], d["bf16"]["history"][-1]["loss"]
    assert a != b and abs(a - b) < 0.1 * max(a, 1e-3), (a, b)
    with pytest.raises(ConfigError, match="precision.*fp32.*bf16"):
        cfgmod.from_dict(type(tiny_config(toy_data, enc)), {"train": {"precision": "fp16"}}, "test:")


def test_sasrec_user_model_reads_order_and_masks_padding():
    """The sequential user model: padded (training) and unpadded (runtime) histories give the same user
    vector; the order of the history matters; an empty history gives a zero vector; explanation weights
    are a distribution over the real slots only."""
    import torch

    from genre_edge_export.models import SASRecUser

    torch.manual_seed(0)
    m = SASRecUser(16, heads=2, max_history=8).eval()
    for p in m.parameters():  # out/ff start at zero: give them weights so attention really mixes the history
        torch.nn.init.normal_(p, std=0.3)
    h = torch.nn.functional.normalize(torch.randn(1, 5, 16), dim=-1)
    with torch.no_grad():
        u1, w1 = m(h, torch.ones(1, 5))
        hp = torch.cat([h, torch.randn(1, 3, 16)], 1)  # 3 padded slots holding garbage
        u2, w2 = m(hp, torch.tensor([[1.0] * 5 + [0.0] * 3]))
        u3, _ = m(h.flip(1), torch.ones(1, 5))
        u0, w0 = m(torch.randn(1, 4, 16), torch.zeros(1, 4))
    assert torch.allclose(u1, u2, atol=1e-5) and torch.allclose(w1, w2[:, :5], atol=1e-6)
    assert float(w2[:, 5:].abs().max()) == 0.0 and abs(float(w1.sum()) - 1.0) < 1e-5
    assert not torch.allclose(u1, u3, atol=1e-3)  # order is read (a bag-of-items model would not see it)
    assert float(u0.abs().max()) == 0.0 and float(w0.abs().max()) == 0.0


def test_example_history_before_holds_only_earlier_events(tmp_path, toy_data, enc):
    """``train.example_history = "before"``: each training example's history is the user's training positives
    strictly before the target's time (next-item prediction); "others" is every other positive."""
    import numpy as np

    from genre_edge_export.trainer import Trainer

    t = Trainer(tiny_config(toy_data, enc, train={"example_history": "before"}), tmp_path / "m", progress=False)
    tr = t.prep.split.train
    pos = np.flatnonzero(tr.label == 1)
    users, items, times = tr.user[pos].astype(np.int64), tr.item[pos].astype(np.int64), tr.time[pos]
    before = t.example_histories(users, items, times)
    checked = 0
    for u, i, tm, h in zip(users, items, times, before):
        ev = {(int(a), int(b)) for a, b in zip(tr.item[pos][tr.user[pos] == u], tr.time[pos][tr.user[pos] == u])}
        want = sorted(b for a, b in ev if b < tm)
        assert sorted(int(x) for x in h) == sorted(int(a) for a, b in ev if b < tm)  # exactly the earlier ones
        checked += len(want) > 0
    assert checked > len(users) // 2  # most examples have an earlier history (the check is not vacuous)
    t2 = Trainer(tiny_config(toy_data, enc, train={"example_history": "others"}), tmp_path / "m2", progress=False)
    others = t2.example_histories(users, items, times)
    assert all(i not in set(h.tolist()) and len(h) == len(t2.prep.hist[u]) - 1
               for u, i, h in zip(users, items, others))


def test_sasrec_trains_exports_and_serves_with_parity(tmp_path, toy_data, enc):
    """The sasrec user model trained on next-item examples exports to ONNX (runtime == PyTorch), and the
    bundle serves with explanations."""
    from genre_edge.recommender import Recommender
    from genre_edge_export.bundle_writer import export_bundle
    from genre_edge_export.train import train

    conf = tiny_config(toy_data, enc, user_model={"kind": "sasrec", "heads": 2}, train={"example_history": "before"})
    rep = train(conf, tmp_path / "m", progress=False)
    assert 0 <= rep["teacher"]["test"]["ndcg@10"] <= 1
    export_bundle(tmp_path / "m", tmp_path / "b", ["x86-avx2"], min_kept=0.0, min_request_kept=0.0, min_cold_kept=0.0,
                  progress=lambda m: None)
    r = Recommender.load(tmp_path / "b", "x86-avx2", state_dir=tmp_path / "s")
    assert r.bundle.manifest.quality.parity["user_fp32_vs_torch"]["max_abs_diff"] < 1e-4
    hist = list(r.catalog.ids[:6])
    res = r.recommend(hist, k=5, explain=True)
    assert len(res.items) == 5 and not set(x.id for x in res.items) & set(hist)


def test_short_history_cf_tables_are_trained_distilled_bundled_and_served(tmp_path, toy_data, enc):
    """cf.short_history ships EASE tables for short histories (each chosen on validation histories cut to its
    length) through training, distillation and the bundle; the device's CF scores equal the teacher's for 1-4 item
    histories and read those tables only for 1-3 items; a folder whose config says otherwise is refused."""
    import shutil

    import numpy as np
    import torch

    from genre_edge.errors import ConfigError
    from genre_edge.recommender import Recommender, memory_estimate
    from genre_edge_export.bundle_writer import export_bundle
    from genre_edge_export.calibrate import SHORT_CF_SCALES
    from genre_edge_export.distill import DistillConfig, distill
    from genre_edge_export.model_folder import ModelDir
    from genre_edge_export.scoring import pad
    from genre_edge_export.train import train

    conf = tiny_config(toy_data, enc, cf={"kind": "ease", "neighbors": 20, "short_history": [1, 3],
                                          "short_neighbors": 8, "short_scale": 4.0, "ease_lambda": "auto"})
    rep = train(conf, tmp_path / "m", progress=False)
    assert [(r["max_history"], r["used"], r["scale"], r["neighbors"]) for r in rep["cf_short"]] == [(1, True, 4.0, 8),
                                                                                                    (3, True, 4.0, 8)]
    assert [r["scale"] for r in rep["cf_short"][0]["scale_grid"]] == [None, 4.0]  # without, then the configured scale
    M = ModelDir(tmp_path / "m")
    assert [T for T, _ in M.cf_short] == [1, 3] and M.cf_short[1][1][0].shape == (len(M.items["ids"]), 8)
    distill(tmp_path / "m", DistillConfig(layers=(0, 2), epochs=1, threads=1), tmp_path / "s", progress=False)
    S = ModelDir(tmp_path / "s")
    np.testing.assert_array_equal(S.cf_short[1][1][1], M.cf_short[1][1][1])  # the student carries the teacher's
    export_bundle(tmp_path / "s", tmp_path / "b", ["x86-avx2"], tmp_path / "m", min_kept=0.0, min_request_kept=0.0,
                  min_cold_kept=0.0, progress=lambda m: None)
    r = Recommender.load(tmp_path / "b", "x86-avx2", state_dir=tmp_path / "state")
    cfm = r.bundle.manifest.catalog.cf
    assert [t.max_history for t in cfm.short] == [1, 3] and cfm.short[1].idx.startswith("catalog/cf_short3_idx.")
    files = r.bundle.manifest.files
    cf_bytes = sum(files[x].bytes for x in (cfm.idx, cfm.w, *(y for t in cfm.short for y in (t.idx, t.w))))
    est = memory_estimate(r.bundle, r.profile)["cf"]
    assert est == pytest.approx(2 * cf_bytes / (1 << 20)) or est == pytest.approx(0.1 * cf_bytes / (1 << 20))
    rec = S.modules()[1]
    n = len(S.items["ids"])
    rng = np.random.default_rng(0)
    voters = np.flatnonzero((np.abs(S.cf_table[1]).sum(1) > 0) & (np.abs(S.cf_short[0][1][1]).sum(1) > 0)
                            & (np.abs(S.cf_short[1][1][1]).sum(1) > 0))
    hists = [rng.choice(voters, size=k, replace=False) for k in (1, 2, 3, 4, 7)]  # items with CF votes (warm)
    ids, mask = map(torch.as_tensor, pad(hists))
    with torch.no_grad():
        ref = rec.cf.scores(ids, mask, None).numpy()
        rec.cf.set_short(None)
        one = rec.cf.scores(ids, mask, None).numpy()
    for i, h in enumerate(hists):
        dev = r.cf.scores(h.astype(np.int64), n)
        scale = float(np.abs(ref[i]).max()) or 1.0
        np.testing.assert_allclose(dev, ref[i], atol=2e-3 * scale)  # float16 weights on the device
        assert np.allclose(ref[i], one[i]) == (len(h) > 3)  # the short-history tables for 1-3 items only
        res = r.recommend([S.items["ids"][j] for j in h], k=5, explain=True)  # served, with reasons
        assert len(res.items) == 5
    # a folder with a short-history table its config does not ask for is refused, not silently served without it
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "m", bad)
    toml = (bad / "config.toml").read_text()
    assert "short_history = [1, 3]" in toml
    (bad / "config.toml").write_text(toml.replace("short_history = [1, 3]", "short_history = 3"))
    with pytest.raises(ConfigError, match=r"short histories \(cf_short1_idx.npy\) that its config.toml does not ask"):
        ModelDir(bad)
    # "auto": the scale grid, and a table only where validation prefers it (the folder says which)
    conf = tiny_config(toy_data, enc, cf={"kind": "ease", "neighbors": 20, "short_history": 2})
    rep = train(conf, tmp_path / "auto", progress=False)
    cs, = rep["cf_short"]
    assert [r["scale"] for r in cs["scale_grid"]] == [None, *SHORT_CF_SCALES]
    best = max(cs["scale_grid"], key=lambda x: x["valid_ndcg@10"])["valid_ndcg@10"]
    assert cs["valid_ndcg@10_cut"] == best and cs["used"] == (cs["scale"] is not None)
    assert [T for T, _ in ModelDir(tmp_path / "auto").cf_short] == ([2] if cs["used"] else [])


def test_the_pretrained_catalog_pass_is_made_once_for_every_cf_table(toy_data, enc, monkeypatch):
    """The CF part's encoder side information and each short-history table read one pretrained pass over the
    catalog (each re-encoded it), with the same values as a fresh pass."""
    import numpy as np

    from genre_edge_export import prepare

    calls = []
    real = prepare.pretrained_item_embeddings
    monkeypatch.setattr(prepare, "pretrained_item_embeddings", lambda *a: calls.append(1) or real(*a))
    conf = tiny_config(toy_data, enc, cf={"kind": "ease", "neighbors": 20, "side_information": "encoder",
                                          "side_weight": 3.0, "short_history": [1, 2]})
    prep = prepare.Prepared(conf)
    prep.ease_table(0)
    prep.ease_table(1, neighbors=5)
    prep.ease_table(2, neighbors=5)
    assert len(calls) == 1
    np.testing.assert_array_equal(prep.pretrained_embeddings(), real(conf, prep.data.items))


def test_short_history_cf_tables_need_an_ease_cf_part_and_ascending_lengths(toy_data, enc):
    from genre_edge.errors import ConfigError

    with pytest.raises(ConfigError, match="short_history = 3 needs cf.kind = 'ease'"):
        tiny_config(toy_data, enc, cf={"kind": "mf", "short_history": 3})
    for bad in ([3, 1], [2, 2], [0], -1, 1001):
        with pytest.raises(ConfigError, match="cf.short_history: .* is not valid; give a history length 1-1000"):
            tiny_config(toy_data, enc, cf={"kind": "ease", "short_history": bad})
    assert tiny_config(toy_data, enc, cf={"kind": "ease", "short_history": 2}).cf.short_tiers == (2,)
    with pytest.raises(ConfigError, match="short_scale"):
        tiny_config(toy_data, enc, cf={"kind": "ease", "short_history": 3, "short_scale": "big"})


def test_cf_negatives_are_each_users_best_cf_items_never_a_positive(tmp_path, toy_data, enc):
    """``train.cf_negatives``: each example's own hard negatives come from its user's pool, the warm items the CF
    part ranks highest from the user's training history, never an item the user liked in training."""
    import numpy as np
    import torch

    from genre_edge_export.scoring import pad
    from genre_edge_export.train import train
    from genre_edge_export.trainer import Trainer

    conf = tiny_config(toy_data, enc, train={"cf_negatives": 5, "cf_negative_pool": 8})
    t = Trainer(conf, tmp_path / "t", progress=False)
    pool, ok = t.cf_pool()
    warm = set(t.prep.warm_pool.tolist())
    assert pool.shape == (len(t.prep.hist), 8)
    for u, h in enumerate(t.prep.hist):
        if not len(h):
            continue
        ids, m = map(torch.as_tensor, pad([h]))
        with torch.no_grad():
            s = t.rec.cf.scores(ids, m, None)[0].numpy()
        mine = pool[u][ok[u]]
        rest = np.array(sorted(warm - set(h.tolist()) - set(mine.tolist())), np.int64)
        assert not set(mine.tolist()) & set(h.tolist()) and set(mine.tolist()) <= warm
        assert len(mine) == min(8, len(warm - set(h.tolist())))
        if len(rest):  # the pool is the top of the user's CF ranking (ties at its edge either way)
            assert s[mine].min() >= s[rest].max() - 1e-6
    users = np.arange(len(t.prep.hist))
    neg, neg_ok = t.cf_negatives(users)
    assert neg.shape == neg_ok.shape == (len(users), 5)
    for u in users:
        assert set(neg[u][neg_ok[u]].tolist()) <= set(pool[u][ok[u]].tolist())

    # a pool as large as the warm catalog: the slots a user's own positives would fill are switched off
    big = Trainer(tiny_config(toy_data, enc, train={"cf_negatives": 5, "cf_negative_pool": 100000}),
                  tmp_path / "big", progress=False)
    bpool, bok = big.cf_pool()
    assert bpool.shape[1] == len(warm)
    assert [int(r.sum()) for r in bok] == [len(warm - set(h.tolist())) for h in big.prep.hist]

    rep = train(conf, tmp_path / "m", progress=False)
    assert rep["cf_negatives"] == {"per_positive": 5, "pool": 8}
    assert np.isfinite(rep["history"][0]["train_loss"]) and rep["history"][0]["train_loss"] > 0


def test_negatives_at_least_the_warm_catalog_score_every_warm_item_once(tmp_path, toy_data, enc):
    """``train.negatives`` >= the number of warm items: a full softmax, each warm item once (sampling with
    replacement would put duplicate rows in the softmax); below it, draws from the warm items; the step trains."""
    import numpy as np
    import torch

    from genre_edge_export.train import train
    from genre_edge_export.trainer import SeenPairs, Trainer

    small = Trainer(tiny_config(toy_data, enc), tmp_path / "s", progress=False)
    warm = small.prep.warm_pool
    assert 16 < len(warm)  # the tiny config's 16 are a sample
    negs = small.shared_negatives()
    assert len(negs) == 16 and set(negs.tolist()) <= set(warm.tolist())
    assert not np.array_equal(small.shared_negatives(), negs)  # a new draw per batch

    conf = tiny_config(toy_data, enc, train={"negatives": len(warm)})
    full = Trainer(conf, tmp_path / "f", progress=False)
    assert np.array_equal(full.shared_negatives(), warm) and len(np.unique(warm)) == len(warm)
    assert not small.full_softmax and full.full_softmax
    # the logged validation loss is the training loss's softmax: a full one here (chunked: the same number), and
    # the same model's loss over every warm item is above its loss over a 16-item sample
    for t in (small, full):
        t._bottom_cache()
        t.E = t.table(t.all_embeddings())
    assert all(torch.equal(a.to_dense(), b.to_dense())
               for a, b in zip(small.rec.state_dict().values(), full.rec.state_dict().values()))
    assert full._valid_loss(chunk=7) == pytest.approx(full._valid_loss(), rel=1e-5)
    assert full._valid_loss() > small._valid_loss() + 0.5
    # as in training, the user's training items among the negatives are switched off: left in, the loss rises
    masked = full._valid_loss()
    full._seen = SeenPairs([np.zeros(0, np.int64)] * len(full.prep.hist), full.prep.data.n_items)
    assert full._valid_loss() > masked + 0.1
    rep = train(tiny_config(toy_data, enc, train={"negatives": 100000}), tmp_path / "m", progress=False)
    assert rep["shared_negatives"] == {"per_batch": len(warm), "full_softmax": True}
    assert np.isfinite(rep["history"][0]["train_loss"]) and rep["history"][0]["train_loss"] > 0


@pytest.mark.parametrize("kind", ["mf", "none"])
def test_cf_negatives_need_a_fitted_neighbour_table(toy_data, enc, kind):
    from genre_edge.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train.cf_negatives needs cf.kind = 'ease' or 'cooccurrence'.*"
                                          + repr(kind)):
        tiny_config(toy_data, enc, cf={"kind": kind}, train={"cf_negatives": 4})


def test_quickstart_reads_the_configs_own_data_and_says_when_there_is_no_cold_figure(toy_data, enc, capsys):
    """`genre quickstart --config my.toml` once fetched MovieLens in step 1 and took step 5's example user
    from it, whatever the config's data; a split without cold items printed a cold nDCG@10 of 0."""
    from genre_edge_export.quickstart import _data
    from genre_edge_export.reports import teacher_summary

    conf = tiny_config(toy_data, enc)
    ds = _data(conf, None)
    err = capsys.readouterr().err
    assert f"1/6 data: {toy_data}" in err and "MovieLens" not in err
    assert ds.n_items == 48 and f"{ds.n_users} users, 48 items" in err
    no_cold = {"test": {"ndcg@10": 0.1, "recall@20": 0.2}, "cold": {"users": 0}}
    text = teacher_summary({"name": "x", "train_seconds": 1, "best_epoch": 1, "zero_shot": no_cold, "teacher": no_cold})
    assert "0.0000" not in text and "no cold-test items" in text
    cold = {"test": {"ndcg@10": 0.1, "recall@20": 0.2}, "cold": {"users": 3, "ndcg@10": 0.25}}
    assert "0.2500" in teacher_summary({"name": "x", "train_seconds": 1, "best_epoch": 1, "zero_shot": cold,
                                        "teacher": cold})
    assert "below the untrained encoder" not in text and "did not beat" not in text  # ties: nothing said
    # a teacher below the untrained encoder is said, per column
    worse = {"test": {"ndcg@10": 0.05, "recall@20": 0.2}, "cold": {"users": 3, "ndcg@10": 0.1}}
    text = teacher_summary({"name": "x", "train_seconds": 1, "best_epoch": 1, "zero_shot": cold, "teacher": worse})
    assert "(cold: the trained teacher ranks this split's new items below the untrained encoder" in text
    assert "(warm: training did not beat the untrained encoder on this data" in text
    text = teacher_summary({"name": "x", "train_seconds": 1, "best_epoch": 1, "zero_shot": worse, "teacher": cold})
    assert "below the untrained" not in text and "did not beat" not in text


def test_template_fields_are_the_items_own_or_the_datas_text_columns(tmp_path):
    """A template may name any text column of its data ({body} was refused: only a fixed list of names was
    valid); a field the data lacks is named with what it has (it rendered as empty for every item, silently);
    {category} and {subcategory} come from the categories as on the device (they were empty in training)."""
    import numpy as np
    from genre_edge.catalog import ItemInput, item_text
    from genre_edge.errors import ConfigError
    from genre_edge_export.data.schema import Items
    from genre_edge_export.text import item_texts

    items = Items(["a", "b"], ["Alpha", "Beta"], [("Rock", "Indie"), ()], np.array([1999, 0]),
                  {"body": ["loud guitars", ""]})
    assert item_texts(items, "{title} ({year}). {category}, {subcategory}. {body}") == [
        "Alpha (1999). Rock, Indie. loud guitars", "Beta."]
    with pytest.raises(ConfigError, match=r"\{desc\} is not a field of the data; its fields: id, title, year, genres, "
                                          r"categories, category, subcategory, and its text columns \(\[items\] text\): body"):
        item_texts(items, "{title}. {desc}")
    # on the device a new item's one text fills every text-column field, as training's columns did
    new = ItemInput("c", "Gamma", ("Jazz",), 2001, "smooth horns").validate()
    assert item_text("{title} ({year}). {category}, {subcategory}. {body}", new) == "Gamma (2001). Jazz, smooth horns"
    assert item_text("{title}. {keywords}", new) == "Gamma. smooth horns"  # {keywords} was left empty


def test_quickstart_instructions_are_in_the_data_sets_own_terms():
    """Step 5's instructions: a film catalog gets the README's; another one instructions naming its own most
    common categories and decade, which the device's parser (built from those categories) turns into filters."""
    from types import SimpleNamespace

    import numpy as np
    from genre_edge.query_parser import QueryParser
    from genre_edge_export.quickstart import MOVIE_INSTRUCTIONS, _instructions

    from genre_edge_export.data.schema import Items

    def ds(cats, years):
        ids = [f"i{k}" for k in range(len(cats))]
        return SimpleNamespace(items=Items(ids, ids, list(cats), np.array(years), {}))

    films = ds([("Comedy", "Romance"), ("Drama",), ("Action",)], [1985, 1990, 0])
    assert _instructions(films) == MOVIE_INSTRUCTIONS
    cats = [("hip hop", "Pop"), ("Pop",), ("Pop", "Folk"), ("Folk",), ("hip hop",), ("Pop", "Jazz")]
    music = ds(cats, [1994, 1991, 2012, 0, 1999, 1975])
    got = _instructions(music)
    assert got == ("something pop from the 90s", "folk, no hip hop")  # hip hop and Folk tie: by name
    parser = QueryParser.for_categories(["hip hop", "Pop", "Folk", "Jazz"], years=(1975, 2012))
    first, second = (parser.parse(q) for q in got)
    assert first.include_categories + first.require_categories == ("Pop",) and (first.year_min, first.year_max) == (1990, 1999)
    assert second.include_categories + second.require_categories == ("Folk",)
    assert second.exclude_categories == ("hip hop",)
    assert _instructions(ds(cats, [2003, 2005, 0, 0, 0, 0]))[0] == "something pop from the 2000s"
    assert _instructions(ds([()] * 3, [1994, 1995, 0])) == ("something from the 90s",)
    assert _instructions(ds([("A",), ("B",)], [0, 0])) == ("something a",)
    assert _instructions(ds([()] * 2, [0, 0])) == ()
    assert _instructions(ds(cats, [0] * 6)) == ("something pop", "folk, no hip hop")  # news: categories, no years


def test_texts_batched_by_length_give_each_text_what_one_padded_batch_gives(enc, monkeypatch):
    """models.by_length (inference over many texts, and distillation's CPU training step) sorts texts by length and
    cuts each part to its longest text: every row as in one padded forward, in the input's order, gradients too."""
    import numpy as np
    import torch

    from genre_edge_export import distill as D
    from genre_edge_export.models import ItemTower, by_length, load_hf_encoder

    torch.manual_seed(0)
    tower = ItemTower(load_hf_encoder(enc), "mean", 0, True)
    torch.nn.init.normal_(tower.adapter.weight, std=0.1)
    tower.eval()  # no dropout: the two ways must agree exactly up to rounding
    rng = np.random.default_rng(0)
    n, width = 23, 12
    lengths = rng.integers(1, width + 1, n)
    lengths[3] = width
    ids = rng.integers(100, 2000, (n, width))
    mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
    ids = ids * mask
    widths = []

    def fn(i, m):
        widths.append(i.shape[1])
        assert int(m.sum(1).max()) == i.shape[1]  # each part cut to its longest text
        return tower(i, m)

    with torch.no_grad():
        ref = tower(torch.as_tensor(ids), torch.as_tensor(mask))
    got = by_length(fn, ids, mask, batch=5)
    assert not got.requires_grad and len(widths) == 5 and min(widths) < width
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    # a distillation step split into parts: the same loss and gradients as the batch whole
    conf = D.DistillConfig(layers=(0, 1), kl_weight=1.0, request_kl_weight=2.0)
    items = np.where(rng.random(n) < 0.3, -1, rng.integers(0, 30, n))
    target = torch.nn.functional.normalize(torch.randn(n, tower.dim), dim=-1)
    U, E_t = torch.randn(10, tower.dim), torch.nn.functional.normalize(torch.randn(30, tower.dim), dim=-1)
    out = []
    for part in (4, n):
        monkeypatch.setattr(D, "STEP_PART", part)
        tower.zero_grad()
        loss = D.batch_loss(torch, conf, tower, ids, mask, target, items, U, E_t, 20.0, np.arange(6))
        loss.backward()
        out.append((loss.detach(), [p.grad.clone() for p in tower.parameters() if p.grad is not None]))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-5, atol=1e-6)
    assert len(out[0][1]) == len(out[1][1]) > 0
    for a, b in zip(out[0][1], out[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # rounding here: 16% of rtol 1e-4 + atol 1e-6


def test_fine_tuned_top_layers_by_length_give_what_the_whole_tower_gives(toy_data, enc, tmp_path, monkeypatch):
    """With trainable encoder layers, the trainer caches the frozen layers' hidden states (computed by length, zeros
    past each text) and runs the top layers on parts of similar length: each item's embedding is the whole tower's
    on its padded tokens, and a loss over them has the same gradients whatever the part size."""
    import numpy as np
    import torch

    from genre_edge_export import trainer as T
    from genre_edge_export.trainer import Trainer

    # room for every toy text's tokens, so their lengths differ
    t = Trainer(tiny_config(toy_data, enc, encoder={"max_tokens": 64}), tmp_path / "t", progress=False)
    assert t.tower.n_top == 1
    torch.nn.init.normal_(t.tower.adapter.weight, std=0.1)
    t._bottom_cache()
    lengths = t.mask_all.sum(1)
    assert len(set(lengths.tolist())) > 2 and t.bottom.shape[1] == t.ids_all.shape[1]
    # the cache is zero past each text's end
    pad_cells = ~t.mask_all.astype(bool)
    assert pad_cells.any() and float(t.bottom[torch.as_tensor(pad_cells)].abs().max()) == 0.0
    t.tower.eval()  # no dropout: the ways must agree up to rounding
    with torch.no_grad():
        ref = t.tower(torch.as_tensor(t.ids), torch.as_tensor(t.mask))
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(t.ids))[:40]
    idx[:3] = idx[0]  # an item asked for more than once
    got = t.encode(idx, False)
    assert not got.requires_grad
    torch.testing.assert_close(got, ref[torch.as_tensor(idx)], rtol=0, atol=1e-5)
    w = torch.randn(len(idx), t.tower.dim)
    grads = []
    for part in (3, 1000):
        monkeypatch.setattr(T, "TOP_PART", part)
        t.tower.zero_grad()
        e = t.encode(idx, True)
        torch.testing.assert_close(e.detach(), ref[torch.as_tensor(idx)], rtol=0, atol=1e-5)
        (e * w).sum().backward()
        grads.append([p.grad.clone() for p in t.tower.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 2  # the top layer's weights and the adapter
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
