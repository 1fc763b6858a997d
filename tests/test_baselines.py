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
    from genre_edge_export.baselines import EASE, EASE_LAMBDAS, RECENCY_GRID, recency_weights, run_baselines, tune
    from genre_edge_export.baselines import interaction_matrix

    split = make_split(load_dataset(toy_data), SplitConfig(cold_quantile=0.6))
    X = interaction_matrix(split)
    grid = [{"lam": 1.0}, {"lam": 30.0}, {"lam": 3000.0}]
    model, params, rows = tune("ease", split, X, grid)
    assert [r["lam"] for r in rows] == [1.0, 30.0, 3000.0]
    assert params == grid[int(np.argmax([r["valid_ndcg@10"] for r in rows]))] and model.lam == params["lam"]
    (r,) = run_baselines(split, ("ease-recency",))
    assert {"lam", "half_life", "floor"} <= set(r.params)
    assert len([g for g in r.grid if not g.get("extended")]) == len(EASE_LAMBDAS) * len(RECENCY_GRID)
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


def test_baselines_for_short_histories_are_tuned_on_validation_histories_cut_the_same_way(toy_data):
    from genre_edge_export.baselines import EASE, interaction_matrix, scores_for, tune
    from genre_edge_export.evaluate import evaluate

    split = make_split(load_dataset(toy_data), SplitConfig(cold_quantile=0.6))
    X = interaction_matrix(split)
    grid = [{"lam": 1.0}, {"lam": 300.0}]
    _, _, whole = tune("ease", split, X, grid)
    _, params, cut = tune("ease", split, X, grid, history_last=1)
    for g, row in zip(grid, cut):  # each grid point scored from each user's last training positive only
        model = EASE(**g).fit(X)
        expect = evaluate(scores_for(model, split.histories("valid", last=1)), split, "valid", n_neg=1)["ndcg@10"]
        assert row["valid_ndcg@10"] == pytest.approx(expect)
    assert [r["valid_ndcg@10"] for r in cut] != [r["valid_ndcg@10"] for r in whole]
    assert params == grid[int(np.argmax([r["valid_ndcg@10"] for r in cut]))]


def test_the_cf_grid_on_cut_histories_skips_recency_settings_that_weigh_them_alike(toy_data, monkeypatch):
    """choose_ease on histories cut to T items evaluates each distinct weighting of up to T items once: cut to one
    item, no recency alone (every setting weighs it 1); the choice and every row as with the whole grid."""
    from genre_edge_export import baselines as bl

    assert [(h, f) for h, f, _ in bl.distinct_recency(0)] == [(0.0, 1.0), *bl.RECENCY_GRID]
    assert [(h, f) for h, f, _ in bl.distinct_recency(1)] == [(0.0, 1.0)]
    for T in (1, 2, 3):
        kept = bl.distinct_recency(T)
        vec = lambda rw: np.concatenate([np.ones(n) if rw is None else rw(n) for n in range(1, T + 1)])  # noqa: E731
        assert len({vec(rw).tobytes() for _, _, rw in kept}) == len(kept)  # the kept ones differ pairwise
        for h, f in bl.RECENCY_GRID:  # and each one dropped weighs up to T items as a kept one does
            assert any(np.array_equal(vec(bl.recency_weights(h, f)), vec(rw)) for _, _, rw in kept)
    split = make_split(load_dataset(toy_data), SplitConfig(cold_quantile=0.6))
    X = bl.interaction_matrix(split)
    got = bl.choose_ease(split, X, (1.0, 300.0), None, (0.0,), history_last=1)
    monkeypatch.setattr(bl, "distinct_recency", lambda T=0: [(h, f, bl.recency_weights(h, f) if h > 0 else None)
                                                            for h, f in ((0.0, 1.0),) + bl.RECENCY_GRID])
    full = bl.choose_ease(split, X, (1.0, 300.0), None, (0.0,), history_last=1)
    assert got[:3] == full[:3] and np.array_equal(got[3], full[3])


def test_the_hybrid_calibration_searches_the_recency_grid_of_the_ease_recency_baseline(tiny_bundle):
    """Same (half-life, floor) pairs for the hybrid's CF part as for the baseline (plus no recency); the
    chosen pair is the best on validation and travels into the bundle the device reads."""
    import json

    from genre_edge_export.baselines import GRIDS, RECENCY_GRID, grid_edges

    cal = json.loads((tiny_bundle / "teacher" / "report.json").read_text())["calibration"]
    pairs = [(r["half_life"], r["floor"]) for r in cal["recency_grid"] if not r.get("extended")]
    assert pairs[0][0] == 0.0 and pairs[1:] == list(RECENCY_GRID)
    assert {(g["half_life"], g["floor"]) for g in GRIDS["ease-recency"]} == set(RECENCY_GRID)
    best = max(cal["recency_grid"], key=lambda r: r["valid_ndcg@10"])
    assert (cal["recency_half_life"], cal["recency_floor"]) == (best["half_life"], pytest.approx(best["floor"]))
    on = [r for r in cal["recency_grid"] if r["half_life"] > 0]
    assert cal["recency_at_edge"] == (grid_edges(on, {k: best[k] for k in ("half_life", "floor")})
                                      if best["half_life"] > 0 else [])
    cf = json.loads((tiny_bundle / "bundle" / "manifest.json").read_text())["catalog"]["cf"]
    assert cf["recency_half_life"] == best["half_life"] and cf["recency_floor"] == pytest.approx(best["floor"])


def test_grid_edges_flag_choices_a_wider_grid_could_beat():
    """A chosen value at the lowest or highest searched value of a parameter is flagged (the baseline may not be
    tuned), except 0 where 0 means off; a parameter searched at one value, or a non-number, is not an edge; the
    recency grid is a product of its axes, so each axis has neighbours on both sides of an interior choice."""
    from genre_edge_export.baselines import GRIDS, RECENCY_GRID, grid_edges

    rows = [{"lam": lam, "floor": f, "kind": "x"} for lam in (10.0, 100.0, 1000.0) for f in (0.0, 0.1, 0.3)]
    assert grid_edges(rows, {"lam": 100.0, "floor": 0.1, "kind": "x"}) == []
    assert grid_edges(rows, {"lam": 10.0, "floor": 0.3}) == ["lam=10 (lowest searched)", "floor=0.3 (highest searched)"]
    assert grid_edges(rows, {"lam": 1000.0, "floor": 0.0}) == ["lam=1000 (highest searched)"]  # floor 0: off
    assert grid_edges([{"k": 5, "a": 1.0}, {"k": 5, "a": 2.0}], {"k": 5, "a": 2.0}) == ["a=2 (highest searched)"]
    assert len(RECENCY_GRID) == len({h for h, _ in RECENCY_GRID}) * len({f for _, f in RECENCY_GRID})
    # ml-100k's choices (ease-recency: half-life 5, floor 0.2; ease-categories: 5, 0.1) sit inside every axis
    for chosen in ({"lam": 250.0, "half_life": 5.0, "floor": 0.2}, {"lam": 500.0, "half_life": 5.0, "floor": 0.1}):
        assert grid_edges(GRIDS["ease-recency"], chosen) == []


def test_edge_extensions_step_one_log_step_past_each_edge():
    """One point per edge the choice sits on, a log-step out (the ratio to the next searched value); 0 (off), a
    parameter searched at one value and an inner choice get none; floors stay <= 1, k and factors whole."""
    from genre_edge_export.baselines import edge_extensions

    rows = [{"lam": lam, "floor": f, "k": k} for lam in (100.0, 300.0, 1000.0) for f in (0.0, 0.03, 0.1, 0.3) for k in (50, 100)]
    assert edge_extensions(rows, {"lam": 300.0, "floor": 0.1, "k": 50}) == [{"lam": 300.0, "floor": 0.1, "k": 25}]
    ext = edge_extensions(rows, {"lam": 1000.0, "floor": 0.3, "k": 100})
    assert ext[0] == {"lam": pytest.approx(1000.0 * 1000 / 300), "floor": 0.3, "k": 100}
    assert ext[1] == {"lam": 1000.0, "floor": pytest.approx(0.9), "k": 100} and ext[2] == {"lam": 1000.0, "floor": 0.3, "k": 200}
    assert edge_extensions(rows, {"lam": 100.0, "floor": 0.0, "k": 100})[0]["lam"] == pytest.approx(100 * 100 / 300)
    assert len(edge_extensions(rows, {"lam": 100.0, "floor": 0.0, "k": 100})) == 2  # floor 0 is off, not an edge
    assert edge_extensions([{"floor": 0.5}, {"floor": 0.9}], {"floor": 0.9})[0]["floor"] == 1.0  # bounded
    assert edge_extensions([{"floor": 0.5}, {"floor": 1.0}], {"floor": 1.0}) == []  # at its bound already
    assert edge_extensions([{"a": 2.0}], {"a": 2.0}) == []


def test_tune_follows_a_choice_on_the_grid_edge_until_it_is_inside(monkeypatch):
    """A baseline whose validation optimum lies past its stated grid: tune() extends the edge a log-step at a
    time (at most MAX_EXTENSIONS), marks the points it added, and returns the better value outside the grid;
    with the optimum inside, it adds nothing; a caller's own grid is searched as given."""
    from genre_edge_export import baselines as bl

    class Peaked:
        name = "peaked"

        def __init__(self, x: float = 1.0):
            self.x = x

        def fit(self, X):
            return self

    best_at = {"x": 0.0}
    monkeypatch.setitem(bl.BASELINES, "peaked", Peaked)
    monkeypatch.setitem(bl.GRIDS, "peaked", [{"x": x} for x in (1.0, 3.0, 9.0)])
    monkeypatch.setattr(bl, "scores_for", lambda model, hist, when=None: model)
    monkeypatch.setattr(bl, "evaluate", lambda m, *a, **k: {"ndcg@10": -abs(np.log(m.x / best_at["x"]))})

    class Split:
        def histories(self, which, last=0):
            return []

        def request_times(self, which):
            return None

    best_at["x"] = 81.0  # 9 -> 27 -> 81 -> 243: inside after three steps
    model, params, rows = bl.tune("peaked", Split(), np.zeros((1, 1)))
    assert params == {"x": pytest.approx(81.0)} and model.x == pytest.approx(81.0)
    assert [r["x"] for r in rows if r.get("extended")] == pytest.approx([27.0, 81.0, 243.0])
    assert bl.grid_edges(rows, params) == []
    best_at["x"] = 1e6  # beyond three steps: the last one is chosen, and still reported as an edge
    _, params, rows = bl.tune("peaked", Split(), np.zeros((1, 1)))
    assert params["x"] == pytest.approx(243.0) and len(rows) == 3 + bl.MAX_EXTENSIONS
    assert bl.grid_edges(rows, params) == ["x=243 (highest searched)"]
    best_at["x"] = 3.0
    _, params, rows = bl.tune("peaked", Split(), np.zeros((1, 1)))
    assert params == {"x": 3.0} and len(rows) == 3
    best_at["x"] = 1e6
    _, params, rows = bl.tune("peaked", Split(), np.zeros((1, 1)), grid=[{"x": 1.0}, {"x": 9.0}])
    assert params == {"x": 9.0} and len(rows) == 2


def test_eval_baselines_report_names_extensions_and_choices_on_a_grid_edge(toy_data, tmp_path, monkeypatch):
    """`genre eval baselines`: every row carries its grid-edge flags (the same as grid_edges says); the Markdown
    says how many points went beyond the stated grid and names any edge left next to the chosen values, so a
    baseline chosen on an edge is not reported as tuned."""
    import json

    from click.testing import CliRunner

    from genre_edge.cli import main
    from genre_edge_export import baselines as bl

    def run(out):
        r = CliRunner().invoke(main, ["eval", "baselines", "--data", str(toy_data), "--only", "ease,ease-recency",
                                      "--out", str(out)])
        assert r.exit_code == 0, r.output
        (j,) = out.glob("baselines-*.json")
        rows = json.loads(j.read_text())["results"]
        md = j.with_suffix(".md").read_text()
        assert [x["model"] for x in rows] == ["ease", "ease-recency"]
        lines = {}
        for x in rows:
            assert x["at_edge"] == bl.grid_edges(x["grid"], x["params"])
            lines[x["model"]] = line = next(ln for ln in md.splitlines() if ln.startswith(f"- {x['model']}:"))
            assert ("on the grid's edge" in line) == bool(x["at_edge"]) and all(e in line for e in x["at_edge"])
            n_ext = sum(1 for g in x["grid"] if g.get("extended"))
            assert (f"{n_ext} beyond the stated grid" in line) == (n_ext > 0)
        return {x["model"]: x for x in rows}, lines

    rows, lines = run(tmp_path / "a")
    # the toy log's recency wants shorter half-lives and lower floors than the grid has: searched past them
    assert any(g.get("extended") for g in rows["ease-recency"]["grid"]) and not rows["ease-recency"]["at_edge"]
    monkeypatch.setattr(bl, "MAX_EXTENSIONS", 0)  # no extension: the same choice is reported as an edge
    rows, lines = run(tmp_path / "b")
    assert rows["ease-recency"]["at_edge"] and "on the grid's edge" in lines["ease-recency"]


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
