"""Property tests of the Python API over arbitrary input (Hypothesis, fixed seed in CI).

Whatever arrives — unknown or odd ids, unicode and control characters, empty or huge text, any k,
contradictory filters — a call either answers correctly or raises RequestError with a message;
nothing else escapes, and the answers keep their promises (k, filters, no seen items).
"""
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import needs_tiny_bundle
from genre_edge.errors import RequestError
from genre_edge.recommender import Recommender

pytestmark = needs_tiny_bundle
SETTINGS = settings(max_examples=300, derandomize=True, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))

text = st.text(st.characters(codec="utf-8"), max_size=300)  # any unicode, control characters included
huge = st.sampled_from(["word " * 100_000, "\x00" * 50_000, "🎬" * 20_000, ""])


@pytest.fixture(scope="module")
def rec(tiny_bundle, tmp_path_factory):
    d = tmp_path_factory.mktemp("props")
    shutil.copytree(tiny_bundle / "bundle", d / "b")
    return Recommender.load(d / "b", "x86-avx512-vnni", state_dir=d / "state")


def _ids(rec):
    return st.sampled_from(list(rec.catalog.ids)) | text


@SETTINGS
@given(data=st.data())
def test_recommend_keeps_its_promises_or_explains(rec, data):
    cats = sorted(rec.catalog.cat_names)
    history = data.draw(st.lists(_ids(rec), max_size=30))
    titles = st.sampled_from(list(rec.catalog.titles))
    query = data.draw(st.none() | text | huge | titles.map(lambda t: f"something like {t}")
                      | st.tuples(titles, text).map(lambda p: f"nothing like {p[0]}, {p[1]}"))
    k = data.draw(st.integers(-3, 1200))
    inc = data.draw(st.lists(st.sampled_from(cats) | text, max_size=3))
    exc = data.draw(st.lists(st.sampled_from(cats), max_size=2))
    y0, y1 = data.draw(st.none() | st.integers(-10, 3000)), data.draw(st.none() | st.integers(-10, 3000))
    mmr = data.draw(st.none() | st.floats(-1, 2) | st.just(float("nan")))
    try:
        r = rec.recommend(history, query=query, k=k, include_categories=inc, exclude_categories=exc,
                          year_min=y0, year_max=y1, mmr_lambda=mmr, explain=True)
    except RequestError as e:
        assert str(e)  # says what was wrong
        return
    assert 1 <= k <= 1000 and len(r.items) <= k
    # items the query named ("like X", "nothing like X") are never served, as history items are not
    named = set(r.parsed["like"] + r.parsed["unlike"]) if r.parsed else set()
    known = {h for h in history if h in rec.catalog.index} | named
    from genre_edge.item_columns import fold as f1

    fold = lambda names: {f1(c) for c in names}  # noqa: E731 - category names match ignoring case and accents
    for it in r.items:
        i = rec.catalog.index[it.id]
        assert rec.catalog.active[i] and it.id not in known and np.isfinite(it.score)
        assert not fold(exc) & fold(it.categories)
        if inc:
            assert fold(inc) & fold(it.categories)
        if y0 is not None:
            assert it.year >= y0
        if y1 is not None:
            assert it.year <= y1
    assert set(r.unknown_ids) == {h for h in history if h not in rec.catalog.index}


@SETTINGS
@given(texts=st.lists(text | huge, min_size=1, max_size=4))
def test_embed_any_text(rec, texts):
    try:
        e = rec.embed(texts)
    except RequestError as exc:
        assert "at most" in str(exc)
        return
    assert e.shape == (len(texts), rec.bundle.manifest.dim) and np.isfinite(e).all()
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-3)


@SETTINGS
@given(item=st.fixed_dictionaries({"id": text, "title": text | huge, "categories": st.lists(text, max_size=3),
                                   "year": st.integers(-5, 5000) | st.none()}))
def test_catalog_updates_accept_or_explain(rec, item):
    item = {k: v for k, v in item.items() if v is not None}
    try:
        rec.add_items([item])
    except RequestError as exc:
        assert str(exc)
        return
    i = rec.catalog.index[item["id"]]
    assert rec.catalog.active[i] and rec.catalog.titles[i] == item["title"]
    assert rec.remove_items([item["id"]]) == [] and not rec.catalog.active[i]
