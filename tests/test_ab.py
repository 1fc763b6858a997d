"""Offline A/B replay: the paired statistics, and `genre ab` over a real bundle and a real model."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import have_export

pytestmark = pytest.mark.skipif(not have_export(), reason="export extra not installed")


def test_identical_arms_show_no_difference():
    from genre_edge_export.ab import paired_stats

    a = np.random.default_rng(0).random(300)
    s = paired_stats(a, a.copy())
    assert s["diff"] == 0 and s["ci95"] == [0.0, 0.0] and s["p_permutation"] == 1.0
    assert s["ties"] == 300 and s["wins_b"] == s["losses_b"] == 0


def test_a_real_gain_is_found_and_noise_is_not():
    from genre_edge_export.ab import paired_stats

    rng = np.random.default_rng(1)
    a = rng.random(400)
    better = paired_stats(a, a + 0.05 + rng.normal(0, 0.05, 400))
    assert better["ci95"][0] > 0 and better["p_permutation"] < 0.001 and better["wins_b"] > better["losses_b"]
    assert 0.03 < better["diff"] < 0.07 and better["rel_diff"] > 0
    # pure noise: most seeds must not call it significant (the test is calibrated)
    calls = sum(paired_stats(a, a + rng.normal(0, 0.05, 400), n_perm=2000, seed=s)["p_permutation"] < 0.05
                for s in range(20))
    assert calls <= 4
    with pytest.raises(ValueError, match="equal-length"):
        paired_stats(a, a[:10])


def test_genre_ab_compares_a_bundle_with_a_model_on_the_same_users(tiny_bundle, tmp_path):
    from genre_edge.cli import main

    conf = str(tiny_bundle / "teacher" / "config.toml")
    out = tmp_path / "ab"
    r = CliRunner().invoke(main, ["ab", "--a", str(tiny_bundle / "teacher"), "--b", str(tiny_bundle / "bundle"),
                                  "--config", conf, "--which", "valid", "--bootstrap", "200", "--out", str(out),
                                  "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["arms"]["A"]["kind"] == "model" and res["arms"]["B"]["kind"] == "bundle"
    c = res["comparison"]["ndcg@10"]
    assert c["users"] == res["arms"]["A"]["users"] == res["arms"]["B"]["users"] > 0
    assert c["wins_b"] + c["losses_b"] + c["ties"] == c["users"]
    assert c["ci95"][0] <= c["diff"] <= c["ci95"][1]
    assert abs(c["mean_a"] - res["arms"]["A"]["ndcg@10"]) < 1e-9  # per-user values average to the summary
    assert "B wins / losses / ties" in (out / "ab.md").read_text()
    # the same arm twice: exactly no difference
    r = CliRunner().invoke(main, ["ab", "--a", str(tiny_bundle / "bundle"), "--b", str(tiny_bundle / "bundle"),
                                  "--config", conf, "--which", "valid", "--bootstrap", "200", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["comparison"]["ndcg@10"]["diff"] == 0.0


def test_genre_ab_names_bad_arms(tiny_bundle, tmp_path):
    from genre_edge.cli import main

    conf = str(tiny_bundle / "teacher" / "config.toml")
    r = CliRunner().invoke(main, ["ab", "--a", str(tmp_path), "--b", str(tiny_bundle / "bundle"), "--config", conf])
    assert r.exit_code == 1 and "neither a bundle" in r.output


def test_holm_adjustment():
    from genre_edge_export.ab import holm

    adj = holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adj == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})  # 3 x 0.01, max(2 x 0.03, ...), monotone


def test_genre_ab_takes_a_tuned_baseline_and_seeds(tiny_bundle, tmp_path):
    from genre_edge.cli import main

    conf = str(tiny_bundle / "teacher" / "config.toml")
    teacher = str(tiny_bundle / "teacher")
    r = CliRunner().invoke(main, ["ab", "--a", "baseline:ease-recency", "--b", f"{teacher},{teacher}",
                                  "--config", conf, "--which", "valid", "--bootstrap", "200", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["arms"]["A"]["kind"] == "baseline" and res["arms"]["B"]["kind"] == "model"
    seeds = res["arms"]["B"]["seeds"]["ndcg@10"]
    assert seeds["runs"][0] == seeds["runs"][1] and seeds["sd"] == 0.0  # the same folder twice
    assert all("p_holm" in c and c["p_holm"] >= c["p_permutation"] for c in res["comparison"].values())
    r = CliRunner().invoke(main, ["ab", "--a", "baseline:nope", "--b", teacher, "--config", conf])
    assert r.exit_code == 1 and "unknown baseline" in r.output


def test_genre_ab_zero_shot_arm_matches_training_and_drops_top_items(tiny_bundle):
    from genre_edge.cli import main

    conf = str(tiny_bundle / "teacher" / "config.toml")
    teacher = str(tiny_bundle / "teacher")
    report = json.loads((tiny_bundle / "teacher" / "report.json").read_text())
    r = CliRunner().invoke(main, ["ab", "--a", "zero-shot", "--b", teacher, "--config", conf, "--which", "valid",
                                  "--bootstrap", "200", "--json"])
    assert r.exit_code == 0, r.output
    full = json.loads(r.output)
    assert full["arms"]["A"]["kind"] == "zero-shot" and full["dropped_items"] == []
    # the untrained encoder, as training measured it before its first step
    assert full["arms"]["A"]["ndcg@10"] == pytest.approx(report["zero_shot"]["valid"]["ndcg@10"], abs=1e-6)
    r = CliRunner().invoke(main, ["ab", "--a", "zero-shot", "--b", teacher, "--config", conf, "--which", "valid",
                                  "--bootstrap", "200", "--drop-top-items", "2", "--json"])
    assert r.exit_code == 0, r.output
    dropped = json.loads(r.output)
    assert len(dropped["dropped_items"]) == 2
    assert dropped["split"]["valid"]["positives"] < full["split"]["valid"]["positives"]
    assert dropped["arms"]["A"]["ndcg@10"] != full["arms"]["A"]["ndcg@10"]
    r = CliRunner().invoke(main, ["ab", "--a", "zero-shot", "--b", teacher, "--config", conf, "--drop-top-items", "-1"])
    assert r.exit_code == 2 and "-1" in r.output


def test_genre_ab_on_short_histories_cuts_every_arm_and_tunes_baselines_for_them(tiny_bundle):
    from genre_edge.cli import main
    from genre_edge_export.ab import Arm, replay
    from genre_edge_export.evaluate import evaluate
    from genre_edge_export.prepare import Prepared
    from genre_edge_export.train_config import load_config

    conf = str(tiny_bundle / "teacher" / "config.toml")
    teacher = str(tiny_bundle / "teacher")
    whole = replay("baseline:ease", teacher, conf, which="valid", n_boot=100)
    cut = replay("baseline:ease", teacher, conf, which="valid", n_boot=100, history_last=1)
    assert whole["history_last"] == 0 and cut["history_last"] == 1
    # the model arm scores each user's last positive only: the same as building it on the cut histories
    prep = Prepared(load_config(conf))
    sp = prep.split
    arm = Arm(teacher, list(prep.data.items.ids), sp.histories("valid", last=1), list(prep.data.users), sp, prep,
              when=sp.request_times("valid"))
    assert cut["arms"]["B"]["ndcg@10"] == pytest.approx(evaluate(arm.score, sp, "valid")["ndcg@10"], abs=1e-9)
    assert cut["arms"]["B"]["ndcg@10"] != pytest.approx(whole["arms"]["B"]["ndcg@10"], abs=1e-9)
    r = CliRunner().invoke(main, ["ab", "--a", "baseline:ease", "--b", teacher, "--config", conf, "--which", "valid",
                                  "--bootstrap", "100", "--history-last", "1"])
    assert r.exit_code == 0, r.output
    assert "last 1 positive(s); baselines tuned on validation histories cut the same way" in r.output
    r = CliRunner().invoke(main, ["ab", "--a", "baseline:ease", "--b", teacher, "--config", conf, "--history-last", "-2"])
    assert r.exit_code == 2 and "-2" in r.output


def test_split_without_top_items_takes_them_out_of_candidates_and_truth(toy_data):
    from genre_edge_export.data import load_dataset
    from genre_edge_export.evaluate import _truth
    from genre_edge_export.split import make_split

    sp = make_split(load_dataset(toy_data))
    for which, items in (("test", "warm_items"), ("cold", "cold_items")):
        users, per_user, _, cand = _truth(sp, which)
        counts = np.bincount(np.concatenate([per_user[u] for u in users]), minlength=sp.n_items)
        sp2, top = sp.without_top_items(which, 1)
        assert top == [int(np.argmax(counts))]
        assert top[0] in getattr(sp, items) and top[0] not in getattr(sp2, items)
        users2, per_user2, _, _ = _truth(sp2, which)
        assert all(top[0] not in per_user2[u] for u in users2)
        assert sum(len(per_user2[u]) for u in users2) == counts.sum() - counts[top[0]]
        # what the models read is unchanged
        assert all(np.array_equal(a, b) for a, b in zip(sp.histories(which), sp2.histories(which)))
    assert sp.without_top_items("cold", 0) == (sp, [])
    with pytest.raises(ValueError, match="which must be"):
        sp.without_top_items("nope", 1)


def test_paired_stats_agree_with_scipy():
    """Issue 19: the numpy bootstrap / sign-flip permutation / paired t in export/ab.py against SciPy's
    own (`bootstrap(paired=True)`, `permutation_test(permutation_type='samples')`, `ttest_rel`)."""
    stats = pytest.importorskip("scipy.stats")
    from genre_edge_export.ab import paired_stats

    rng = np.random.default_rng(11)
    for effect in (0.0, 0.01, 0.03):
        a = rng.random(400) * 0.3
        b = np.clip(a + effect + rng.normal(0, 0.08, 400) * (rng.random(400) < 0.5), 0, None)
        ours = paired_stats(a, b, n_boot=20000, n_perm=20000, seed=1)
        ci = stats.bootstrap((b, a), lambda x, y: np.mean(x - y), paired=True, vectorized=False, n_resamples=20000,
                             method="percentile", random_state=2).confidence_interval
        assert abs(ours["ci95"][0] - ci.low) < 0.002 and abs(ours["ci95"][1] - ci.high) < 0.002
        perm = stats.permutation_test((b, a), lambda x, y, axis: np.mean(x - y, axis=axis), vectorized=True,
                                      permutation_type="samples", n_resamples=20000, random_state=3).pvalue
        assert abs(ours["p_permutation"] - perm) < 0.02 + 0.1 * perm
        t = stats.ttest_rel(b, a)
        assert ours["t_paired"] == pytest.approx(t.statistic, rel=1e-9)


def test_replay_names_a_held_out_set_the_split_does_not_have(tiny_bundle):
    """The tiny split has no cold-validation items: a clear error, not an empty comparison."""
    from genre_edge.errors import ConfigError
    from genre_edge_export.ab import replay

    conf = str(tiny_bundle / "teacher" / "config.toml")
    with pytest.raises(ConfigError, match="which=cold_valid: this split .cold_item. has no held-out positives there "
                                          ".no cold-validation items: set split.cold_valid_quantile."):
        replay("zero-shot", str(tiny_bundle / "teacher"), conf, which="cold_valid")
