import pytest
from click.testing import CliRunner

from genre_edge.cli import main
from genre_edge.errors import DataError
from genre_edge_export.mind_score import score_files


def test_scores_like_the_leaderboard(tmp_path):
    (tmp_path / "t.txt").write_text("1 [0,1,0]\n2 [1,0]\n")
    (tmp_path / "p.txt").write_text("1 [2,1,3]\n2 [2,1]\n")
    r = score_files(tmp_path / "t.txt", tmp_path / "p.txt")
    assert r["auc"] == pytest.approx(0.5) and r["mrr"] == pytest.approx(0.75)
    res = CliRunner().invoke(main, ["eval", "mind-score", "--truth", str(tmp_path / "t.txt"),
                                    "--prediction", str(tmp_path / "p.txt"), "--json"])
    assert res.exit_code == 0 and '"auc": 0.5' in res.output


@pytest.mark.parametrize("pred, msg", [
    ("1 [2,1,3]\n", "no prediction for 1 impression"),
    ("1 [1,1,3]\n2 [2,1]\n", "permutation"),
    ("1 [2,1]\n2 [2,1]\n", "has 2 ranks, truth has 3"),
    ("1 2,1,3\n2 [1,2]\n", "is not a list"),
    ("1 [2,1,3]\n2 [2,1]\n9 [1]\n", "not in the truth file"),
])
def test_bad_prediction_files(tmp_path, pred, msg):
    (tmp_path / "t.txt").write_text("1 [0,1,0]\n2 [1,0]\n")
    (tmp_path / "p.txt").write_text(pred)
    with pytest.raises(DataError, match=msg):
        score_files(tmp_path / "t.txt", tmp_path / "p.txt")
    res = CliRunner().invoke(main, ["eval", "mind-score", "--truth", str(tmp_path / "t.txt"), "--prediction",
                                    str(tmp_path / "p.txt")])
    assert res.exit_code == 1 and msg.split()[0] in res.output


def test_impression_metrics_of_an_arm_and_the_prediction_file_round_trip(tmp_path):
    """Issue 19: held-out MIND impressions ranked by an arm (here the tuned popularity baseline and the
    untrained encoder), the leaderboard's prediction.txt + truth written, and `genre eval mind-score`
    reads them back to the same numbers."""
    import json

    from click.testing import CliRunner

    from conftest import tiny_encoder
    from genre_edge.cli import main
    from test_multidomain import write_mind

    mind = write_mind(tmp_path / "mind")
    enc = tiny_encoder(tmp_path / "enc")
    cfg = tmp_path / "mind.toml"
    cfg.write_text(f'name = "mind-tiny"\n[data]\nsource = "{mind}"\n[split]\nkind = "user_holdout"\n'
                   f'[encoder]\npath = "{enc}"\nmax_tokens = 16\ntemplate = "{{title}}. {{abstract}}"\n')
    results = {}
    for arm in ("baseline:popularity", "zero-shot"):
        pred, truth = tmp_path / f"{arm[:4]}-prediction.txt", tmp_path / f"{arm[:4]}-truth.txt"
        r = CliRunner().invoke(main, ["eval", "impressions", "--arm", arm, "--config", str(cfg), "--prediction",
                                      str(pred), "--truth", str(truth), "--json"])
        assert r.exit_code == 0, r.output
        res = results[arm] = json.loads(r.output)
        assert res["impressions"] > 10 and 0.0 <= res["auc"] <= 1.0 and 0.0 < res["mrr"] <= 1.0
        lines = pred.read_text().splitlines()
        assert len(lines) == res["impressions"] + res["skipped"]
        back = CliRunner().invoke(main, ["eval", "mind-score", "--truth", str(truth), "--prediction", str(pred),
                                         "--json"])
        assert back.exit_code == 0, back.output
        scored = json.loads(back.output)
        # the file holds ranks (ties in shown order) and the report was computed from the same ranks
        assert scored["impressions"] == res["impressions"]
        assert all(abs(scored[m] - res[m]) < 1e-12 for m in ("auc", "mrr", "ndcg@5", "ndcg@10"))
    assert results["baseline:popularity"]["auc"] != results["zero-shot"]["auc"]
    r = CliRunner().invoke(main, ["eval", "impressions", "--arm", "zero-shot", "--config", str(cfg), "--which", "cold"])
    assert r.exit_code == 2 and "cold" in r.output


def test_a_click_log_with_labels_has_impressions_that_eval_ranks(tmp_path):
    """README: in a log with a label column, 0 rows at a click's time are impressions. `genre eval impressions`
    refused such a log ("no impression logs (MIND behaviors.tsv)") and `genre data stats` counted 0."""
    import json
    import random

    import numpy as np

    from conftest import tiny_encoder
    from genre_edge_export.data import load_dataset

    rnd = random.Random(0)
    d = tmp_path / "clicks"
    d.mkdir()
    (d / "items.csv").write_text("item_id,title\n" + "".join(f"n{i},Story {i}\n" for i in range(30)))
    rows, t = ["user_id,item_id,clicked,ts"], 1_700_000_000
    for s in range(600):
        u, t = rnd.randrange(40), t + rnd.randrange(10, 100)
        shown = rnd.sample(range(30), 4)
        rows += [f"u{u},n{i},{int(i == shown[0])},{t}" for i in shown]
    rows.append(f"u0,n1,1,{t + 5}")  # a click alone (nothing shown with it): not an impression
    (d / "log.csv").write_text("\n".join(rows) + "\n")
    (d / "data.toml").write_text('[interactions]\npath="log.csv"\ntime="ts"\nlabel="clicked"\n[items]\npath="items.csv"\n')
    ds = load_dataset(d / "data.toml")
    imps = ds.impression_list()
    assert len(imps) == 600 and ds.stats()["impressions"] == 600
    assert [imp.impression_id for imp in imps[:3]] == ["1", "2", "3"] and imps[0].time < imps[-1].time
    assert all(len(imp.items) == 4 and imp.labels.sum() == 1 for imp in imps)
    first = rows[1].split(",")
    assert ds.items.ids[imps[0].items[imps[0].labels.argmax()]] == first[1] and ds.users[imps[0].user] == first[0]
    enc = tiny_encoder(tmp_path / "enc")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[data]\nsource = "{d / "data.toml"}"\n[split]\nkind = "user_holdout"\n'
                   f'[encoder]\npath = "{enc}"\nmax_tokens = 16\n')
    r = CliRunner().invoke(main, ["eval", "impressions", "--arm", "baseline:popularity", "--config", str(cfg), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert 10 < res["impressions"] < 600 and 0.0 <= res["auc"] <= 1.0
    # ratings are not impressions: a low rating is not an item shown and skipped
    (d / "data.toml").write_text('threshold = 1.0\n[interactions]\npath="log.csv"\ntime="ts"\nrating="clicked"\n'
                                 '[items]\npath="items.csv"\n')
    assert load_dataset(d / "data.toml", threshold=None).impression_list() == []
    r = CliRunner().invoke(main, ["eval", "impressions", "--arm", "baseline:popularity", "--config", str(cfg)])
    assert r.exit_code == 1 and "a label column whose non-clicked rows share a click's" in r.output, r.output
    assert np.isnan(load_dataset(d / "data.toml").interactions.rating).sum() == 0
