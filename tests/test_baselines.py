import numpy as np
import pytest

from genre_edge_export.data import load_dataset
from genre_edge_export.split import SplitConfig, make_split


def test_ease_closed_form_and_baselines_beat_random(toy_data):
    from genre_edge_export.baselines import ease_weights, run_baselines

    X = (np.random.default_rng(0).random((30, 8)) < 0.4).astype(np.float32)
    B = ease_weights(X, 10.0)
    assert np.allclose(np.diag(B), 0)
    # EASE optimality: (G + lam I) B = G off the diagonal constraint -> check against a direct solve
    G = X.T @ X + 10.0 * np.eye(8)
    P = np.linalg.inv(G)
    assert np.allclose(B, (np.eye(8) - P / np.diag(P)) * (1 - np.eye(8)), atol=1e-5)
    ds = load_dataset(toy_data)
    split = make_split(ds, SplitConfig(cold_quantile=0.6))
    res = {r.name: r for r in run_baselines(split, ("popularity", "item-knn", "ease"))}
    assert res["ease"].warm["ndcg@10"] > res["popularity"].warm["ndcg@10"]
    assert res["item-knn"].warm["recall@20"] > 0
    # cold items: CF baselines have nothing to go on
    assert res["ease"].cold["auc_sampled"] == pytest.approx(0.5)


def test_als_baseline_runs(toy_data):
    pytest.importorskip("implicit")
    from genre_edge_export.baselines import run_baselines

    split = make_split(load_dataset(toy_data), SplitConfig(cold_quantile=0.6))
    (r,) = run_baselines(split, ("als",))
    assert 0 <= r.warm["ndcg@10"] <= 1


def test_baselines_are_tuned_on_validation_and_report_their_choice(toy_data):
    from genre_edge_export.baselines import EASE, recency_weights, run_baselines, tune
    from genre_edge_export.baselines import interaction_matrix

    split = make_split(load_dataset(toy_data), SplitConfig(cold_quantile=0.6))
    X = interaction_matrix(split)
    grid = [{"lam": 1.0}, {"lam": 30.0}, {"lam": 3000.0}]
    model, params, rows = tune("ease", split, X, grid)
    assert [r["lam"] for r in rows] == [1.0, 30.0, 3000.0]
    assert params == grid[int(np.argmax([r["valid_ndcg@10"] for r in rows]))] and model.lam == params["lam"]
    (r,) = run_baselines(split, ("ease-recency",))
    assert {"lam", "half_life", "floor"} <= set(r.params) and len(r.grid) == 24
    assert max(g["valid_ndcg@10"] for g in r.grid) == pytest.approx(r.valid["ndcg@10"])
    # the hybrid's recency weighting: the last item counts 1, one half-life back floor + (1 - floor) / 2
    w = recency_weights(10.0, 0.2)(11)
    assert w[-1] == pytest.approx(1.0) and w[0] == pytest.approx(0.2 + 0.8 * 0.5)
    # floor 1 = no weighting: the same scores as plain EASE
    hist = split.histories("test")
    us = np.arange(5)
    plain = EASE(250.0).fit(X).score(us, hist)
    assert np.allclose(EASE(250.0, half_life=10.0, floor=1.0).fit(X).score(us, hist), plain)
    assert not np.allclose(EASE(250.0, half_life=2.0, floor=0.0).fit(X).score(us, hist), plain)


def test_the_hybrid_calibration_searches_the_recency_grid_of_the_ease_recency_baseline(tiny_bundle):
    """Same (half-life, floor) pairs for the hybrid's CF part as for the baseline (plus no recency); the
    chosen pair is the best on validation and travels into the bundle the device reads."""
    import json

    from genre_edge_export.baselines import GRIDS, RECENCY_GRID

    cal = json.loads((tiny_bundle / "teacher" / "report.json").read_text())["calibration"]
    pairs = [(r["half_life"], r["floor"]) for r in cal["recency_grid"]]
    assert pairs[0][0] == 0.0 and pairs[1:] == list(RECENCY_GRID)
    assert {(g["half_life"], g["floor"]) for g in GRIDS["ease-recency"]} == set(RECENCY_GRID)
    best = max(cal["recency_grid"], key=lambda r: r["valid_ndcg@10"])
    assert (cal["recency_half_life"], cal["recency_floor"]) == (best["half_life"], pytest.approx(best["floor"]))
    cf = json.loads((tiny_bundle / "bundle" / "manifest.json").read_text())["catalog"]["cf"]
    assert cf["recency_half_life"] == best["half_life"] and cf["recency_floor"] == pytest.approx(best["floor"])


def test_max_eval_users_scores_a_fixed_sample_of_users(toy_data):
    """train.max_eval_users: evaluation on a fixed random sample (large data sets); the same sample on
    every call, and the full set when it asks for more users than there are."""
    from genre_edge_export.evaluate import evaluate, sample_users

    split = make_split(load_dataset(toy_data), SplitConfig(cold_quantile=0.6))
    seen = []

    def score(users):
        seen.append(np.asarray(users).copy())
        return np.random.default_rng(len(seen)).random((len(users), split.n_items))

    full = evaluate(score, split, "valid")
    n = full["users"]
    assert n > 6
    part = evaluate(score, split, "valid", max_users=5)
    assert part["users"] == 5 and len(np.concatenate(seen[-1:])) == 5
    first = seen[-1]
    evaluate(score, split, "valid", max_users=5)
    assert np.array_equal(seen[-1], first)  # the same users every time
    assert evaluate(score, split, "valid", max_users=n + 10)["users"] == n
    users = np.arange(100)
    assert np.array_equal(sample_users(users, 0), users) and len(set(sample_users(users, 7).tolist())) == 7


def test_report_says_when_a_split_has_no_cold_items():
    """A split without cold items printed a table of empty rows with 0 users."""
    from genre_edge_export.reports import comparison_markdown

    split = {"kind": "cold_item", "train": {"events": 10}, "test": {"positives": 3, "users": 2}, "cold_items": 0,
             "cold_test": {"positives": 0}}
    rows = [{"model": "ease", "warm": {"ndcg@10": 0.1, "users": 2}, "cold": {"users": 0}}]
    md = comparison_markdown("t", rows, split)
    assert "No cold-test items in this split" in md and "| ease | 0.1" in md.replace("0.1000", "0.1")
