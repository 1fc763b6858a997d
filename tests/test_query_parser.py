"""The request parser (every constraint kind, bad input), its vocabulary in the manifest, the request
generator, and parsed requests end to end (Python API, CLI, HTTP)."""
import json
import shutil

import numpy as np
import pytest

from conftest import needs_export_package, needs_tiny_bundle
from genre_edge.errors import RequestError
from genre_edge.query_parser import QueryParser, default_phrases

ML_GENRES = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
             "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western", "unknown"]
SYN = {"Sci-Fi": ("science fiction",), "Romance": ("romantic",), "Animation": ("animated", "cartoon"),
       "Children's": ("kids",), "Film-Noir": ("noir",)}


@pytest.fixture(scope="module")
def parser():
    return QueryParser.for_categories(ML_GENRES, SYN, years=(1922, 1998))


def _c(p):
    return (set(p.require_categories), set(p.include_categories), set(p.exclude_categories), p.year_min, p.year_max)


@pytest.mark.parametrize("query, want, text", [
    # decades, in every spelling
    ("a film from the 90s", (set(), set(), set(), 1990, 1999), ""),
    ("movies from the 1980s", (set(), set(), set(), 1980, 1989), ""),
    ("something from the seventies", (set(), set(), set(), 1970, 1979), ""),
    ("'60s films", (set(), set(), set(), 1960, 1969), ""),
    ("early 90s", (set(), set(), set(), 1990, 1993), ""),
    ("late 70s", (set(), set(), set(), 1976, 1979), ""),
    # years, ranges and bounds
    ("released in 1994", (set(), set(), set(), 1994, 1994), ""),
    ("a 1994 film", (set(), set(), set(), 1994, 1994), ""),
    ("between 1985 and 1990", (set(), set(), set(), 1985, 1990), ""),
    ("films 1960-1969", (set(), set(), set(), 1960, 1969), ""),
    ("from 1960 to 1969", (set(), set(), set(), 1960, 1969), ""),
    ("films before 1980", (set(), set(), set(), None, 1979), ""),
    ("movies after the 80s", (set(), set(), set(), 1990, None), ""),
    ("since 1995", (set(), set(), set(), 1995, None), ""),
    ("a musical from the 50s or 60s", ({"Musical"}, set(), set(), 1950, 1969), ""),
    # years chained to a year are a union too (the second year was embedded as text)
    ("an action thriller from 1995 or 1996", ({"Action", "Thriller"}, set(), set(), 1995, 1996), ""),
    ("in 1994, 1995 and 1997", (set(), set(), set(), 1994, 1997), ""),
    # categories: names, plural forms, synonyms; all-of vs any-of
    ("comedies", ({"Comedy"}, set(), set(), None, None), ""),
    ("science fiction", ({"Sci-Fi"}, set(), set(), None, None), ""),
    ("a romantic comedy from the 80s", ({"Romance", "Comedy"}, set(), set(), 1980, 1989), ""),
    ("a comedy or a drama", (set(), {"Comedy", "Drama"}, set(), None, None), ""),
    ("horror-comedy", ({"Horror", "Comedy"}, set(), set(), None, None), ""),
    ("I'd like to watch a good comedy tonight", ({"Comedy"}, set(), set(), None, None), ""),
    # negations
    ("no horror", (set(), set(), {"Horror"}, None, None), ""),
    ("a thriller, no romance", ({"Thriller"}, set(), {"Romance"}, None, None), ""),
    ("anything but westerns", (set(), set(), {"Western"}, None, None), ""),
    ("a drama, no romance or comedy", ({"Drama"}, set(), {"Romance", "Comedy"}, None, None), ""),
    ("non-horror", (set(), set(), {"Horror"}, None, None), ""),
    # said as a wish ("I don't want horror" once *required* horror)
    ("I don't want horror", (set(), set(), {"Horror"}, None, None), ""),
    ("i do not want to see any horror", (set(), set(), {"Horror"}, None, None), ""),
    ("I hate westerns", (set(), set(), {"Western"}, None, None), ""),
    ("a thriller, don't like romance", ({"Thriller"}, set(), {"Romance"}, None, None), ""),
    ("I don't mind horror", ({"Horror"}, set(), set(), None, None), "i don't mind"),
    # two-digit years, in the catalog's century
    ("a crime drama from '95", ({"Crime", "Drama"}, set(), set(), 1995, 1995), ""),
    # mood words stay with the encoder
    ("something light and funny from the 90s", (set(), set(), set(), 1990, 1999), "something light and funny"),
    ("something scary", (set(), set(), set(), None, None), "something scary"),
    ("a tense thriller about a heist, no romance", ({"Thriller"}, set(), {"Romance"}, None, None),
     "tense about a heist"),
    # the preposition that introduced a constraint leaves with it, mid-sentence too
    ("something from the 80s with robots", (set(), set(), set(), 1980, 1989), "something with robots"),
    ("a story set in the 60s about jazz musicians", (set(), set(), set(), 1960, 1969), "story about jazz musicians"),
    ("the fall of the berlin wall in 1989, told by a spy", (set(), set(), set(), 1989, 1989),
     "fall of the berlin wall told by a spy"),
])
def test_every_constraint_kind(parser, query, want, text):
    p = parser.parse(query)
    assert _c(p) == want, p.summary()
    assert p.text == text
    assert p.summary() and json.dumps(p.to_dict())


def test_negated_decade_and_star_wars_is_not_war(parser):
    p = parser.parse("not from the 90s")
    assert p.exclude_years == ((1990, 1999),) and p.year_min is None
    p = parser.parse("something like star wars")  # "wars" is not the category War
    assert not p.has_constraints and p.text == "something like star wars"


@pytest.mark.parametrize("query, msg", [
    ("comedy but no comedy", "both asks for and excludes Comedy"),
    ("before 1980 from the 90s", "year constraints contradict each other"),
    ("after 1995 and before 1990", "year constraints contradict each other"),
])
def test_contradictions_are_explained(parser, query, msg):
    with pytest.raises(RequestError, match=msg):
        parser.parse(query)


@pytest.mark.parametrize("query", ["", "   ", "the the a an of", "?!,.;", "x" * 2000, "90s " * 400,
                                   "no no no not without", "\u00e9\u00e8 \U0001F600 \x00 \u200b", "1999999 19"])
def test_bad_input_never_crashes(parser, query):
    p = parser.parse(query)
    assert isinstance(p.text, str) and p.summary()
    if not query.strip(" ?!,.;") or query.startswith("the the"):
        assert p.text == "" and not p.has_constraints


def test_two_digit_years_follow_the_catalog():
    assert QueryParser.for_categories(["Comedy"], years=(2005, 2024)).parse("a comedy from '15").year_min == 2015
    assert QueryParser.for_categories(["Comedy"], years=(2005, 2024)).parse("from '99").year_min == 1999
    assert QueryParser.for_categories(["Comedy"], years=(1922, 1998)).parse("made in '62").year_max == 1962


def test_two_digit_decades_follow_the_catalog(parser):
    assert parser.parse("the 20s").year_min == 1920
    recent = QueryParser.for_categories(["News"], years=(2005, 2024))
    assert recent.parse("the 10s").year_min == 2010


def test_default_phrases():
    assert {"comedy", "comedies"} <= set(default_phrases("Comedy"))
    assert {"sci-fi", "sci fi", "scifi"} <= set(default_phrases("Sci-Fi"))
    assert {"children's", "childrens", "children"} <= set(default_phrases("Children's"))


@needs_export_package
def test_vocabulary_from_config_and_builtin():
    from genre_edge.errors import ConfigError
    from genre_edge_export.vocabulary import QueryParserConfig, vocabulary

    v = vocabulary(["Sci-Fi", "War", "Comedy", "news", "unknown"],
                   QueryParserConfig(synonyms={"news": ("headlines",)})).vocabulary
    assert "science fiction" in v["Sci-Fi"] and "wars" not in v["War"] and "comedies" in v["Comedy"]
    assert v["news"] == ("news", "headlines") and "unknown" not in v
    with pytest.raises(ConfigError, match="'Nope' is not a category of this catalog"):
        vocabulary(["Comedy"], QueryParserConfig(synonyms={"Nope": ("x",)}))


# ------------------------------------------------------------------ generator
@needs_export_package
def test_generator_is_deterministic_disjoint_and_truthful():
    from genre_edge_export.requests import MOODS, TEMPLATES, generate

    rng = np.random.default_rng(0)
    cats = [tuple(rng.choice(ML_GENRES[:-1], size=rng.integers(1, 3), replace=False)) for _ in range(800)]
    years = rng.integers(1930, 2000, size=800)
    a, b = generate(cats, years, per_kind=30), generate(cats, years, per_kind=30)
    assert [r.text for r in a] == [r.text for r in b] and len(a) > 300
    assert {r.kind for r in a} == set(TEMPLATES) and {r.part for r in a} == {"train", "valid", "test"}
    for r in a:
        rel = r.relevant(cats, years)
        assert rel.sum() >= 10
        # item by item, as the request says (relevant() reads one bool array per category)
        want = np.array([all(c in cs for c in r.require) and not any(c in cs for c in r.exclude) and
                         (r.years is None or r.years[0] <= y <= r.years[1]) for cs, y in zip(cats, years)])
        assert np.array_equal(rel, want)
    # every request is one a reader could satisfy: the parser finds no contradiction in any of them (a mood
    # naming a period next to another period once made "... from the forties released after 1949")
    p = QueryParser.for_categories(ML_GENRES, SYN, years=(1922, 1998))
    every = generate(cats, years, per_kind=10**6)
    assert len(every) > 5000 and any("from the forties" in r.text for r in every)
    for r in every:
        p.parse(r.text)
    # no mood phrase is shared by two parts
    owner = {}
    for r in a:
        for m in (m for c in r.require for m in MOODS.get(c, ()) if m in r.text):
            assert owner.setdefault(m, r.part) == r.part


# ------------------------------------------------------------------ end to end

@needs_tiny_bundle
def test_parsed_requests_filter_and_say_what_they_understood(tiny_bundle, tmp_path):
    from genre_edge.bundle import open_bundle
    from genre_edge.recommender import Recommender

    shutil.copytree(tiny_bundle / "bundle", tmp_path / "b")
    vocab = open_bundle(tmp_path / "b").manifest.query_parser.vocabulary
    assert "comedies" in vocab["Comedy"] and "science fiction" in vocab["Sci-Fi"]
    rec = Recommender.load(tmp_path / "b", "x86-avx512-vnni", state_dir=tmp_path / "s")
    for hist in ([], ["m0", "m6", "m12", "m18"]):  # a history must not pull the request off its constraints
        r = rec.recommend(hist, query="a funny comedy from the 80s, no horror", k=5)
        assert r.parsed["summary"] == "year 1980-1989, category Comedy, not Horror, text 'funny'"
        assert r.items and all("Comedy" in it.categories and 1980 <= it.year <= 1989 for it in r.items)
    only = rec.recommend([], query="sci-fi", k=3)
    assert only.parsed["text"] == "" and all("Sci-Fi" in it.categories for it in only.items)
    raw = rec.recommend(["m0"], query="a comedy", parse_query=False, k=3)
    assert raw.parsed is None
    with pytest.raises(RequestError, match="both asks for and excludes"):
        rec.recommend([], query="comedy but no comedy")


def test_named_items_find_the_longest_title_after_like():
    from genre_edge.query_parser import named_items, title_key

    titles = {"Star Wars": "sw", "Godfather, The": "gf", "Godfather: Part II, The": "gf2", "Alien": "al", "Heat": "ht"}
    find = {title_key(t): i for t, i in titles.items()}.get
    assert title_key("Godfather, The (1972)") == title_key("the godfather") == "godfather"
    from genre_edge.query_parser import title_keys

    assert title_key("Amélie") == "amelie" and title_keys("Metisse (Café au Lait)") >= {"cafe au lait", "metisse"}
    assert title_keys("Seven (Se7en) (1995)") == {"seven se7en", "seven", "se7en"}
    like, unlike, rest = named_items("Movies like Star Wars but funnier", find)
    assert like == ["sw"] and unlike == [] and rest.split() == ["movies", "but", "funnier"]
    like, _, rest = named_items("similar to the Godfather part II or Alien, from the 90s", find)
    assert like == ["gf2", "al"] and rest.split() == [",", "from", "the", "90s"]
    like, unlike, rest = named_items("nothing like star wars, a comedy", find)
    assert like == [] and unlike == ["sw"] and "star" not in rest
    # what names no item stays text; "I'd like" is not an example
    assert named_items("I'd like a comedy", find) == ([], [], "i'd like a comedy")
    assert named_items("I would like Star Wars", find)[0] == [] and named_items("I like Star Wars", find)[0] == ["sw"]
    assert named_items("like star trek", find) == ([], [], "like star trek")


@needs_tiny_bundle
def test_a_query_naming_an_item_seeds_the_history_and_leaves_it_out(tiny_bundle, tmp_path):
    """'movies like Star Wars' returned Star Wars first: the named item is now a history item (its
    neighbours come up, explained by it) and not a result; 'nothing like X' leaves X out."""
    from genre_edge.recommender import Recommender

    shutil.copytree(tiny_bundle / "bundle", tmp_path / "b")
    rec = Recommender.load(tmp_path / "b", "x86-avx512-vnni", state_dir=tmp_path / "s")
    rec.add_items([{"id": "gf", "title": "Godfather, The", "categories": ["Drama"], "year": 1972}])
    seeded = rec.recommend(["m0", "m6"], query="a film like the godfather", k=5, explain=True)
    assert seeded.parsed["like"] == ["gf"] and "like Godfather, The" in seeded.parsed["summary"]
    assert seeded.strategy == "query" and "gf" not in [it.id for it in seeded.items]
    # the answer centres on the named item (a query of its embedding), whatever the history says
    cat = rec.catalog
    e = np.asarray(cat.emb[np.array(cat.rows(["gf"])[0])], np.float32)[0]
    sim = np.asarray(cat.emb[np.arange(len(cat.ids))], np.float32) @ e
    nearest = [cat.ids[i] for i in np.argsort(-sim)[1:11]]
    assert len({it.id for it in seeded.items} & set(nearest)) >= 3, (nearest, [it.id for it in seeded.items])
    assert all(any(r["source"] == "query" for r in it.reasons) for it in seeded.items)
    by_text = rec.recommend([], query="a film like the godfather", parse_query=False, k=48)
    assert by_text.parsed is None and "gf" in [it.id for it in by_text.items]  # --no-parse: the text as it is
    # a query of many "like"s makes a bounded number of title scans (each is a pass over the catalog)
    from genre_edge.recommender import MAX_TITLE_SCANS

    calls, search = [], rec.catalog.search
    rec.catalog.search = lambda *a, **k: calls.append(a) or search(*a, **k)
    rec.recommend([], query=" ".join(f"like word{i}x story{i}y" for i in range(60)), k=3)
    del rec.catalog.search
    assert 0 < len(calls) <= MAX_TITLE_SCANS
    unlike = rec.recommend(["m0"], query="nothing like the godfather", k=48)
    assert unlike.parsed["unlike"] == ["gf"] and "gf" not in [it.id for it in unlike.items]
    # and its closest items by content with it: the 20 nearest to its row are not served either
    from genre_edge.recommender import UNLIKE_NEIGHBOURS

    near = {cat.ids[i] for i in np.argsort(-sim)[1:UNLIKE_NEIGHBOURS - 2]}  # clear of near-ties at the edge
    assert not near & {it.id for it in unlike.items} and len(unlike.items) <= len(cat.ids) - UNLIKE_NEIGHBOURS - 1


@needs_tiny_bundle
def test_cli_and_http_show_the_parse(tiny_bundle, tmp_path):
    import httpx
    from click.testing import CliRunner

    from conftest import live_server
    from genre_edge.cli import main

    r = CliRunner().invoke(main, ["recommend", "--bundle", str(tiny_bundle / "bundle"), "--profile", "x86-avx512-vnni",
                                  "--state-dir", str(tmp_path / "s"), "--query", "comedies from the 80s", "-k", "3"])
    assert r.exit_code == 0, r.output
    assert "understood: year 1980-1989, category Comedy" in r.output
    r = CliRunner().invoke(main, ["recommend", "--bundle", str(tiny_bundle / "bundle"), "--profile", "x86-avx512-vnni",
                                  "--state-dir", str(tmp_path / "s"), "--query", "before 1980 from the 90s"])
    assert r.exit_code == 1 and "contradict" in r.output
    with live_server(tiny_bundle, tmp_path) as url:
        got = httpx.post(f"{url}/recommend", json={"query": "a drama, no romance", "k": 4}).json()
        assert got["parsed"]["exclude_categories"] == ["Romance"] and got["parsed"]["require_categories"] == ["Drama"]
        assert all("Drama" in it["categories"] and "Romance" not in it["categories"] for it in got["items"])
        bad = httpx.post(f"{url}/recommend", json={"query": "comedy but no comedy"})
        assert bad.status_code == 400 and "both asks for" in bad.json()["detail"]


def test_a_catalog_without_years_takes_no_year_filters_from_a_query():
    """A catalog whose items have no years (news, products): "from the 90s" filtered out every item; the
    words stay in the text the encoder reads, and categories are still understood."""
    p = QueryParser.for_categories(["Cooking", "Travel"], dates=False)
    q = p.parse("cooking from the 90s, not before 2001, released in 1995")
    assert (q.year_min, q.year_max, q.exclude_years) == (None, None, ())
    assert q.require_categories == ("Cooking",) and "90s" in q.text and "2001" in q.text and "1995" in q.text
    dated = QueryParser.for_categories(["Cooking", "Travel"]).parse("cooking from the 90s")
    assert (dated.year_min, dated.year_max) == (1990, 1999) and "90s" not in dated.text


def test_item_labels_leave_out_an_unknown_year_and_no_categories():
    from genre_edge.cliutil import item_label

    assert item_label("Fargo", 1996, ["Crime", "Drama"]) == "Fargo (1996) [Crime, Drama]"
    assert item_label("Article 3", 0, []) == "Article 3"
    assert item_label("Song", 0, ("Rock",)) == "Song [Rock]"
