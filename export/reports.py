"""Human-readable summaries of training, evaluation and export results (the CLI and the quickstart print them)."""
from __future__ import annotations

from genre_edge.bench.report import markdown_table

METRIC_COLS = ["ndcg@10", "recall@10", "recall@20", "hit@10", "mrr", "auc_sampled", "coverage@10", "diversity@10"]


def _repeats_note(part: dict) -> str:
    """", of which N (of U users) are ranked for: repeats left out" where the truth differs from the positives."""
    if "truth_positives" not in part or part["truth_positives"] == part["positives"]:
        return ""
    return (f" ({part['truth_positives']} of {part['truth_users']} users ranked for: repeats of items a user "
            "already had are left out)")


def comparison_markdown(title: str, rows: list[dict], split_summary: dict, extra: str = "") -> str:
    md = [f"# {title}\n", extra,
          f"Split: `{split_summary['kind']}` — train {split_summary['train']['events']} events, "
          f"warm test {split_summary['test']['positives']} positives of {split_summary['test']['users']} users"
          f"{_repeats_note(split_summary['test'])}, "
          f"cold items {split_summary['cold_items']} ({split_summary['cold_test']['positives']} held-out positives). "
          "Full ranking over warm items (each user's seen items excluded) for warm users; over cold items only "
          "for the cold-item test. Tied scores earn the exact expected metric over random tie orders, so constant "
          "scores (CF on cold items) earn the random level, not one draw of it.\n"]
    for part in ("warm", "cold"):
        md.append(f"\n## {'Warm users (per-user temporal holdout)' if part == 'warm' else 'Cold items (never seen in training)'}\n")
        table_rows = [{"model": r["model"], **r[part]} for r in rows]
        if not any(r.get("users") for r in table_rows):  # e.g. no item first seen late enough in this split
            md.append(f"No {'test users' if part == 'warm' else 'cold-test items'} in this split: nothing to compare.\n")
            continue
        md.append(markdown_table(table_rows, ["model"] + METRIC_COLS + ["users"]))
    return "\n".join(md)


def teacher_summary(rep: dict) -> str:
    lines = [f"trained {rep['name']} in {rep['train_seconds']:.0f} s (best epoch {rep['best_epoch']})",
             f"{'':>12} {'warm nDCG@10':>13} {'warm R@20':>10} {'cold nDCG@10':>13}"]
    for name, key in (("zero-shot", "zero_shot"), ("teacher", "teacher")):
        r = rep[key]
        # no cold-test users (no item first seen late enough in this split): no figure, not a zero
        cold = f"{r['cold']['ndcg@10']:13.4f}" if "ndcg@10" in r["cold"] else f"{'-':>13}"
        lines.append(f"{name:>12} {r['test'].get('ndcg@10', 0):13.4f} {r['test'].get('recall@20', 0):10.4f} {cold}")
    zs, te = rep["zero_shot"], rep["teacher"]
    if "ndcg@10" not in te["cold"]:
        lines.append("(cold: this split has no cold-test items, so nothing measures new items)")
    elif te["cold"]["ndcg@10"] < zs["cold"].get("ndcg@10", 0.0):
        lines.append("(cold: the trained teacher ranks this split's new items below the untrained encoder; on "
                     "ml-100k one film decides that column: README, results section)")
    if te["test"].get("ndcg@10", 0.0) < zs["test"].get("ndcg@10", 0.0):
        # said plainly: a newcomer's own data can train to less than the pretrained encoder knows
        lines.append("(warm: training did not beat the untrained encoder on this data; see what tuned CF reaches "
                     "with `genre eval baselines --data <your data>`, and try more [train] epochs or more data)")
    return "\n".join(lines)


def quality_table(manifest) -> str:
    """The export's quality/speed table of a bundle manifest (teacher, fp32 and every variant)."""
    rows = [{"model": k, **v} for k, v in manifest.quality.rows.items()]
    return markdown_table(rows, ["model", "ndcg@10", "ndcg_kept", "cold_ndcg@10", "cold_kept", "recall@20",
                                 "request_p@10", "request_kept", "cos_mean", "cos_min", "latency_ms", "speedup"])
