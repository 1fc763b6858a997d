"""A deterministic parser for free-text requests: explicit constraints become filters, the rest is embedded.

"a comedy from the 90s, no romance" -> categories all of {Comedy}, none of {Romance}, years 1990-1999,
nothing left to embed. "something light and funny from the 80s" -> years 1980-1989, "something light
and funny" embedded. What it understands:

- decades ("90s", "1990s", "'90s", "the nineties", "early/mid/late 80s"), years ("in 1995", "from 1995"),
  ranges ("1985-1990", "between 1985 and 1990", "from 1985 to 1990"), bounds ("before 1980", "after the
  80s", "since 1990", "pre-1970", "older than 1960", "newer than 1995");
- the catalog's category names and their synonyms (the bundle's vocabulary: ``Comedy`` <- "comedy",
  "comedies", "comedic"); categories joined by "or" are any-of, otherwise all-of ("a romantic comedy"
  is Romance and Comedy);
- negations ("no horror", "not a comedy", "without romance", "anything but westerns", "non-fiction"
  style prefixes are not categories) of categories and of decades ("not from the 90s").

Why a parser and not only the embedding: a sentence embedding blurs "from the 80s" into a film's overall
similarity (measured: "a romantic comedy from the 80s" returned films from 1977, 1990 and 1994), while a
filter is exact, costs microseconds, and says what it understood. Mood words ("light and funny",
"scary") stay with the embedding, which is what it is good at.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .errors import RequestError
from .item_columns import fold

NEGATIONS = ("no", "not", "without", "except", "excluding", "exclude", "but not", "anything but", "nothing",
             "never", "avoid", "skip", "other than", "none of", "minus", "non", "don't", "dont", "doesn't",
             "won't", "hate", "dislike")
# words that may stand between a negation and what it negates ("no more horror", "don't want to see horror",
# "not into westerns"); "I don't mind horror" keeps horror (mind is not among them)
_NEG_GAP = ("a|an|the|any|more|from|in|made|of|want|wanna|like|need|see|watch|to|with|into|anything|something|"
            "too|much|really|movie|movies|film|films")
WORD_DECADES = {"twenties": 20, "thirties": 30, "forties": 40, "fifties": 50, "sixties": 60, "seventies": 70,
                "eighties": 80, "nineties": 90}
# words that carry no meaning of their own once the constraints are taken out of a request
FILLER = frozenset("""a an the some any something anything one ones film films movie movies show shows
picture pictures flick flicks title titles from in of made released during or and but with to me please
i i'd id want would like watch see give recommend find get let us good great nice new old year years era
decade decades kind sort type genre genres category categories maybe perhaps tonight today now for that
is are was be which who set style feel vibe time times vintage classic classics era's also just only
really very pretty quite bit little more most best top do does did""".split())

# Well-known category names (MovieLens genres, MIND news categories) and what else users call them.
# Where a name form would catch other words (War: "wars" is in "Star Wars"), the phrases are listed in full.
KNOWN_PHRASES: dict[str, tuple[str, ...]] = {
    "Sci-Fi": ("sci-fi", "sci fi", "scifi", "science fiction", "science-fiction"),
    "Romance": ("romance", "romances", "romantic"),
    "Animation": ("animation", "animated", "cartoon", "cartoons"),
    "Children's": ("children's", "childrens", "children", "kids", "kid's"),
    "Film-Noir": ("film-noir", "film noir", "noir"),
    "Documentary": ("documentary", "documentaries"),
    "War": ("war", "war film", "war films", "war movie", "war movies"),
    "Comedy": ("comedy", "comedies", "comedic"),
    "autos": ("autos", "cars", "car news"),
    "foodanddrink": ("food and drink", "food", "recipes", "cooking"),
    "tv": ("tv", "television", "tv shows"),
    "finance": ("finance", "money", "markets"),
    "lifestyle": ("lifestyle",),
    "middleeast": ("middle east",),
    "northamerica": ("north america",),
}


_YEAR = r"(1[89]\d\d|20\d\d)"
_DECADE = (r"(?:the\s+)?(?:(early|mid|late)[\s-]+)?(?:(1[89]|20)(\d)0'?s|'?(\d)0'?s|("
           + "|".join(WORD_DECADES) + r"))")


@dataclass(frozen=True)
class ParsedQuery:
    """What a request's text asked for: constraints (filters) and the text left to embed."""
    text: str  # the rest, to embed ("" when nothing meaningful is left)
    require_categories: tuple[str, ...] = ()  # all of these
    include_categories: tuple[str, ...] = ()  # any of these ("comedy or drama")
    exclude_categories: tuple[str, ...] = ()
    year_min: int | None = None
    year_max: int | None = None
    exclude_years: tuple[tuple[int, int], ...] = ()  # "not from the 90s"
    matched: tuple[str, ...] = field(default=(), compare=False)  # the phrases taken as constraints
    # catalog items the query named as examples ("movies like Star Wars"): their ids (the recommender centres
    # the answer on them and leaves them out of it) and their titles for the summary
    like: tuple[str, ...] = ()
    like_titles: tuple[str, ...] = field(default=(), compare=False)
    # and as counter-examples ("nothing like Star Wars"): left out of the results
    unlike: tuple[str, ...] = ()
    unlike_titles: tuple[str, ...] = field(default=(), compare=False)

    @property
    def has_constraints(self) -> bool:
        return bool(self.require_categories or self.include_categories or self.exclude_categories
                    or self.year_min is not None or self.year_max is not None or self.exclude_years)

    def summary(self) -> str:
        """Human-readable: "year 1990-1999, category Comedy, not Horror"."""
        parts = []
        if self.year_min is not None or self.year_max is not None:
            lo, hi = self.year_min, self.year_max
            parts.append(f"year {lo}-{hi}" if lo is not None and hi is not None
                         else f"year >= {lo}" if lo is not None else f"year <= {hi}")
        parts += [f"not years {a}-{b}" for a, b in self.exclude_years]
        if self.require_categories:
            parts.append(("categories " if len(self.require_categories) > 1 else "category ")
                         + " and ".join(self.require_categories))
        if self.include_categories:
            parts.append("category " + " or ".join(self.include_categories))
        if self.exclude_categories:
            parts.append("not " + ", ".join(self.exclude_categories))
        if self.like_titles:
            parts.append("like " + ", ".join(self.like_titles))
        if self.unlike_titles:
            parts.append("not like " + ", ".join(self.unlike_titles))
        if self.text:
            parts.append(f"text {self.text!r}")
        return ", ".join(parts) or "nothing to filter on"

    def to_dict(self) -> dict:
        return {"text": self.text, "require_categories": list(self.require_categories),
                "include_categories": list(self.include_categories),
                "exclude_categories": list(self.exclude_categories), "year_min": self.year_min,
                "year_max": self.year_max, "exclude_years": [list(r) for r in self.exclude_years],
                "like": list(self.like), "unlike": list(self.unlike), "summary": self.summary()}


# "like X": the phrases that introduce an example item, and what may not stand before them ("nothing like")
# ("I'd like a comedy", "would like ..." are wishes, not comparisons)
LIKE_PHRASE = re.compile(r"(?<![\w'])(?:(?<!'d\s)(?<!would\s)like|similar to|in the (?:style|vein) of|reminds? me of|"
                         r"as good as|such as)\s+")
_NOT_LIKE = re.compile(r"(?<![\w'])(?:not|nothing|no|never|don't|dont|isn't|doesn't)\s+(?:\w+\s+)?$")
_TITLE_WORD = re.compile(r"[^\s,;!?]+")
_AND = re.compile(r"\s*(?:,\s*(?:and\s+|or\s+)?|\s(?:and|or|&)\s+)")
MAX_TITLE_WORDS = 8


def title_key(title: str) -> str:
    """A title as a request would say it: lower case without accents (item_columns.fold: "amelie" is
    "Amélie"), without a trailing year, a leading or moved article ("Godfather, The" and "the godfather"
    are both "godfather") or punctuation."""
    t = re.sub(r"\s*\(\d{4}\)\s*$", "", fold(title).replace("’", "'"))
    t = re.sub(r",\s*(?:the|a|an)\s*$", "", t)
    t = re.sub(r"^(?:the|a|an)\s+", "", t.strip())
    return " ".join(re.findall(r"[^\W_]+", t))


def title_keys(title: str) -> set[str]:
    """The :func:`title_key` forms a title answers to: as a whole, and without or as its parenthesised
    alternative ("Seven (Se7en)": "seven se7en", "seven", "se7en"; "Metisse (Café au Lait)": "cafe au lait")."""
    base = re.sub(r"\s*\(\d{4}\)\s*$", "", title)
    keys = {title_key(base)}
    m = re.fullmatch(r"\s*(.+?)\s*\(([^()]+)\)\s*", base)
    if m:
        keys |= {title_key(m.group(1)), title_key(m.group(2))}
    return keys - {""}


def named_items(query: str, find) -> tuple[list, list, str]:
    """Items a query names as examples ("movies like Star Wars", "similar to The Godfather or Alien") or as
    counter-examples ("nothing like Star Wars"), and the query without those phrases (lower case, as the
    parser reads it). ``find(key)`` returns the item whose :func:`title_key` is ``key``, or None; after
    "like" the longest run of words naming an item wins. Returns ``([item, ...], [item, ...], rest)``."""
    low = query.lower().replace("’", "'")
    found, unlike, cuts = [], [], []
    for m in LIKE_PHRASE.finditer(low):
        if any(a <= m.start() < b for a, b in cuts):
            continue
        neg = _NOT_LIKE.search(low[:m.start()])
        into = unlike if neg else found
        pos, start = m.end(), (neg.start() if neg else m.start())
        while True:
            words = [w for _, w in zip(range(MAX_TITLE_WORDS), _TITLE_WORD.finditer(low, pos))]
            hit = None
            for w in reversed(words):
                key = title_key(low[pos:w.end()])
                item = find(key) if key else None
                if item is not None:
                    hit = (item, w.end())
                    break
            if hit is None:
                break
            into.append(hit[0])
            cuts.append((start, hit[1]))
            more = _AND.match(low, hit[1])
            if more is None:
                break
            start, pos = hit[1], more.end()
    rest = low
    for a, b in sorted(cuts, reverse=True):
        rest = rest[:a] + " " + rest[b:]
    return found, unlike, rest


def default_phrases(category: str) -> tuple[str, ...]:
    """Forms of a category name a request may use: "Sci-Fi" -> "sci-fi", "sci fi", "scifi";
    "Comedy" -> "comedy", "comedies"; "Children's" -> "children's", "childrens", "children"."""
    base = category.lower().strip()
    forms = {base, base.replace("-", " "), base.replace("-", ""), base.replace("'", ""), base.replace("'s", "")}
    words = base.replace("-", " ").split()
    if words and words[-1].isalpha() and len(words[-1]) > 2 and not words[-1].endswith("s"):
        last = words[-1]
        plural = last[:-1] + "ies" if last.endswith("y") and last[-2] not in "aeiou" else last + "s"
        forms.add(" ".join(words[:-1] + [plural]))
    return tuple(sorted(f for f in forms if f))


def category_phrases(category: str, known: bool = True) -> tuple[str, ...]:
    """The phrases of :data:`KNOWN_PHRASES` for a well-known category (with ``known``), else its name forms."""
    return KNOWN_PHRASES[category] if known and category in KNOWN_PHRASES else default_phrases(category)


# the playground's example instructions for a film catalog (one with Comedy, Romance and Drama)
FILM_EXAMPLES = ("something light and funny from the 90s, no horror", "like Star Wars, but funnier")


def example_instructions(category_counts, years: np.ndarray) -> tuple[str, ...]:
    """Instructions in a catalog's own terms, for a client to offer (the playground's placeholder, the
    quickstart's step 5): "something <its most common category> from <its most common decade>" and
    "<the second>, no <the third>", what the request parser turns into filters. ``category_counts``: items per
    category (a Counter or dict); ``years``: the items' years (0 = unknown). A film catalog gets FILM_EXAMPLES.
    (A music catalog's page suggested "like Star Wars, but funnier".)"""
    from collections import Counter

    counts = Counter(category_counts)
    if {"Comedy", "Romance", "Drama"} <= set(counts):
        return FILM_EXAMPLES
    # ties by name: the catalog and the data set list categories in different orders, and must offer the same
    cats = sorted(counts, key=lambda c: (-counts[c], c.casefold(), c))[:3]
    years = np.asarray(years, np.int64)
    per_decade = np.bincount(years[years > 0] // 10)  # counted in numpy: a catalog may hold millions of items
    decade = None
    if per_decade.any():
        d = int(per_decade.argmax()) * 10  # the earliest of tied decades
        decade = f"the {d % 100:02d}s" if 1900 <= d < 2000 else f"the {d}s"
    first = " ".join(w for w in ("something", cats[0].lower() if cats else "", f"from {decade}" if decade else "") if w)
    out = [first] if first != "something" else []
    if len(cats) >= 3:
        out.append(f"{cats[1].lower()}, no {cats[2].lower()}")
    return tuple(out)


class QueryParser:
    """Built once per bundle from its vocabulary (category -> phrases); :meth:`parse` is pure and fast."""

    def __init__(self, vocabulary: dict[str, tuple[str, ...]], years: tuple[int, int] | None = None,
                 dates: bool = True):
        self.vocabulary = {c: tuple(sorted({p.lower().strip() for p in ps if p.strip()})) for c, ps in vocabulary.items()}
        self.phrase_to_cat: dict[str, str] = {}
        for cat, phrases in self.vocabulary.items():
            for p in phrases:
                self.phrase_to_cat.setdefault(p, cat)
        # the catalog's years decide the century of a two-digit decade ("20s": 1920s or 2020s)
        self.years = years
        # False for a catalog whose items have no years: "from the 90s" would filter out every item, so its
        # words stay in the text the encoder reads
        self.dates = dates
        neg = "|".join(re.escape(n) for n in sorted(NEGATIONS, key=len, reverse=True))
        cats = "|".join(re.escape(p) for p in sorted(self.phrase_to_cat, key=len, reverse=True)) or r"(?!x)x"
        # a negation, then up to four words ("no more horror", "not a comedy", "I don't want to see any
        # horror": articles, a verb of wanting and its particles), then the thing negated
        self._neg = re.compile(rf"\b(?:{neg})\b[\s-]+(?:(?:{_NEG_GAP})\s+){{0,4}}$")
        self._cat = re.compile(rf"(?<![\w])({cats})(?![\w])")
        self._range = re.compile(rf"\b(?:between\s+{_YEAR}\s+and\s+{_YEAR}|(?:from\s+)?{_YEAR}\s*(?:-|–|to|through|until)\s*{_YEAR})\b")
        self._bound = re.compile(rf"\b(before|after|since|until|till|pre|post|older\s+than|newer\s+than|earlier\s+than|"
                                 rf"later\s+than|up\s+to|prior\s+to)[\s-]+(?:{_YEAR}\b|{_DECADE}(?![\w']))")
        self._decade = re.compile(rf"(?<![\w'-]){_DECADE}(?![\w'])")
        self._year = re.compile(rf"\b(?:(?:in|from|of|during|year|circa|around|released\s+in|made\s+in|an?)\s+{_YEAR}\b"
                                rf"|{_YEAR}(?=\s+(?:film|movie|picture|release|title)s?\b)"
                                rf"|(?:in|from|of|during|circa|around|released\s+in|made\s+in)\s+'(\d\d)(?![\w']))")
        # more years chained to one ("from 1995 or 1996", "in 1994, 1995 and 1997"): a union, as decades are
        self._year_more = re.compile(rf"\s*(?:,\s*(?:or\s+|and\s+)?|\s(?:or|and|&)\s+){_YEAR}\b")

    @classmethod
    def for_categories(cls, categories, synonyms: dict[str, tuple[str, ...]] | None = None,
                       years: tuple[int, int] | None = None, dates: bool = True) -> "QueryParser":
        """A parser for these category names: their :func:`category_phrases` plus ``synonyms``."""
        vocab = {c: category_phrases(c) + tuple((synonyms or {}).get(c, ())) for c in categories if c and c != "unknown"}
        return cls(vocab, years, dates)

    # ---------------------------------------------------------------- parsing
    def _decade_range(self, m, g: int) -> tuple[int, int]:
        """(first, last) year of the decade matched with groups starting at ``g``."""
        part, century, d3, d2, word = m.group(g), m.group(g + 1), m.group(g + 2), m.group(g + 3), m.group(g + 4)
        if century is not None:
            start = int(century) * 100 + int(d3) * 10
        else:
            tens = WORD_DECADES[word.lower()] if word else int(d2) * 10
            start = 1900 + tens
            if self.years and not (self.years[0] <= start + 9 and start <= self.years[1]) \
                    and self.years[0] <= 2000 + tens + 9 and 2000 + tens <= self.years[1]:
                start = 2000 + tens  # "the 10s" of a catalog of recent items
            elif not self.years and tens < 30:
                start = 2000 + tens
        lo, hi = start, start + 9
        if part:
            lo, hi = {"early": (start, start + 3), "mid": (start + 3, start + 6), "late": (start + 6, start + 9)}[part.lower()]
        return lo, hi

    def _century(self, yy: int) -> int:
        """The year a two-digit "'95" means: of 19yy and 20yy, the one in or nearer to the catalog's years (1995
        for films of the 1990s, 2015 for a catalog of recent items); without years, 19yy from '30 on."""
        if not self.years:
            return 2000 + yy if yy < 30 else 1900 + yy
        lo, hi = self.years
        return min((1900 + yy, 2000 + yy), key=lambda y: max(lo - y, 0, y - hi))  # the nearer to the catalog

    def _negation_at(self, text: str, start: int) -> int | None:
        """Where a negation governing the phrase at ``start`` begins (within 40 characters), or None."""
        m = self._neg.search(text[max(0, start - 40):start])
        return None if m is None else max(0, start - 40) + m.start()

    def parse(self, query: str) -> ParsedQuery:
        """Constraints and remaining text of ``query``. Contradictory constraints raise a RequestError."""
        text = " " + query.lower().replace("’", "'") + " "
        taken: list[tuple[int, int]] = []  # spans consumed by constraints (and their negation words)
        matched: list[str] = []
        lo, hi = None, None
        spans: list[tuple[int, int]] = []  # year ranges asked for (a union: "80s or 90s")
        excl_years: list[tuple[int, int]] = []

        def free(a, b):
            return not any(a < y and x < b for x, y in taken)

        def take(m, neg_start=None):
            a = m.start() if neg_start is None else neg_start
            taken.append((a, m.end()))
            matched.append(text[a:m.end()].strip())

        dated = self.dates
        for m in self._range.finditer(text) if dated else ():
            a, b = (int(m.group(1)), int(m.group(2))) if m.group(1) else (int(m.group(3)), int(m.group(4)))
            spans.append((min(a, b), max(a, b)))
            take(m)
        for m in self._bound.finditer(text) if dated else ():
            if not free(m.start(), m.end()):
                continue
            word = " ".join(m.group(1).split())
            if m.group(2):
                first = last = int(m.group(2))
            else:
                first, last = self._decade_range(m, 3)
            if word in ("before", "pre", "older than", "earlier than", "prior to"):
                hi = first - 1 if hi is None else min(hi, first - 1)
            elif word in ("after", "post", "newer than", "later than"):
                lo = last + 1 if lo is None else max(lo, last + 1)
            elif word == "since":
                lo = first if lo is None else max(lo, first)
            else:  # until, till, up to: inclusive
                hi = last if hi is None else min(hi, last)
            take(m)
        for m in self._decade.finditer(text) if dated else ():
            if not free(m.start(), m.end()):
                continue
            r = self._decade_range(m, 1)
            n = self._negation_at(text, m.start())
            (excl_years if n is not None else spans).append(r)
            take(m, n)
        for m in self._year.finditer(text) if dated else ():
            if free(m.start(), m.end()):
                y = int(m.group(1) or m.group(2)) if m.group(3) is None else self._century(int(m.group(3)))
                n = self._negation_at(text, m.start())
                into = excl_years if n is not None else spans
                into.append((y, y))
                take(m, n)
                more = self._year_more.match(text, m.end())
                while more and free(more.start(), more.end()):
                    into.append((int(more.group(1)),) * 2)
                    take(more)
                    more = self._year_more.match(text, more.end())
        # categories: all-of, except runs joined by "or"; a negation covers the run it starts
        req, anyof, excl = [], [], []
        prev_end, prev_kind, group = -1, None, []
        for m in self._cat.finditer(text):
            if not free(m.start(), m.end()):
                continue
            cat = self.phrase_to_cat[m.group(1)]
            between = text[prev_end:m.start()] if prev_end >= 0 else ""
            n = self._negation_at(text, m.start())
            chained = prev_end >= 0 and re.fullmatch(r"[\s,/]*(?:or|and|nor|,)?[\s,/]*(?:a\s+|an\s+)?", between)
            if n is not None and not (chained and prev_kind == "neg" and n >= prev_end):
                kind = "neg"
            elif chained and prev_kind == "neg":
                kind = "neg"
            else:
                kind = "pos"
            is_or = bool(chained) and re.search(r"\bor\b|/", between) is not None
            if kind == "neg":
                excl.append(cat)
            elif is_or and prev_kind == "pos":
                group.append(cat)
            else:
                if len(group) > 1:
                    anyof.extend(group)
                else:
                    req.extend(group)
                group = [cat]
            take(m, n if kind == "neg" and n is not None and n < m.start() else None)
            prev_end, prev_kind = m.end(), kind
        if len(group) > 1:
            anyof.extend(group)
        else:
            req.extend(group)
        req, anyof, excl = _unique(req), _unique(c for c in anyof if c not in req), _unique(excl)
        both = [c for c in excl if c in req or c in anyof]
        if both:
            raise RequestError(f"the query both asks for and excludes {', '.join(both)}: "
                               f"it understood {', '.join(matched)!s}; rephrase or drop one")
        if anyof and len(anyof) == 1:
            req, anyof = _unique(req + anyof), []
        if spans:
            lo = min(a for a, _ in spans) if lo is None else max(lo, min(a for a, _ in spans))
            hi = max(b for _, b in spans) if hi is None else min(hi, max(b for _, b in spans))
        if lo is not None and hi is not None and lo > hi:
            raise RequestError(f"the query's year constraints contradict each other ({', '.join(matched)}): "
                               "no year is in all of them")
        rest = list(text)
        for a, b in taken:
            # the preposition that introduced a constraint goes with it, wherever it stands ("something
            # [from the 80s] with robots" embedded "something from with robots")
            lead = _LEAD.search(text[:a])
            a = lead.start() if lead else a
            rest[a:b] = " " * (b - a)
        words = re.findall(r"[\w']+", "".join(rest))
        left = " ".join(w for w in "".join(rest).split() if w.strip(" ,.;:!?-"))
        meaningful = [w for w in words if w not in FILLER and w not in NEGATIONS]
        return ParsedQuery(text=_tidy(left) if meaningful else "", require_categories=tuple(req),
                           include_categories=tuple(anyof), exclude_categories=tuple(excl), year_min=lo,
                           year_max=hi, exclude_years=tuple(excl_years), matched=tuple(matched))


def _unique(xs) -> list:
    out = []
    for x in xs:
        if x not in out:
            out.append(x)
    return out


# a preposition right before a constraint ("from the 80s", "made in 1995", "set in the 60s")
_LEAD = re.compile(r"(?<![\w'])(?:(?:made|released|set)\s+)?(?:from|in|of|during)\s+$")
# connectives left dangling at either end once a constraint is cut out ("funny from [the 90s]")
_DANGLING = frozenset("a an the from in of and but or with to during made released set".split())


def _tidy(s: str) -> str:
    s = re.sub(r"\s+([,.;:!?])", r"\1", s)
    s = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", s)
    words = s.strip(" ,;:-").split()
    while words and words[-1].strip(",.;:!?-") in _DANGLING:
        words.pop()
    while words and words[0].strip(",.;:!?-") in _DANGLING:
        words.pop(0)
    return " ".join(words).strip(" ,;:-")
