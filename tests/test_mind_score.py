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
