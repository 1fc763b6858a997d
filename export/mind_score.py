"""Score a MIND leaderboard prediction file against truth in the same layout.

Each line is ``impression_id [v1,v2,...]``: truth holds 0/1 click labels, the prediction holds the
1-based rank of each candidate (as the MIND leaderboard expects). Scores are 1/rank, as in the
competition's evaluate.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from genre_edge.errors import DataError
from .metrics import impression_metrics


def _parse(path: Path, kind: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        imp, sep, rest = line.strip().partition(" ")
        if not sep:
            raise DataError(f"{path}:{lineno}: expected 'impression_id [v1,v2,...]'")
        try:
            vals = json.loads(rest.strip())
        except json.JSONDecodeError:
            raise DataError(f"{path}:{lineno}: {rest.strip()[:40]!r} is not a list like [1,0,0]") from None
        if not isinstance(vals, list) or not vals or not all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
            raise DataError(f"{path}:{lineno}: expected a non-empty list of integers")
        if kind == "truth" and any(v not in (0, 1) for v in vals):
            raise DataError(f"{path}:{lineno}: truth labels must be 0 or 1")
        if kind == "prediction" and sorted(vals) != list(range(1, len(vals) + 1)):
            raise DataError(f"{path}:{lineno}: ranks must be a permutation of 1..{len(vals)}")
        if imp in out:
            raise DataError(f"{path}:{lineno}: impression {imp} appears twice")
        out[imp] = vals
    return out


def score_files(truth: str | Path, prediction: str | Path) -> dict:
    t = _parse(Path(truth), "truth")
    p = _parse(Path(prediction), "prediction")
    missing = [k for k in t if k not in p]
    if missing:
        raise DataError(f"{prediction}: no prediction for {len(missing)} impression(s), e.g. {missing[0]}")
    extra = [k for k in p if k not in t]
    if extra:
        raise DataError(f"{prediction}: impression {extra[0]} is not in the truth file")
    labels, scores = [], []
    for k, y in t.items():
        if len(p[k]) != len(y):
            raise DataError(f"{prediction}: impression {k} has {len(p[k])} ranks, truth has {len(y)} labels")
        labels.append(np.array(y))
        scores.append(1.0 / np.array(p[k], dtype=float))
    return impression_metrics(labels, scores)
