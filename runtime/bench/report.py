"""JSON + Markdown report writing, shared by evaluation, export and benchmarks."""
from __future__ import annotations

import math
from pathlib import Path

from ..fsutil import atomic_write_json, atomic_write_text


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


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None with a warning when the 'bench' extra is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        import logging

        logging.getLogger(__name__).warning("matplotlib not installed (pip install 'genre-edge[bench]'): no PNG chart")
        return None
    return plt


def save_png(fig, path: str | Path) -> None:
    """Write ``fig`` as a PNG atomically (a chart is never half-written) and close it."""
    import io

    from ..fsutil import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    fig.clf()
    import matplotlib.pyplot as plt

    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def write_results(out_dir: str | Path, stem: str, payload: dict, markdown: str, chart=None) -> Path:
    """``<stem>.json`` + ``<stem>.md`` (+ ``<stem>.png`` from ``chart(payload, path)``) in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_report(out, stem, payload, markdown)
    if chart is not None:
        chart(payload, out / f"{stem}.png")
    return out
