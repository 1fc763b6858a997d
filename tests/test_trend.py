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
    from genre_edge_export.baselines import interaction_matrix, tune

    _, params, _ = tune("trending", news, interaction_matrix(news))  # what the arm tunes on validation
    m = Trending(**params).fit(None).fit_events(news)
    np.testing.assert_allclose(arm.score(users), scores_for(m, hist, when)(users), rtol=1e-6)


def test_device_trend_fed_in_time_order_equals_the_offline_rows():
    """The runtime's Trend, fed events in time order (what a device's event feed does) and read at each
    request time, gives the training side's trending popularity feature for the same events."""
    from genre_edge.trending import Trend, trend_feature
    from genre_edge_export.trend import trend_rows

    rng = np.random.default_rng(3)
    ev_t = np.sort(rng.integers(1_000, 50_000, 400)).astype(np.float64)
    ev_i = rng.integers(0, 9, 400)
    at = np.sort(rng.integers(2_000, 60_000, 25)).astype(np.float64)
    want = trend_feature(trend_rows(ev_t, ev_i, 9, at, 3_000.0))
    tr, k = Trend(np.zeros(9), 3_000.0, 0.0), 0
    for r, t in enumerate(at):
        j = int(np.searchsorted(ev_t, t, "left"))
        tr.add(ev_i[k:j], ev_t[k:j])
        k = j
        np.testing.assert_allclose(tr.feature(t), want[r], rtol=1e-5, atol=1e-6)
        # a clock behind the newest event reads the counts as they are (they cannot be taken back)
        np.testing.assert_array_equal(tr.feature(tr.as_of - 10_000), tr.feature(tr.as_of))
    assert trend_feature(np.zeros((2, 4))).max() == 0.0  # nothing counted: all zero, not NaN


def test_trend_refuses_bad_events_and_keeps_its_counts():
    from genre_edge.errors import RequestError
    from genre_edge.trending import Trend

    tr = Trend(np.array([1.0, 2.0, 0.0]), 100.0, 500.0)
    before = tr.counts.copy()
    for rows, times, msg in (([0, 5], [600, 600], "out of the catalog"), ([0], [np.nan], "unix seconds"),
                             ([0], [-1.0], "unix seconds"), ([0, 1], [600], "one time per item")):
        with pytest.raises(RequestError, match=msg):
            tr.add(np.array(rows), np.array(times, np.float64))
        np.testing.assert_array_equal(tr.counts, before)
        assert tr.as_of == 500.0
    tr.add(np.array([2]), np.array([400.0]))  # an event older than as_of: counted, decayed, as_of kept
    assert tr.as_of == 500.0 and tr.counts[2] == pytest.approx(0.5)
    tr.add(np.array([2]), np.array([600.0]))  # a newer one moves every count to its time
    assert tr.as_of == 600.0 and tr.counts[0] == pytest.approx(0.5) and tr.counts[2] == pytest.approx(1.25)
    with pytest.raises(ValueError, match="half-life"):
        Trend(np.zeros(2), 0.0, 0.0)


@pytest.fixture(scope="module")
def news_folder(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from synth_news import make

    out = tmp_path_factory.mktemp("news-hybrid")
    make(out, users=300, items=400, days=6, sessions_per_user=12, lifetime_h=12, trend=1.5, taste=0.5, seed=0)
    return out


@pytest.fixture(scope="module")
def news_trained(news_folder, tmp_path_factory):
    """A tiny hybrid trained on the news log with ``popularity = "auto"`` and its bundle: (root, report)."""
    from conftest import tiny_config, tiny_encoder

    import torch

    torch.set_num_threads(1)
    from genre_edge_export.bundle_writer import export_bundle
    from genre_edge_export.train import train

    root = tmp_path_factory.mktemp("news-trained")
    conf = tiny_config(news_folder, tiny_encoder(root / "enc"),
                       data={"source": str(news_folder), "format": "mind"},
                       split={"kind": "cold_item", "cold_quantile": 0.5, "cold_valid_quantile": 0.4},
                       encoder={"template": "{title}. {category}", "trainable_layers": 0})
    rep = train(conf, root / "teacher", progress=False)
    export_bundle(root / "teacher", root / "bundle", ["x86-avx2"], min_kept=0.0, min_request_kept=0.0,
                  min_cold_kept=0.0, progress=lambda m: None)
    return root, rep


def test_hybrid_calibrates_trending_popularity_and_a_device_serves_it(news_trained, tmp_path):
    """On a log where stories fade, the blend calibration ("auto") chooses trending popularity on validation;
    the bundle ships the decayed counts; a device fed the training events in time order scores like the
    offline model (A/B replay of the bundle vs the model folder), and events it records move the ranking."""
    from genre_edge.errors import RequestError
    from genre_edge.recommender import Recommender
    from genre_edge_export.ab import replay
    from genre_edge_export.trend import TREND_SHARES

    root, rep = news_trained
    cal = rep["calibration"]
    grid = {r["popularity"]: r["valid_ndcg@10"] for r in cal["popularity_grid"]}
    assert set(grid) == {"static"} | {f"trending-{s:g}" for s in TREND_SHARES}
    assert cal["popularity_half_life_s"] > 0 and max(grid.values()) > 1.2 * grid["static"]
    assert cal["after"]["pop"] > 0
    # a model folder written before trending popularity (no pop_half_life) loads with static popularity
    import shutil

    from safetensors.torch import load_file, save_file

    from genre_edge_export.model_folder import ModelDir

    assert float(ModelDir(root / "teacher").modules()[1].pop_half_life) == pytest.approx(
        cal["popularity_half_life_s"], rel=1e-6)
    shutil.copytree(root / "teacher", tmp_path / "old")
    st = load_file(str(tmp_path / "old" / "recommender.safetensors"))
    del st["rec.pop_half_life"]
    save_file(st, str(tmp_path / "old" / "recommender.safetensors"))
    assert float(ModelDir(tmp_path / "old").modules()[1].pop_half_life) == 0.0
    rec = Recommender.load(root / "bundle", "x86-avx2", state_dir=tmp_path / "state")
    info = rec.info()["popularity"]
    assert info["kind"] == "trending" and info["half_life_s"] == pytest.approx(cal["popularity_half_life_s"])
    # the device replayed with an event feed ranks like the offline model (same user vectors and CF; the
    # encoder is the int8 export of the same weights, so the lists may differ a little)
    conf_path = root / "teacher" / "config.toml"
    res = replay(str(root / "bundle"), str(root / "teacher"), str(conf_path))
    a, b = res["arms"]["A"]["ndcg@10"], res["arms"]["B"]["ndcg@10"]
    assert abs(a - b) < 0.1 * b, (a, b)
    # events recorded on the device lift an item: 50 clicks on the least popular item just before now
    ids = rec.catalog.ids
    now = int(rec.catalog.trend.as_of) + 60
    base = rec.score_all(np.array([0, 1]), now=now)
    low = int(np.argmin(rec.catalog.popularity(now)))
    out = rec.record_events([{"item_id": ids[low], "time": now - 30}] * 50 + [{"item_id": "nope", "time": now}])
    assert out == {"counted": 50, "unknown_ids": ["nope"]}
    after = rec.score_all(np.array([0, 1]), now=now)
    assert (after > after[low]).sum() < (base > base[low]).sum()
    with pytest.raises(RequestError, match="time"):
        rec.record_events([{"item_id": ids[0], "time": "yesterday"}])
    with pytest.raises(RequestError, match="exactly item_id and time"):
        rec.record_events([{"item_id": ids[0]}])
    # the CLI passes the request time; a bad one is a user error naming the field
    from click.testing import CliRunner

    from genre_edge.cli import main

    args = ["recommend", "--bundle", str(root / "bundle"), "--profile", "x86-avx2", "--state-dir",
            str(tmp_path / "state"), "--history", f"{ids[0]},{ids[1]}", "--json", "-k", "3"]
    r = CliRunner().invoke(main, args + ["--now", str(now)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, args + ["--now", "-5"])
    assert r.exit_code == 1 and "now" in r.output


def test_device_events_are_durable_and_shared_through_the_state_folder(news_trained, tmp_path):
    """Events recorded by one process reach another on the same state folder (its next request) and a
    restart; folding the journal into a snapshot keeps the counts (bundle rows and on-device items by id);
    a journal line of bad events is refused as corrupt."""
    from genre_edge.catalog import JOURNAL_COMPACT_OPS
    from genre_edge.errors import BundleError
    from genre_edge.recommender import Recommender

    bundle, st = news_trained[0] / "bundle", tmp_path / "state"

    def load():
        return Recommender.load(bundle, "x86-avx2", state_dir=st)

    a, other = load(), load()
    ids = a.catalog.ids
    now = int(a.catalog.trend.as_of) + 60
    low = int(np.argmin(a.catalog.popularity(now)))
    a.record_events([{"item_id": ids[low], "time": now - 30}] * 20)
    want = a.catalog.popularity(now).copy()
    assert want[low] > 0.5
    other.recommend(history=[ids[0]], now=now)  # a request applies the other process's writes
    np.testing.assert_allclose(other.catalog.popularity(now), want, rtol=1e-6)
    np.testing.assert_allclose(load().catalog.popularity(now), want, rtol=1e-6)
    a.add_items([{"id": "fresh1", "title": "Breaking story", "categories": ["news"]}])
    a.record_events([{"item_id": "fresh1", "time": now + 400}] * 3)
    for k in range(JOURNAL_COMPACT_OPS + 3):  # past the journal's length: the state becomes a snapshot
        a.record_events([{"item_id": ids[k % 7], "time": now + 500 + k}])
    assert '"trend"' in (st / "catalog-updates.json").read_text()
    b = load()
    assert b.catalog.trend.as_of == a.catalog.trend.as_of
    np.testing.assert_allclose(b.catalog.trend.counts[: b.catalog.n_bundle], a.catalog.trend.counts[: a.catalog.n_bundle],
                               rtol=1e-9)
    fresh = (b.catalog.trend.counts[b.catalog.index["fresh1"]], a.catalog.trend.counts[a.catalog.index["fresh1"]])
    assert fresh[0] > 0 and fresh[0] == pytest.approx(fresh[1], rel=1e-9)
    with open(st / "catalog-updates.journal", "a") as fh:
        fh.write('{"op": "events", "ids": ["x"], "times": [-1]}\n')
    with pytest.raises(BundleError, match="journal is corrupt"):
        load()


def test_a_static_bundle_refuses_events(tiny_bundle, tmp_path):
    from genre_edge.errors import RequestError
    from genre_edge.recommender import Recommender

    rec = Recommender.load(tiny_bundle / "bundle", "x86-avx2", state_dir=tmp_path / "state")
    if rec.catalog.trend is not None:
        pytest.fail("the toy data set has no trending signal; its bundle is expected to keep static popularity")
    assert rec.info()["popularity"] == {"kind": "static"}
    with pytest.raises(RequestError, match="static"):
        rec.record_events([{"item_id": "m0", "time": 1}])


def test_genre_items_events_records_a_file_of_events(news_trained, tmp_path):
    """`genre items events --file`: the whole file is checked first (a bad line names itself, nothing is
    recorded), then counted into the state folder a server on it reads."""
    import json

    from click.testing import CliRunner

    from genre_edge.cli import main
    from genre_edge.recommender import Recommender

    bundle, st = news_trained[0] / "bundle", tmp_path / "state"
    rec = Recommender.load(bundle, "x86-avx2", state_dir=st)
    item, now = rec.catalog.ids[3], int(rec.catalog.trend.as_of) + 10
    before = rec.catalog.trend.counts[3]
    base = ["items", "events", "--bundle", str(bundle), "--profile", "x86-avx2", "--state-dir", str(st), "--json"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"item_id": item, "time": now}) + "\n" + json.dumps({"item_id": item, "when": 1}) + "\n")
    r = CliRunner().invoke(main, base + ["--file", str(bad)])
    assert r.exit_code == 1 and "bad.jsonl:2" in r.output
    assert not (st / "catalog-updates.json").exists()  # nothing recorded
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"item_id": i, "time": now}) + "\n" for i in (item, item, "nope")))
    r = CliRunner().invoke(main, base + ["--file", str(good)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"counted": 2, "unknown_ids": ["nope"]}
    after = Recommender.load(bundle, "x86-avx2", state_dir=st).catalog.trend
    assert after.counts[3] == pytest.approx(before * 0.5 ** ((now - rec.catalog.trend.as_of) / after.half_life) + 2)
    # a CSV export of the same events (it was read as JSON lines: "not valid JSON" at line 1), ';'-separated with
    # a decimal comma too; a time that is not a number is named with its line, nothing recorded
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text(f"item_id,time\n{item},{now}\n{item},yesterday\n")
    r = CliRunner().invoke(main, base + ["--file", str(bad_csv)])
    assert r.exit_code == 1 and "bad.csv:3: time must be unix seconds (a number), got 'yesterday'" in r.output, r.output
    assert Recommender.load(bundle, "x86-avx2", state_dir=st).catalog.trend.counts[3] == pytest.approx(after.counts[3])
    for name, text in (("good.csv", f"item_id,time\n{item},{now}\n"), ("good2.csv", f"time;item_id\n{now},0;{item}\n")):
        (tmp_path / name).write_text(text)
        r = CliRunner().invoke(main, base + ["--file", str(tmp_path / name)])
        assert r.exit_code == 0 and json.loads(r.output) == {"counted": 1, "unknown_ids": []}, r.output
    again = Recommender.load(bundle, "x86-avx2", state_dir=st).catalog.trend
    assert again.counts[3] == pytest.approx(after.counts[3] + 2)
    r = CliRunner().invoke(main, base + ["--id", item])
    assert r.exit_code == 1 and "--id and --time together" in r.output
