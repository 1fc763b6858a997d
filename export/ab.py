"""Offline A/B replay: two bundles or trained models on the same held-out users, compared honestly.

Both arms are scored by the project's evaluation protocol on one split (from a training config),
user by user. The report gives each arm's metrics, the paired difference with a bootstrap
confidence interval, a paired sign-flip permutation test, and per-user wins / losses / ties.
An arm is a bundle folder (scored by the on-device runtime, exactly as served), a trained
model folder (``genre train`` / ``genre distill`` output, scored with PyTorch), ``baseline:NAME``
(a reference baseline, its grid searched on the split's validation users first), or ``zero-shot`` (the
config's pretrained encoder, untrained: cosine between an item and the mean of the user's history). Several
comma-separated folders make one arm of several training seeds: each user's metric is the mean over
the seeds, and the report gives the seeds' mean +- sd. With several metrics, p-values are also
given Holm-adjusted (family-wise error over the metrics compared).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from genre_edge.errors import ConfigError
from genre_edge.recommender import Recommender
from genre_edge.trending import Trend

from .baselines import BASELINES, interaction_matrix, scores_for, tune
from .evaluate import category_features, evaluate
from .llm import user_side_texts
from .model_folder import ModelDir, domains_hint
from .prepare import Prepared
from .scoring import Scorer, mean_by_owner, popularity_rows
from .trend import train_events
from .text import tokenize
from .train_config import load_config, packaged_config

log = logging.getLogger(__name__)

METRICS = ("ndcg@10", "recall@20", "ndcg@20", "recall@10", "mrr", "hit@10")
WHICH = ("test", "valid", "cold", "cold_valid")


# ------------------------------------------------------------------ statistics (numpy only)
def paired_stats(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, n_perm: int = 10000, seed: int = 0,
                 tie: float = 1e-12) -> dict:
    """B minus A over the same users: mean difference, 95% paired-bootstrap CI, two-sided sign-flip
    permutation p-value (exact in distribution, no normality assumed), paired t statistic, and
    per-user wins (B better) / losses / ties."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired metrics need two equal-length 1-d arrays, got {a.shape} and {b.shape}")
    d = b - a
    n = len(d)
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for i in range(0, n_boot, 256):  # in chunks: n_boot x n indices at once can be large
        m = min(256, n_boot - i)
        boots[i: i + m] = d[rng.integers(0, n, size=(m, n))].mean(1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    obs = abs(d.mean())
    flips = np.empty(n_perm)
    for i in range(0, n_perm, 256):
        m = min(256, n_perm - i)
        flips[i: i + m] = np.abs((d[None] * rng.choice((-1.0, 1.0), size=(m, n))).mean(1))
    p_perm = (1.0 + float((flips >= obs - 1e-15).sum())) / (n_perm + 1.0)
    sd = d.std(ddof=1) if n > 1 else 0.0
    t = d.mean() / (sd / math.sqrt(n)) if sd > 0 else 0.0
    return {"users": n, "mean_a": float(a.mean()), "mean_b": float(b.mean()), "diff": float(d.mean()),
            "rel_diff": float(d.mean() / a.mean()) if a.mean() else float("nan"),
            "ci95": [float(lo), float(hi)], "p_permutation": p_perm, "t_paired": float(t),
            "p_t_normal": float(math.erfc(abs(t) / math.sqrt(2))),
            "wins_b": int((d > tie).sum()), "losses_b": int((d < -tie).sum()), "ties": int((np.abs(d) <= tie).sum())}


# ------------------------------------------------------------------ arms
class Arm:
    """One side of the comparison: a name, and scores over the data set's items for users."""

    def __init__(self, spec: str, item_ids: list[str], histories: list[np.ndarray], user_ids: list[str],
                 split=None, prep: Prepared | None = None, when: np.ndarray | None = None, tune_history_last: int = 0):
        """``when``: per user, the request time (``Split.request_times``) that time-aware baselines read.
        ``tune_history_last`` > 0: a baseline's grid is searched on validation histories cut to each user's last that
        many positives (:func:`~genre_edge_export.baselines.tune`): chosen for the short histories it is given."""
        self.spec = spec
        p = Path(spec)
        if spec == "zero-shot":
            if prep is None:
                raise ConfigError("the zero-shot arm needs the prepared data set (its texts and encoder)")
            self.kind, self.score = "zero-shot", self._zero_shot(prep, histories)
        elif spec.startswith("baseline:"):
            self.kind, self.score = "baseline", self._baseline(spec.split(":", 1)[1], split, histories, when, prep,
                                                               tune_history_last)
        elif (p / "manifest.json").is_file():
            self.kind, self.score = "bundle", self._bundle(p, item_ids, histories, when, split)
        elif (p / "config.toml").is_file() and (p / "recommender.safetensors").is_file():
            self.kind, self.score = "model", self._model(p, item_ids, histories, user_ids, split, when)
        else:
            raise ConfigError(f"{spec}: neither a bundle (manifest.json) nor a trained model folder "
                              "(config.toml + recommender.safetensors)" + domains_hint(p))

    @staticmethod
    def _baseline(name: str, split, histories: list[np.ndarray], when: np.ndarray | None = None,
                  prep: Prepared | None = None, tune_history_last: int = 0):
        if name not in BASELINES:
            raise ConfigError(f"baseline:{name}: unknown baseline; choose from {', '.join(BASELINES)}")
        features = None
        if getattr(BASELINES[name], "uses_features", False):
            if prep is None:
                raise ConfigError(f"baseline:{name} needs the prepared data set (its items' categories)")
            features = category_features(prep.data.items.categories)
        model, params, _ = tune(name, split, interaction_matrix(split), item_features=features,
                                history_last=tune_history_last)
        log.info("arm baseline:%s tuned on validation: %s", name, params)
        return scores_for(model, histories, when)

    @staticmethod
    def _zero_shot(prep: Prepared, histories: list[np.ndarray]):
        """The untrained reference: the config's pretrained encoder (never the transfer source's
        fine-tuned one), its item texts, the mean of the last ``max_history`` history items."""
        from .scoring import zero_shot_scores

        return zero_shot_scores(prep.pretrained_embeddings(), histories, prep.conf.user_model.max_history)

    @staticmethod
    def _bundle(path: Path, item_ids: list[str], histories: list[np.ndarray], when: np.ndarray | None = None,
                split=None):
        rec = Recommender.load(path, "auto", state_dir=Path(str(path.resolve()) + ".ab-state-unused"))
        cat = rec.catalog
        pos = np.array([cat.index.get(i, -1) for i in item_ids], np.int64)  # data item -> bundle row
        if (pos < 0).mean() > 0.5:
            raise ConfigError(f"{path}: the bundle knows only {(pos >= 0).sum()} of the data set's {len(pos)} items; "
                              "was it trained on this data set?")

        feed = cat.trend is not None and when is not None and split is not None
        if feed:  # the training events, in time order, as the device's event feed would deliver them
            ev_t, ev_i = train_events(split)
            o = np.argsort(ev_t, kind="stable")
            ev_t, ev_rows = ev_t[o], pos[ev_i[o]]
            known = ev_rows >= 0
            ev_t, ev_rows = ev_t[known], ev_rows[known]

        def score(users: np.ndarray) -> np.ndarray:
            out = np.full((len(users), len(item_ids)), -1e9, np.float32)
            if feed:
                # a trending bundle as a device with an event feed: counts from no events on, each request
                # after the training events before its time were recorded (Catalog.record_events' path)
                cat.trend = Trend(np.zeros(len(cat.trend)), cat.trend.half_life, 0.0)
                k = 0
            for r in (np.argsort(when[users], kind="stable") if feed else range(len(users))):
                u = users[r]
                if feed:
                    j = int(np.searchsorted(ev_t, when[u], "left"))  # events strictly before the request
                    cat.trend.add(ev_rows[k:j], ev_t[k:j])
                    k = j
                h = pos[histories[u]]
                s = rec.score_all(h[h >= 0], now=None if when is None else float(when[u]))
                out[r, pos >= 0] = s[pos[pos >= 0]]
            return out
        return score

    @staticmethod
    def _model(path: Path, item_ids: list[str], histories: list[np.ndarray], user_ids: list[str], split=None,
               when: np.ndarray | None = None):
        M = ModelDir(path)
        if list(M.items["ids"]) != list(item_ids):
            raise ConfigError(f"{path}: trained on other items than the data set given ({len(M.items['ids'])} vs "
                              f"{len(item_ids)}); compare models of the same data set")
        tower, rec = M.modules()
        profiles = None
        if M.conf.user_model.profile_weight > 0:  # a model trained with users' LLM texts reads them here too
            import torch

            side = user_side_texts(M.conf.data, M.conf.encoder.template, user_ids) or [[] for _ in user_ids]
            owner = np.array([u for u, ts in enumerate(side) for _ in ts], np.int64)
            texts = [t for ts in side for t in ts]
            e = torch.zeros(0, M.emb.shape[1])
            if texts:
                ids, mask = tokenize(M.path / "encoder" / "tokenizer.json", texts, M.conf.encoder.max_tokens)
                with torch.no_grad():
                    e = tower(torch.as_tensor(ids), torch.as_tensor(mask))
            profiles = mean_by_owner(e, owner, len(user_ids))
        pop_rows = None
        if float(rec.pop_half_life) > 0:  # trending popularity: as of each user's request time, as calibrated
            if split is None or when is None:
                raise ConfigError(f"{path}: trained with trending popularity; scoring it needs the split's request times")
            pop_rows = popularity_rows(rec, split, when)
        return Scorer(M.conf, rec, M.emb, histories, profiles, pop_rows)


def replay(a: str, b: str, config_path: str, data_dir: str | None = None, data: str | None = None,
           which: str = "test", metrics=METRICS, n_boot: int = 2000, seed: int = 0, drop_top_items: int = 0,
           arms: dict | None = None, per_user: dict | None = None, history_last: int = 0) -> dict:
    """Score arms ``a`` and ``b`` on the held-out users of ``which`` and compare them per user.

    ``drop_top_items`` > 0 takes the held-out items with the most positives out of the candidates and
    the truth (:meth:`~genre_edge_export.split.Split.without_top_items`): is the comparison decided by
    a few items? ``arms`` (a dict) caches built arms by spec across calls on the same config. ``per_user`` (a
    dict) receives each arm's per-user metrics (``{"A": {"users": ids, metric: values}, "B": ...}``), for
    comparisons pooled over several replays (``benchmarks/cold_folds.py``). ``history_last`` > 0: every arm reads
    only each user's last that many history positives (a device that has known the user for a short while);
    baselines are then tuned on validation histories cut the same way, while trained models and bundles score as
    they were trained and calibrated (on whole histories).
    """
    if which not in WHICH:
        raise ConfigError(f"which must be one of {', '.join(WHICH)}, not {which!r}")
    if drop_top_items < 0:
        raise ConfigError(f"drop_top_items must be >= 0, not {drop_top_items}")
    if history_last < 0:
        raise ConfigError(f"history_last must be >= 0 (0 = whole histories), not {history_last}")
    path = config_path if Path(config_path).suffix == ".toml" else packaged_config(config_path)
    conf = load_config(path, {"data": {"source": data}} if data else None)
    prep = Prepared(conf, data_dir)
    hist = prep.split.histories(which, last=history_last)
    ids = list(prep.data.items.ids)
    feats = category_features(prep.data.items.categories)
    split, dropped = prep.split.without_top_items(which, drop_top_items)
    held = split.held_out(which)
    if not (held.label == 1).any():  # evaluate() would score nobody: say why instead of failing on empty arms
        raise ConfigError(f"which={which}: this split ({conf.split.kind}) has no held-out positives there"
                          + (" (no cold-validation items: set split.cold_valid_quantile)"
                             if which == "cold_valid" and not drop_top_items else "")
                          + (f" once the top {drop_top_items} items are dropped" if drop_top_items else ""))
    res = {"config": str(config_path), "data": conf.data.source, "which": which, "history_last": history_last,
           "arms": {}, "split": split.summary(),
           "dropped_items": [{"id": str(ids[i]), "title": prep.data.items.title[i]} for i in dropped]}
    arms = {} if arms is None else arms
    per = {}
    for name, spec in (("A", a), ("B", b)):
        specs = [x.strip() for x in spec.split(",") if x.strip()]
        runs = []
        for one in specs:  # several training seeds: per-user metrics averaged over them
            key = (one, str(config_path), data, which, history_last)
            if key not in arms:  # tuned baselines and embedded catalogs are reused across drop levels
                arms[key] = Arm(one, ids, hist, list(prep.data.users), prep.split, prep,
                                when=prep.split.request_times(which), tune_history_last=history_last)
            arm = arms[key]
            pu: dict = {}
            summary = evaluate(arm.score, split, which, item_features=feats, per_user_out=pu)
            runs.append((arm.kind, summary, pu))
        pu = {k: np.mean([r[2][k] for r in runs], 0) for k in runs[0][2] if k != "users"}
        pu["users"] = runs[0][2]["users"]
        if any(not np.array_equal(r[2]["users"], pu["users"]) for r in runs):
            raise RuntimeError("the seeds of an arm were evaluated on different users")
        res["arms"][name] = {"spec": spec, "kind": runs[0][0], **{k: float(np.mean(v)) if k != "users" else len(v)
                                                                  for k, v in pu.items()}}
        if len(runs) > 1:
            res["arms"][name]["seeds"] = {m: {"mean": float(np.mean([r[1][m] for r in runs])),
                                              "sd": float(np.std([r[1][m] for r in runs], ddof=1)),
                                              "runs": [r[1][m] for r in runs]} for m in metrics if m in runs[0][1]}
        per[name] = pu
    if not np.array_equal(per["A"]["users"], per["B"]["users"]):
        raise RuntimeError("the two arms were evaluated on different users")  # evaluate() is deterministic
    if per_user is not None:
        per_user.update(per)
    res["comparison"] = {m: paired_stats(per["A"][m], per["B"][m], n_boot=n_boot, seed=seed)
                         for m in metrics if m in per["A"]}
    for m, adj in holm({m: c["p_permutation"] for m, c in res["comparison"].items()}).items():
        res["comparison"][m]["p_holm"] = adj
    return res


def holm(p: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values (family-wise error over the metrics compared)."""
    order = sorted(p, key=p.get)
    out, running = {}, 0.0
    for i, k in enumerate(order):
        running = max(running, min(1.0, (len(order) - i) * p[k]))
        out[k] = running
    return out


def markdown(res: dict) -> str:
    A, B = res["arms"]["A"], res["arms"]["B"]
    L = [f"# Offline A/B replay ({res['which']} split, {A['users']} users)", "",
         f"- A: `{A['spec']}` ({A['kind']})", f"- B: `{B['spec']}` ({B['kind']})",
         f"- data: {res['data']}, protocol from `{res['config']}`", *(
             [f"- without the {len(res['dropped_items'])} held-out item(s) with the most positives: "
              + ", ".join(d["title"] for d in res["dropped_items"])] if res.get("dropped_items") else []), *(
             [f"- histories cut to each user's last {res['history_last']} positive(s); baselines tuned on validation "
              "histories cut the same way, trained arms as trained"] if res.get("history_last") else []), "",
         "| metric | A | B | B - A | 95% CI (paired bootstrap) | relative | p (sign-flip permutation) | p (Holm) | "
         "B wins / losses / ties |", "|---|---|---|---|---|---|---|---|---|"]
    for m, s in res["comparison"].items():
        sig = " *" if s.get("p_holm", s["p_permutation"]) < 0.05 and (s["ci95"][0] > 0 or s["ci95"][1] < 0) else ""
        L.append(f"| {m} | {s['mean_a']:.4f} | {s['mean_b']:.4f} | {s['diff']:+.4f}{sig} | "
                 f"[{s['ci95'][0]:+.4f}, {s['ci95'][1]:+.4f}] | {100 * s['rel_diff']:+.1f}% | {s['p_permutation']:.4f} | "
                 f"{s.get('p_holm', float('nan')):.4f} | {s['wins_b']} / {s['losses_b']} / {s['ties']} |")
    for name in ("A", "B"):
        seeds = res["arms"][name].get("seeds")
        if seeds:
            L += ["", f"{name} over {len(next(iter(seeds.values()))['runs'])} training seeds (mean +- sd of each seed's "
                  "metric): " + ", ".join(f"{m} {v['mean']:.4f} +- {v['sd']:.4f}" for m, v in seeds.items())]
    L += ["", f"`*`: the 95% interval excludes 0 and the Holm-adjusted p < 0.05 ({len(res['comparison'])} metrics "
          "compared, family-wise). Per-user metrics over the same users for both arms; ties are users where both arms "
          "score the same (often 0: no hit in either list).", ""]
    return "\n".join(L)
