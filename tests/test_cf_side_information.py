"""Collective EASE: item similarity (the pretrained encoder's, or the items' categories) joins EASE's Gram
matrix, in the ease-categories baseline and in the hybrid's CF part (cf.side_information)."""
import numpy as np
import pytest

from genre_edge.errors import ConfigError
from genre_edge_export.data import load_dataset
from genre_edge_export.split import SplitConfig, make_split


def test_side_information_is_the_same_as_item_features_appended_as_rows_of_the_interaction_matrix():
    from genre_edge_export.baselines import ease_weights, side_similarity

    rng = np.random.default_rng(0)
    X = (rng.random((40, 12)) < 0.3).astype(np.float32)
    F = rng.standard_normal((12, 5))
    S = side_similarity(F)
    assert np.allclose(np.diag(S), 1.0) and np.allclose(S, S.T)
    Fn = F / np.linalg.norm(F, axis=1, keepdims=True)
    stacked = np.vstack([X, np.sqrt(7.0) * Fn.T]).astype(np.float64)
    assert np.allclose(ease_weights(X, 20.0, S, 7.0), ease_weights(stacked, 20.0), atol=1e-5)
    # weight 0 or no side information: plain EASE
    assert np.allclose(ease_weights(X, 20.0, S, 0.0), ease_weights(X, 20.0))
    assert np.allclose(ease_weights(X, 20.0, None, 7.0), ease_weights(X, 20.0))


def test_items_alike_by_content_vote_for_each_other_though_no_user_rated_both():
    from genre_edge_export.baselines import ease_weights, side_similarity

    # items 0 and 1 are never rated by the same user; by content they are twins (2 and 3 are unlike them)
    X = np.zeros((20, 4), np.float32)
    X[:10, 0] = X[10:, 1] = 1
    X[::2, 2] = X[1::3, 3] = 1
    F = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    plain, side = ease_weights(X, 5.0), ease_weights(X, 5.0, side_similarity(F), 10.0)
    assert side[0, 1] > 0.2 and side[1, 0] > 0.2
    assert side[0, 1] > plain[0, 1] + 0.2


def test_an_item_without_features_gets_no_side_similarity():
    from genre_edge_export.baselines import side_similarity

    F = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    S = side_similarity(F)
    assert np.all(S[1] == 0) and np.all(S[:, 1] == 0) and np.isfinite(S).all()


def test_choose_ease_searches_lambda_and_weight_on_validation_and_keeps_plain_ease_on_ties(toy_data):
    from genre_edge_export.baselines import RECENCY_GRID, choose_ease, interaction_matrix, side_similarity
    from genre_edge_export.evaluate import category_features

    ds = load_dataset(toy_data)
    split = make_split(ds, SplitConfig(cold_quantile=0.6))
    X = interaction_matrix(split)
    S = side_similarity(category_features(ds.items.categories))
    lam, w, rows, _ = choose_ease(split, X, (10.0, 100.0), S, (0.0, 3.0, 30.0))
    stated = [r for r in rows if not r.get("extended")]
    assert [(r["lambda"], r["side_weight"]) for r in stated] == [(a, b) for a in (10.0, 100.0) for b in (0.0, 3.0, 30.0)]
    assert {(r["half_life"], r["floor"]) for r in rows} <= {(0.0, 1.0)} | set(RECENCY_GRID)
    best = max(r["valid_ndcg@10"] for r in rows)
    chosen = [r for r in rows if (r["lambda"], r["side_weight"]) == (lam, w)][0]
    assert chosen["valid_ndcg@10"] == best
    # among equals the smaller weight (closer to plain EASE): identical similarity at weight 0 ties everywhere
    lam0, w0, rows0, _ = choose_ease(split, X, (10.0,), np.zeros_like(S), (0.0, 3.0, 30.0))
    assert w0 == 0.0 and len({round(r["valid_ndcg@10"], 12) for r in rows0}) == 1


def test_ease_categories_baseline_is_tuned_with_the_categories_and_refused_without_them(toy_data):
    from genre_edge_export.baselines import GRIDS, SIDE_WEIGHTS, interaction_matrix, run_baselines, tune
    from genre_edge_export.evaluate import category_features

    ds = load_dataset(toy_data)
    split = make_split(ds, SplitConfig(cold_quantile=0.6))
    feats = category_features(ds.items.categories)
    (r,) = run_baselines(split, ("ease-categories",), item_features=feats)
    assert {"lam", "half_life", "floor", "side_weight"} <= set(r.params)
    stated = [g for g in r.grid if not g.get("extended")]
    assert len(stated) == len(GRIDS["ease-categories"]) and {g["side_weight"] for g in stated} == set(SIDE_WEIGHTS)
    assert max(g["valid_ndcg@10"] for g in r.grid) == pytest.approx(r.valid["ndcg@10"])
    # its grid holds ease-recency's (side weight 0): on validation it is never below that baseline
    (er,) = run_baselines(split, ("ease-recency",), item_features=feats)
    assert r.valid["ndcg@10"] >= er.valid["ndcg@10"] - 1e-12
    with pytest.raises(ConfigError, match="needs the items' categories"):
        tune("ease-categories", split, interaction_matrix(split))
    assert run_baselines(split, ("ease-categories",), item_features=np.zeros_like(feats)) == []


def test_cf_config_side_information_and_lambda_are_validated():
    from genre_edge import config as cfgmod
    from genre_edge_export.train_config import Config

    def conf(**cf):
        return cfgmod.from_dict(Config, {"cf": cf}, "t.toml:")

    c = conf(kind="ease", side_information="encoder", ease_lambda="auto", side_weight=30)
    assert c.cf.ease_lambda == "auto" and c.cf.side_weight == 30.0
    assert conf(ease_lambda=100).cf.ease_lambda == 100.0 and conf(side_weight="auto").cf.side_weight == "auto"
    assert conf(side_information="categories", side_weight=0).cf.side_weight == 0.0
    with pytest.raises(ConfigError, match=r"cf.ease_lambda: 'fast' is not valid.*auto"):
        conf(ease_lambda="fast")
    with pytest.raises(ConfigError, match="cf.ease_lambda: -1.0 is below the minimum 0"):
        conf(ease_lambda=-1)
    with pytest.raises(ConfigError, match=r"cf.side_weight: '30' is not valid; give a number >= 0 or \"auto\""):
        conf(side_information="encoder", side_weight="30")
    with pytest.raises(ConfigError, match="cf.side_weight: -3.0 is below the minimum 0"):
        conf(side_information="encoder", side_weight=-3)
    with pytest.raises(ConfigError, match=r"cf.side_information: 'genres' is not valid; choose one of: none, encoder"):
        conf(side_information="genres")
    with pytest.raises(ConfigError, match="cf.side_weight = 30.0 weighs side information, and cf.side_information is 'none'"):
        conf(side_weight=30)
    with pytest.raises(ConfigError, match="side_information = 'encoder' needs cf.kind = 'ease'"):
        conf(kind="cooccurrence", side_information="encoder")


@pytest.mark.parametrize("what", ["categories", "encoder"])
def test_the_hybrids_cf_part_reads_side_information_chosen_on_validation_and_leaves_new_items_to_content(
        tmp_path, toy_data, what):
    """Prepared (what training reads): lambda and weight chosen on validation (recorded), the neighbour table
    differs from plain EASE's, and items without training interactions get no CF weights (content ranks them)."""
    pytest.importorskip("torch")
    from conftest import tiny_config, tiny_encoder
    from genre_edge_export.baselines import EASE_LAMBDAS, SIDE_WEIGHTS, grid_edges
    from genre_edge_export.prepare import Prepared

    enc = tiny_encoder(tmp_path / "enc")
    plain = Prepared(tiny_config(toy_data, enc))
    assert plain.cf_ease == {"lambda": 250.0, "side_information": "none", "side_weight": 0.0, "grid": None,
                             "at_edge": []}
    p = Prepared(tiny_config(toy_data, enc, cf={"side_information": what, "ease_lambda": "auto"}))
    e = p.cf_ease
    assert e["side_information"] == what
    assert len([r for r in e["grid"] if not r.get("extended")]) == len(EASE_LAMBDAS) * len(SIDE_WEIGHTS)
    best = max(e["grid"], key=lambda r: r["valid_ndcg@10"])
    assert e["at_edge"] == grid_edges(e["grid"], {"lambda": e["lambda"], "side_weight": e["side_weight"]})
    assert max(r["valid_ndcg@10"] for r in e["grid"] if (r["lambda"], r["side_weight"]) == (e["lambda"], e["side_weight"])) \
        == best["valid_ndcg@10"]
    unrated = np.setdiff1d(np.arange(p.split.n_items), np.concatenate(p.hist))
    assert len(unrated) > 0
    idx, w = p.cf_table
    assert not np.any(w[unrated] != 0)  # they vote for no one ...
    assert not np.any((w != 0) & np.isin(idx, unrated))  # ... and no one votes for them
    fixed = Prepared(tiny_config(toy_data, enc, cf={"side_information": what, "side_weight": 300}))
    assert fixed.cf_ease["side_weight"] == 300.0 and fixed.cf_ease["grid"] is None
    dense = np.zeros((p.split.n_items,) * 2)
    np.put_along_axis(dense, fixed.cf_table[0].astype(np.int64), fixed.cf_table[1], 1)
    dense0 = np.zeros_like(dense)
    np.put_along_axis(dense0, plain.cf_table[0].astype(np.int64), plain.cf_table[1], 1)
    assert not np.allclose(dense, dense0, atol=1e-4)


def test_side_information_categories_on_items_without_categories_is_refused(tmp_path):
    pytest.importorskip("torch")
    from conftest import tiny_config, tiny_encoder, write_generic
    from genre_edge_export.prepare import Prepared

    data = write_generic(tmp_path / "d")
    (data.parent / "data.toml").write_text(data.read_text().replace('categories = "genres"\n', ""))
    enc = tiny_encoder(tmp_path / "enc")
    with pytest.raises(ConfigError, match="cf.side_information = 'categories': the items of .* have no categories"):
        Prepared(tiny_config(data, enc, cf={"side_information": "categories"}))


def test_the_cf_part_is_built_on_first_use_and_once(tmp_path, toy_data, monkeypatch):
    """An A/B replay of trained folders reads Prepared's split only: the CF grid (1-2 minutes on ml-100k) must not run
    then; the first read of cf_table or cf_ease builds both, once, with the same table as a fresh build."""
    pytest.importorskip("torch")
    from conftest import tiny_config, tiny_encoder
    from genre_edge_export import prepare

    conf = tiny_config(toy_data, tiny_encoder(tmp_path / "enc"), cf={"side_information": "categories",
                                                                    "ease_lambda": "auto"})
    calls = []
    real = prepare.choose_ease
    monkeypatch.setattr(prepare, "choose_ease", lambda *a, **k: calls.append(1) or real(*a, **k))
    p = prepare.Prepared(conf)
    assert p.split.n_items > 0 and calls == []  # the split is there, the grid has not run
    info = p.cf_ease
    assert calls == [1] and info["side_information"] == "categories"
    idx, w = p.cf_table
    assert calls == [1] and p.cf_ease is info  # built once
    idx2, w2 = prepare.Prepared(conf).cf_table
    assert np.array_equal(idx, idx2) and np.array_equal(w, w2)


def test_an_ease_cf_part_chosen_for_short_histories_is_searched_on_validation_histories_cut_that_short(tmp_path, toy_data):
    """Prepared.ease_table(n): the same grid as training's CF part, each point scored from each user's last n
    training positives (the grid values are those of choose_ease on the cut histories); 0 is training's own part."""
    pytest.importorskip("torch")
    from conftest import tiny_config, tiny_encoder
    from genre_edge_export.baselines import EASE_LAMBDAS, SIDE_WEIGHTS, choose_ease, interaction_matrix
    from genre_edge_export.prepare import Prepared

    p = Prepared(tiny_config(toy_data, tiny_encoder(tmp_path / "enc"), cf={"side_information": "categories",
                                                                           "ease_lambda": "auto"}))
    (idx0, w0), info0 = p.ease_table()
    assert np.array_equal(idx0, p.cf_table[0]) and np.array_equal(w0, p.cf_table[1]) and info0 == p.cf_ease
    (idx1, w1), info1 = p.ease_table(1)
    X = interaction_matrix(p.split, p.hist)
    lam, weight, grid, _ = choose_ease(p.split, X, EASE_LAMBDAS, p._side_similarity(X), SIDE_WEIGHTS, history_last=1)
    assert (info1["lambda"], info1["side_weight"]) == (lam, weight) and info1["grid"] == grid
    assert [r["valid_ndcg@10"] for r in info1["grid"]] != [r["valid_ndcg@10"] for r in info0["grid"]]
    with pytest.raises(ConfigError, match="only an EASE CF part"):
        Prepared(tiny_config(toy_data, tiny_encoder(tmp_path / "enc2"), cf={"kind": "cooccurrence"})).ease_table(1)
