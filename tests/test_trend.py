"""Trending popularity (export/trend.py), request times, the trending baseline and the calibration's
popularity grid."""
import sys
from pathlib import Path

import numpy as np
import pytest

from genre_edge_export.data import load_dataset
from genre_edge_export.split import SplitConfig, make_split

ROOT = Path(__file__).resolve().parent.parent


def brute(ev_t, ev_i, n, at, hl):
    out = np.zeros((len(at), n))
    for r, t in enumerate(at):
        for te, i in zip(ev_t, ev_i):
            if te < t:  # strictly before: an event at the request time is not known yet
                out[r, i] += 0.5 ** ((t - te) / hl) if hl > 0 else 1.0
    return out


@pytest.mark.parametrize("hl", [0.0, 3.0, 50.0])
def test_trend_rows_equal_the_definition(hl):
    from genre_edge_export.trend import trend_rows

    rng = np.random.default_rng(1)
    ev_t = rng.integers(0, 100, 300).astype(np.float64)  # ties in time on purpose
    ev_i = rng.integers(0, 7, 300)
    at = np.concatenate([rng.integers(-5, 110, 40), ev_t[:5]]).astype(np.float64)  # incl. exactly at events
    got = trend_rows(ev_t, ev_i, 7, at, hl)
    assert got.shape == (45, 7) and got.dtype == np.float32
    np.testing.assert_allclose(got, brute(ev_t, ev_i, 7, at, hl), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="finite"):
        trend_rows(ev_t, ev_i, 7, np.array([np.inf]), hl)


def test_request_times_are_each_users_first_held_out_event(toy_data):
    split = make_split(load_dataset(toy_data), SplitConfig(cold_quantile=0.6))
    for which, inter in (("valid", split.valid), ("test", split.test), ("cold", split.cold_test)):
        t = split.request_times(which)
        assert t.shape == (split.n_users,) and np.all(np.isfinite(t))
        for u in range(split.n_users):
            mine = inter.time[inter.user == u]
            assert t[u] == (mine.min() if len(mine) else split.train.time.max())
    with pytest.raises(ValueError, match="which must be"):
        split.request_times("later")


@pytest.fixture(scope="module")
def news(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from synth_news import make

    out = tmp_path_factory.mktemp("news")
    make(out, users=300, items=400, days=6, sessions_per_user=12, lifetime_h=12, trend=1.5, taste=0.5, seed=0)
    return make_split(load_dataset(out, "mind"), SplitConfig(cold_quantile=0.5, cold_valid_quantile=0.4))


def test_trending_baseline_reads_each_users_request_time(news):
    from genre_edge_export.baselines import Trending, scores_for
    from genre_edge_export.trend import trend_rows

    split = news
    m = Trending(share=0.05).fit(None).fit_events(split)
    hist, when = split.histories("test"), split.request_times("test")
    users = np.flatnonzero(np.bincount(split.test.user, minlength=split.n_users))[:20]
    tr = split.train.take(split.train.label == 1)
    got = scores_for(m, hist, when)(users)
    want = np.log1p(trend_rows(tr.time, tr.item, split.n_items, when[users], m.half_life))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # users who come back at different times get different lists (a static popularity list would not)
    assert len({tuple(np.argsort(-r)[:10]) for r in got}) > 1
    with pytest.raises(ValueError, match="share"):
        Trending(share=0)


def test_trending_beats_static_popularity_where_stories_fade(news):
    """On a news-like log whose clicks follow what is fresh (benchmarks/synth_news.py), the trending
    baseline, tuned on validation, ranks held-out clicks far better than a popularity count over all of
    training; on cold items both are at the exact random level (no events to count)."""
    from genre_edge_export.baselines import GRIDS, run_baselines

    res = {r.name: r for r in run_baselines(news, ("popularity", "trending"))}
    t, p = res["trending"], res["popularity"]
    assert t.warm["ndcg@10"] > 1.5 * p.warm["ndcg@10"]
    assert t.params in GRIDS["trending"] and len(t.grid) == len(GRIDS["trending"])
    assert t.cold["ndcg@10"] == pytest.approx(p.cold["ndcg@10"])


def test_popularity_grid_scales_with_the_cf_scores():
    """The calibration's popularity weights are in units of CF's spread over popularity's: the same grid on
    every data set, and its top step lets popularity outweigh CF (a popularity list, CF breaking ties)."""
    from genre_edge_export.calibrate import POP_STEPS, pop_grid

    rng = np.random.default_rng(0)
    cf, pop = rng.normal(size=(20, 30)), rng.random((1, 30))
    g = pop_grid(cf, pop, fine=True)
    assert g[0] == 0.0 and len(g) == len(POP_STEPS) + 1
    assert pop_grid(100 * cf, pop, True) == pytest.approx(tuple(100 * x for x in g))
    assert np.std(g[-1] * pop) == pytest.approx(POP_STEPS[-1] * np.std(cf))
    assert len(pop_grid(cf, pop, fine=False)) < len(g)
    assert pop_grid(np.zeros((2, 3)), pop, True)[1:] == pytest.approx(POP_STEPS)  # no CF spread: unit 1


def test_ab_baseline_arm_passes_request_times(news):
    from genre_edge_export.ab import Arm
    from genre_edge_export.baselines import Trending, scores_for

    hist, when = news.histories("test"), news.request_times("test")
    ids = [str(i) for i in range(news.n_items)]
    arm = Arm("baseline:trending", ids, hist, [str(u) for u in range(news.n_users)], news, when=when)
    users = np.arange(10)
    m = Trending(share=0.03).fit(None).fit_events(news)  # the share tuned on this split (see above)
    np.testing.assert_allclose(arm.score(users), scores_for(m, hist, when)(users), rtol=1e-6)
