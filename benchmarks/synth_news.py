"""A synthetic news log in MIND format, where what is trending decides most clicks.

    python benchmarks/synth_news.py --out /tmp/news --users 3000 --items 4000 --days 7

No news data set can be fetched here (MIND is under Microsoft's research license), so this makes one
with the property that sinks recommenders on news: stories live for hours, and most clicks go to what is
fresh and popular *now*, some to what a reader likes. Each story has a publication time, an appeal and
a category/subcategory whose words make up its title and abstract (so text carries the taste part).
Readers arrive in sessions; each session shows ~15 fresh stories drawn by current attention (appeal x
exp(-age / lifetime)), and the reader clicks each with a probability that mixes that attention with
their taste for its category. ``news.tsv`` and ``behaviors.tsv`` are written as MIND writes them
(history = the reader's earlier clicks), so ``genre train`` reads the folder with ``format = "mind"``.

It is a test bed for mechanisms (does a model follow what is trending?), not a stand-in for the
quality on real news.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

import numpy as np

CATS = {
    "sports": ["football", "league", "coach", "season", "match", "goal", "injury", "playoff", "transfer", "stadium"],
    "finance": ["market", "stocks", "rates", "inflation", "earnings", "bank", "investors", "bonds", "profit", "shares"],
    "politics": ["senate", "election", "vote", "policy", "campaign", "governor", "bill", "congress", "debate", "poll"],
    "health": ["doctors", "study", "vaccine", "hospital", "patients", "diet", "sleep", "virus", "heart", "therapy"],
    "tech": ["startup", "phone", "software", "chip", "robot", "app", "privacy", "cloud", "launch", "hackers"],
    "travel": ["flights", "beach", "hotel", "island", "cruise", "airport", "passport", "resort", "trail", "tourists"],
    "food": ["recipe", "chef", "restaurant", "dinner", "baking", "cheese", "wine", "pasta", "dessert", "grill"],
    "weather": ["storm", "snow", "heat", "forecast", "flood", "hurricane", "rain", "winds", "drought", "tornado"],
    "movies": ["film", "actor", "director", "trailer", "premiere", "box", "sequel", "festival", "oscar", "studio"],
    "music": ["album", "singer", "tour", "concert", "band", "song", "charts", "rapper", "guitar", "grammy"],
    "autos": ["car", "electric", "recall", "truck", "engine", "dealer", "mileage", "sedan", "crash", "battery"],
    "science": ["space", "planet", "fossil", "climate", "telescope", "species", "ocean", "physics", "moon", "rocket"],
}
COMMON = ["new", "report", "says", "after", "first", "year", "week", "big", "top", "could", "people", "plan"]


def make(out: Path, users: int, items: int, days: float, sessions_per_user: float, lifetime_h: float,
         trend: float, taste: float, seed: int, appeal_sd: float = 1.5) -> dict:
    """Write ``news.tsv`` and ``behaviors.tsv`` under ``out`` (atomically, folder by folder); returns counts."""
    rng = np.random.default_rng(seed)
    cats = list(CATS)
    span = days * 86400.0
    pub = np.sort(rng.uniform(0, span, items))
    appeal = rng.lognormal(0.0, appeal_sd, items)  # a few stories get most of the attention
    cat = rng.integers(0, len(cats), items)
    sub = rng.integers(0, 3, items)
    life = lifetime_h * 3600.0
    taste_u = rng.dirichlet(np.full(len(cats), 0.3), users)  # most readers care for 2-3 sections
    n_sess = rng.poisson(sessions_per_user, users) + 1
    t0 = dt.datetime(2019, 11, 9, tzinfo=dt.timezone.utc).timestamp()

    news = []
    for i in range(items):
        words = CATS[cats[cat[i]]]
        w = rng.choice(words, 3, replace=False).tolist() + rng.choice(COMMON, 2, replace=False).tolist()
        rng.shuffle(w)
        title = " ".join(w).capitalize()
        abstract = " ".join(rng.choice(words + COMMON, 10).tolist()).capitalize() + "."
        news.append(f"N{i}\t{cats[cat[i]]}\t{cats[cat[i]]}-{sub[i]}\t{title}\t{abstract}\thttps://example.org/N{i}\t[]\t[]\n")

    events = []  # (time, user)
    for u in range(users):
        for t in rng.uniform(span * 0.05, span, n_sess[u]):
            events.append((t, u))
    events.sort()
    hist: list[list[int]] = [[] for _ in range(users)]
    rows, clicks = [], 0
    for k, (t, u) in enumerate(events):
        live = np.searchsorted(pub, t, "right")  # published so far
        lo = np.searchsorted(pub, t - 4 * life)
        if live - lo < 20:
            continue
        cand = np.arange(lo, live)
        att = appeal[cand] * np.exp(-(t - pub[cand]) / life)
        p = att / att.sum()
        shown = rng.choice(cand, min(15, len(cand)), replace=False, p=p)
        a = att[np.searchsorted(cand, shown)]
        logit = trend * np.log(a / att.max() + 1e-9) + taste * np.log(taste_u[u, cat[shown]] * len(cats) + 1e-3) - 1.0
        clicked = rng.random(len(shown)) < 1 / (1 + np.exp(-logit))
        if not clicked.any():
            clicked[rng.integers(len(shown))] = True  # MIND keeps impressions with a click
        stamp = dt.datetime.fromtimestamp(t0 + t, dt.timezone.utc).strftime("%m/%d/%Y %I:%M:%S %p")
        imps = " ".join(f"N{i}-{int(c)}" for i, c in zip(shown, clicked))
        rows.append(f"I{k}\tU{u}\t{stamp}\t{' '.join(f'N{i}' for i in hist[u][-50:])}\t{imps}\n")
        hist[u].extend(int(i) for i in shown[clicked])
        clicks += int(clicked.sum())
    out.mkdir(parents=True, exist_ok=True)
    for name, lines in (("news.tsv", news), ("behaviors.tsv", rows)):
        tmp = out / f".{name}.tmp"
        tmp.write_text("".join(lines), encoding="utf-8")
        os.replace(tmp, out / name)
    return {"items": items, "users": users, "impressions": len(rows), "clicks": clicks}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="folder to write news.tsv and behaviors.tsv into")
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--items", type=int, default=3000)
    ap.add_argument("--days", type=float, default=14.0)
    ap.add_argument("--sessions", type=float, default=20.0, help="mean sessions per reader")
    ap.add_argument("--lifetime-hours", type=float, default=24.0, help="how fast a story's attention fades")
    ap.add_argument("--trend", type=float, default=1.0, help="weight of current attention in a click")
    ap.add_argument("--taste", type=float, default=1.0, help="weight of the reader's taste for the section")
    ap.add_argument("--appeal-sd", type=float, default=1.5, help="spread (log-normal sd) of stories' appeal")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    for name in ("users", "items"):
        if getattr(a, name) < 1:
            ap.error(f"--{name} must be >= 1")
    if a.days <= 0 or a.lifetime_hours <= 0:
        ap.error("--days and --lifetime-hours must be > 0")
    print(make(a.out, a.users, a.items, a.days, a.sessions, a.lifetime_hours, a.trend, a.taste, a.seed, a.appeal_sd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
