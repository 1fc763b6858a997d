"""JSON + Markdown report writing, shared by evaluation, export and benchmarks."""
from __future__ import annotations

import math
from pathlib import Path

from .fsutil import atomic_write_json, atomic_write_text


def fmt(v, digits=4) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(rows: list[dict], columns: list[str], headers: list[str] | None = None) -> str:
    headers = headers or columns
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        out.append("| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(out) + "\n"


def write_report(out_dir: str | Path, stem: str, payload: dict, markdown: str) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    j, m = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    atomic_write_json(j, payload)
    atomic_write_text(m, markdown)
    return j, m
