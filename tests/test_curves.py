"""Training curves: TensorBoard event files beside the teacher and the student, read back."""
import json

import pytest

from conftest import have_export

pytestmark = pytest.mark.skipif(not have_export(), reason="export extra not installed")


def test_train_and_distill_write_curves_that_match_their_reports(tiny_bundle):
    pytest.importorskip("tensorboard")
    from genre_edge_export.curves import read_scalars

    teacher = read_scalars(tiny_bundle / "teacher" / "tb")
    rep = json.loads((tiny_bundle / "teacher" / "report.json").read_text())
    epochs = [h["epoch"] for h in rep["history"]]
    assert [s for s, _ in teacher["epoch/valid_ndcg@10"]] == epochs
    assert [v for _, v in teacher["epoch/valid_ndcg@10"]] == pytest.approx([h["valid_ndcg@10"] for h in rep["history"]])
    assert len(teacher["step/loss"]) >= len(epochs) and teacher["zero_shot/valid_ndcg@10"][0][0] == 0
    if rep.get("interpolation"):
        assert teacher["wise/chosen_alpha"][0][1] == pytest.approx(rep["interpolation"]["alpha"])
        assert len(teacher["wise/valid_ndcg@10"]) == len(rep["interpolation"]["grid"])
    if rep.get("calibration"):
        assert teacher["calibration/chosen_recency_half_life"][0][1] == pytest.approx(rep["calibration"]["recency_half_life"])
        assert teacher["calibration/chosen_recency_floor"][0][1] == pytest.approx(rep["calibration"]["recency_floor"])
    student = read_scalars(tiny_bundle / "student" / "tb")
    drep = json.loads((tiny_bundle / "student" / "distill.json").read_text())
    assert [v for _, v in student["distill/cos_mean"]] == pytest.approx([h["cos_mean"] for h in drep["history"]])
    assert not any(t.startswith("epoch/") for t in student)  # the teacher's curves stay with the teacher


def test_a_fresh_run_replaces_old_curves_and_a_resumed_one_appends(tmp_path):
    pytest.importorskip("tensorboard")
    from genre_edge_export.curves import Curves, read_scalars

    with Curves(tmp_path) as c:
        c.scalars(1, {"loss": 2.0, "skipped": float("nan"), "flag": True}, "epoch/")
    with Curves(tmp_path) as c:  # resumed
        c.scalars(2, {"loss": 1.5}, "epoch/")
    got = read_scalars(tmp_path / "tb")
    assert got == {"epoch/loss": [(1, 2.0), (2, 1.5)]}  # non-finite values and booleans are not curves
    # the resumed run's file can sort first by name (the writer's counter, 9 -> 10 in one second): still step order
    first, second = sorted((tmp_path / "tb").glob("events.out.tfevents.*"))
    tmp = first.with_name("swap")
    first.rename(tmp)
    second.rename(first)
    tmp.rename(second)
    assert read_scalars(tmp_path / "tb") == got
    with Curves(tmp_path, fresh=True) as c:
        c.scalars(1, {"loss": 9.0}, "epoch/")
    assert read_scalars(tmp_path / "tb") == {"epoch/loss": [(1, 9.0)]}
