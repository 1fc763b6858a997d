"""Free-text requests with objective ground truth, generated from a catalog's metadata.

Every request is built from templates and phrase lists over the catalog's categories (by name, by a
synonym, or by mood words: "light and funny" -> Comedy), decades and years ("90s", "the nineties",
"before 1980"), and negations ("no horror"); its relevant items are those whose metadata match
(all required categories, none of the excluded ones, year in range). Only requests with at least
``min_relevant`` matching items are kept, so precision@10 = 1 is reachable.

Templates and mood phrases are dealt round-robin into three disjoint parts — ``train`` (what
distillation may read), ``valid`` (the export's quality gate) and ``test`` (the request benchmark) —
so a benchmark request never shares a template or a mood phrase with a distillation text.
"""
from __future__ import annotations

import re

from dataclasses import dataclass

import numpy as np

from genre_edge.query_parser import QueryParser

from .vocabulary import vocabulary

PARTS = ("train", "valid", "test")

# Mood words per category: what people say instead of the category's name. None of these is a
# category name or synonym of the parser's vocabulary, so these requests test the encoder.
MOODS: dict[str, tuple[str, ...]] = {
    "Comedy": ("light and funny", "hilarious", "something to make me laugh out loud", "silly and lighthearted",
               "a real laugh riot", "witty and amusing"),
    "Horror": ("scary", "terrifying and creepy", "something that will give me nightmares", "spooky and frightening",
               "gory and disturbing", "full of monsters and ghosts"),
    "Thriller": ("suspenseful and tense", "edge-of-your-seat", "full of suspense and twists", "nail-biting",
                 "gripping and tense", "a tense cat-and-mouse chase"),
    "Romance": ("a love story", "about falling in love", "sweet and heartwarming about a couple", "about lovers",
                "a tender love affair", "about a relationship and a wedding"),
    "Children's": ("suitable for a six-year-old", "for little ones", "family friendly for young viewers",
                   "that a child would enjoy", "gentle enough for toddlers", "for a family movie night with small kids"),
    "Animation": ("hand-drawn", "made by Disney or Pixar", "with drawn characters", "computer animated with talking toys",
                  "stop-motion", "with animated talking animals"),
    "Sci-Fi": ("set in space", "about robots and the future", "with aliens and spaceships", "about time travel",
               "futuristic and dystopian", "about an alien invasion"),
    "War": ("about soldiers in battle", "set on a battlefield", "about a platoon at the front", "about World War II",
            "about the Vietnam war veterans", "about generals and armies"),
    "Western": ("with cowboys and gunfights", "set in the wild west", "with outlaws and sheriffs", "on the frontier",
                "with a showdown at high noon", "about ranchers and gunslingers"),
    "Crime": ("about gangsters and the mob", "a heist with criminals", "about a mafia family", "about cops and robbers",
              "about a bank robbery", "about drug dealers"),
    "Musical": ("with lots of singing and dancing", "full of song and dance numbers", "a Broadway show on film",
                "where everyone bursts into song", "with show tunes", "with a big dance finale"),
    "Documentary": ("about real events with interviews", "non-fiction footage of real life", "factual and real",
                    "a true story told by the people who lived it", "filmed reality", "investigative journalism on film"),
    "Mystery": ("a whodunit", "with a detective solving a puzzle", "about an unsolved murder", "with clues and a twist",
                "about a private eye", "a puzzling investigation"),
    "Action": ("explosive with car chases", "packed with fights and stunts", "high octane", "with shootouts and explosions",
               "adrenaline-fuelled", "with martial arts fights"),
    "Adventure": ("an epic quest", "a journey to exotic lands", "about treasure hunters", "a swashbuckling voyage",
                  "an expedition into the jungle", "about explorers"),
    "Drama": ("emotional and moving", "a serious tearjerker", "a moving character study", "heartbreaking and serious",
              "about family struggles", "thought-provoking and serious"),
    "Fantasy": ("with magic and wizards", "with dragons and sorcery", "set in a magical kingdom", "a fairy tale",
                "with elves and enchanted forests", "about a magic spell"),
    "Film-Noir": ("shadowy with hard-boiled detectives", "with femme fatales", "dark, black-and-white crime from the forties",
                  "hard-boiled and cynical", "with a trench-coated private eye", "moody and shadowy"),
}
# phrases a request uses for a category by name (the parser knows these, so such requests are reducible)
NAMES: dict[str, tuple[str, str]] = {  # category -> (singular, plural)
    "Comedy": ("comedy", "comedies"), "Horror": ("horror film", "horror films"), "Thriller": ("thriller", "thrillers"),
    "Romance": ("romance", "romances"), "Children's": ("children's film", "kids' movies"),
    "Animation": ("animated film", "animated movies"), "Sci-Fi": ("sci-fi film", "science fiction movies"),
    "War": ("war movie", "war films"), "Western": ("western", "westerns"), "Crime": ("crime film", "crime movies"),
    "Musical": ("musical", "musicals"), "Documentary": ("documentary", "documentaries"),
    "Mystery": ("mystery", "mysteries"), "Action": ("action movie", "action films"),
    "Adventure": ("adventure film", "adventure movies"), "Drama": ("drama", "dramas"),
    "Fantasy": ("fantasy film", "fantasy movies"), "Film-Noir": ("film noir", "noir films"),
}
DECADE_WORDS = {20: "twenties", 30: "thirties", 40: "forties", 50: "fifties", 60: "sixties", 70: "seventies",
                80: "eighties", 90: "nineties"}

_TIME_WORDS = re.compile(r"\b(?:1[89]\d\d|'?\d0s|twenties|thirties|forties|fifties|sixties|seventies|eighties|nineties)\b")

# {c}/{cs}: a category by name (singular/plural); {m}: mood words; {d}: a decade or year phrase; {x}: excluded
TEMPLATES: dict[str, tuple[str, ...]] = {
    "name": ("a {c}", "some good {cs}", "show me {cs}", "I want to watch a {c} tonight", "any {cs} you'd recommend?",
             "recommend a {c}", "in the mood for a {c}", "a great {c} please", "{cs}"),
    "mood": ("something {m}", "a movie {m}", "I'd like a film {m}", "looking for something {m}", "a film that is {m}",
             "give me something {m} to watch", "what should I watch? something {m}", "tonight I want {m}",
             "a {m} one"),
    "decade": ("a film {d}", "movies {d}", "something {d}", "what's good {d}?", "a classic {d}", "show me films {d}",
               "anything {d}", "a great movie {d}", "I'd like an old favourite {d}"),
    "name+decade": ("a {c} {d}", "{cs} {d}", "show me {cs} {d}", "a good {c} {d}", "any {cs} {d}?",
                    "I want a {c} {d}", "recommend {cs} {d}", "looking for a {c} {d}", "a {c} made {d}"),
    "mood+decade": ("something {m} {d}", "a film {m} {d}", "I'd like something {m} {d}", "a movie {m}, {d}",
                    "looking for something {m} {d}", "anything {m} {d}", "show me something {m} {d}",
                    "give me something {m} {d}", "a classic {m} {d}"),
    "negation": ("a {c}, but no {x}", "{cs} but not {x}", "a {c} without {x}", "{cs}, no {x} please",
                 "I want a {c}, anything but {x}", "a {c} that is not a {x}", "some {cs}, no {x}",
                 "{cs} without any {x}", "a {c} but nothing {x}"),
}


class CategoryMembers:
    """Which catalog items carry each category, one bool array per category: built once per catalog, so that
    :meth:`GeneratedRequest.relevant` over thousands of requests is array work (it was a Python loop over every
    item per request: 20 s of the demo's distillation here, generating the training requests)."""

    def __init__(self, categories: list):
        self.n = len(categories)
        rows: dict[str, list[int]] = {}
        for i, cs in enumerate(categories):
            for c in set(cs):
                rows.setdefault(c, []).append(i)
        self._has = {}
        for c, r in rows.items():
            self._has[c] = np.zeros(self.n, bool)
            self._has[c][r] = True
        self._none = np.zeros(self.n, bool)
        for a in (*self._has.values(), self._none):  # shared by every request: a caller cannot write into them
            a.flags.writeable = False

    def has(self, category: str) -> np.ndarray:
        """Bool per item: does it carry ``category``? (read-only; all False for a category no item has)"""
        return self._has.get(category, self._none)


@dataclass(frozen=True)
class GeneratedRequest:
    text: str
    kind: str  # a TEMPLATES key
    part: str  # train / valid / test
    require: tuple[str, ...] = ()  # relevant items have all of these categories
    exclude: tuple[str, ...] = ()  # and none of these
    years: tuple[int, int] | None = None  # and a year in this range

    def relevant(self, categories: "list | CategoryMembers", years: np.ndarray) -> np.ndarray:
        """Bool per catalog item: does its metadata match this request? ``categories``: each item's list, or
        the catalog's :class:`CategoryMembers` (faster, for many requests)."""
        m = categories if isinstance(categories, CategoryMembers) else CategoryMembers(categories)
        ok = np.ones(m.n, bool)
        for c in self.require:
            ok &= m.has(c)
        for c in self.exclude:
            ok &= ~m.has(c)
        if self.years is not None:
            ok &= (years >= self.years[0]) & (years <= self.years[1])
        return ok

    def to_dict(self) -> dict:
        return {"text": self.text, "kind": self.kind, "part": self.part, "require": list(self.require),
                "exclude": list(self.exclude), "years": list(self.years) if self.years else None}


def _decade_phrases(decade: int) -> list[tuple[str, tuple[int, int]]]:
    """Ways to say a decade (or a bound around it) and the years each means."""
    d2 = decade % 100
    out = [(f"from the {d2}s", (decade, decade + 9)), (f"from the {decade}s", (decade, decade + 9)),
           (f"made in the {d2}s", (decade, decade + 9)), (f"from the '{d2}s", (decade, decade + 9))]
    if d2 in DECADE_WORDS:
        out.append((f"from the {DECADE_WORDS[d2]}", (decade, decade + 9)))
    out += [(f"from before {decade}", (0, decade - 1)), (f"released after {decade + 9}", (decade + 10, 9999)),
            (f"from the late {d2}s", (decade + 6, decade + 9)), (f"from {decade + 5}", (decade + 5, decade + 5))]
    return out


def generate(categories: list, years: np.ndarray, min_relevant: int = 10, per_kind: int = 400,
             seed: int = 0) -> list[GeneratedRequest]:
    """Requests for a catalog (``categories`` per item, ``years`` per item), at most ``per_kind`` of each
    kind and part, each with at least ``min_relevant`` relevant items."""
    rng = np.random.default_rng(seed)
    years = np.asarray(years)
    members = CategoryMembers(categories)
    have = sorted({c for cs in categories for c in cs})
    cats = [c for c in have if c in NAMES]
    decades = sorted({int(y) // 10 * 10 for y in years if y > 0})
    dphr = [p for d in decades for p in _decade_phrases(d)]
    out: list[GeneratedRequest] = []
    seen = set()

    def add(text, kind, part, require=(), exclude=(), yr=None):
        r = GeneratedRequest(text, kind, part, tuple(require), tuple(exclude), yr)
        if text in seen or r.relevant(members, years).sum() < min_relevant:
            return 0
        seen.add(text)
        out.append(r)
        return 1

    for kind, templates in TEMPLATES.items():
        combos = []
        for ti, t in enumerate(templates):
            part = PARTS[ti % 3]  # template ti belongs to one part, and so do the mood phrases it is paired with
            for c in (cats if any(f in t for f in ("{c", "{m}", "{x}")) else [None]):
                moods = [m for mi, m in enumerate(MOODS.get(c, ())) if mi % 3 == ti % 3] if "{m}" in t else [None]
                for m in moods:
                    for dp, yr in (dphr if "{d}" in t else [(None, None)]):
                        for x in ([x for x in cats if x != c] if "{x}" in t else [None]):
                            combos.append((t, part, c, m, dp, yr, x))
        counts = {p: 0 for p in PARTS}
        for i in rng.permutation(len(combos)):
            t, part, c, m, dp, yr, x = combos[i]
            if counts[part] >= per_kind or (dp and m and _TIME_WORDS.search(m)):
                # a mood phrase that names a period ("crime from the forties") next to another period made a
                # request no reader could satisfy ("... from the forties released after 1949"); skipped here,
                # not left out of ``combos``, so the requests drawn otherwise stay the same
                continue
            sing, plur = NAMES.get(c, (None, None))
            text = t.format(c=sing, cs=plur, m=m, d=dp, x=NAMES[x][0] if x else None)
            counts[part] += add(text, kind, part, (c,) if c else (), (x,) if x else (), yr)
    return out


def for_items(items: dict, part: str, per_kind: int) -> list[GeneratedRequest]:
    """The requests of ``part`` for a model folder's ``items.json`` (categories and years)."""
    return [r for r in generate(items["categories"], np.asarray(items["year"]), per_kind=per_kind) if r.part == part]


def encoder_texts(items: dict, part: str, per_kind: int, query_parser=None) -> list[str]:
    """What the device's encoder reads for the requests of ``part``: each request's text and, where the
    request parser takes constraints out, the rest it embeds (``query_parser``: the training config's)."""
    reqs = for_items(items, part, per_kind)
    years = [y for y in items["year"] if y > 0]
    parser = QueryParser(vocabulary([c for cs in items["categories"] for c in cs], query_parser).vocabulary,
                         (min(years), max(years)) if years else None)
    texts = [r.text for r in reqs]
    return texts + sorted({p.text for p in map(parser.parse, texts) if p.text} - set(texts))
