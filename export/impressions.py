"""Impression-level evaluation, as MIND users evaluate: rank the candidates of each held-out impression
(AUC, MRR, nDCG@5, nDCG@10, the leaderboard's definitions) and write the leaderboard's ``prediction.txt``
(and the matching truth file), which ``genre eval mind-score`` reads back.

Any arm of ``genre ab`` is scored: a bundle (the on-device runtime, as served), a trained model folder,
``baseline:NAME`` (tuned on validation first) or ``zero-shot``. Each user's model input is the protocol's
history for the held-out period (training events, plus validation events for ``test``), as in every other
evaluation here; an impression counts as held out when it was shown in its user's held-out period.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from genre_edge.errors import ConfigError, DataError
from genre_edge.fsutil import atomic_write_text

from .metrics import impression_metrics

log = logging.getLogger(__name__)


def held_out_impressions(prep, which: str = "test") -> list:
    """The data set's impressions shown in each user's ``which`` period: from the user's first event held
    out for ``which`` on (for ``valid``, up to the first test event)."""
    if which not in ("test", "valid"):
        raise ConfigError(f"which must be test or valid for impressions, not {which!r}")
    imps = prep.data.impression_list()
    if not imps:
        raise DataError(f"{prep.conf.data.source}: the data set has no impressions; impression-level metrics need "
                        "MIND's behaviors.tsv, or a log with a label column whose non-clicked rows share a click's "
                        "user and time (what was shown with it)")
    sp = prep.split

    def first_time(inter) -> np.ndarray:
        t = np.full(sp.n_users, np.iinfo(np.int64).max, np.int64)
        np.minimum.at(t, inter.user, inter.time.astype(np.int64))
        return t

    start = first_time(sp.test if which == "test" else sp.valid)
    end = np.full(sp.n_users, np.iinfo(np.int64).max, np.int64) if which == "test" else first_time(sp.test)
    return [imp for imp in imps if start[imp.user] <= imp.time < end[imp.user] and len(imp.items)]


def ranks(scores: np.ndarray) -> np.ndarray:
    """Each candidate's 1-based rank: highest score first, ties in shown order (as the leaderboard file
    holds them; the metrics are computed from these ranks too, so the file scores the same)."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    out = np.empty(len(order), np.int64)
    out[order] = np.arange(1, len(order) + 1)
    return out


def evaluate_impressions(arm_spec: str, config_path: str, data_dir: str | None = None, data: str | None = None,
                         which: str = "test", prediction: str | Path | None = None,
                         truth: str | Path | None = None) -> dict:
    """Impression-level metrics of one arm on the held-out impressions; optionally the leaderboard's
    ``prediction.txt`` and the truth file in the same layout (written atomically)."""
    from .ab import Arm
    from .prepare import Prepared
    from .train_config import load_config, packaged_config

    path = config_path if Path(config_path).suffix == ".toml" else packaged_config(config_path)
    conf = load_config(path, {"data": {"source": data}} if data else None)
    prep = Prepared(conf, data_dir)
    imps = held_out_impressions(prep, which)
    hist = prep.split.histories(which)
    arm = Arm(arm_spec, list(prep.data.items.ids), hist, list(prep.data.users), prep.split, prep,
              when=prep.split.request_times(which))
    users = np.unique([imp.user for imp in imps]).astype(np.int64)
    row = {int(u): r for r, u in enumerate(users)}
    scores_all = np.concatenate([np.asarray(arm.score(users[a: a + 256]), np.float64)
                                 for a in range(0, len(users), 256)]) if len(users) else np.zeros((0, 0))
    labels, rank_lists = [], []
    for imp in imps:
        labels.append(np.asarray(imp.labels, np.int64))
        rank_lists.append(ranks(scores_all[row[int(imp.user)], imp.items]))
    res = {"arm": arm_spec, "kind": arm.kind, "which": which, "data": conf.data.source,
           **impression_metrics(labels, [1.0 / r for r in rank_lists])}  # 1/rank: the leaderboard's scoring
    if prediction is not None:
        atomic_write_text(prediction, "".join(f"{imp.impression_id} [{','.join(map(str, r.tolist()))}]\n"
                                              for imp, r in zip(imps, rank_lists)))
        res["prediction"] = str(prediction)
    if truth is not None:
        atomic_write_text(truth, "".join(f"{imp.impression_id} [{','.join(map(str, y.tolist()))}]\n"
                                         for imp, y in zip(imps, labels)))
        res["truth"] = str(truth)
    log.info("%s on %d held-out impressions: %s", arm_spec, res["impressions"], res)
    return res
