"""Fuzzing the CLI and the data loaders with arbitrary input (Hypothesis, fixed seed).

The CLI answers or exits 1 with 'Error: ...' (2 for usage errors) — never a traceback. Data loaders
given arbitrary bytes load or raise DataError naming the file — never another exception.
"""
import json
import shutil

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import needs_tiny_bundle, write_generic
from genre_edge_export.data import load_dataset
from genre_edge.errors import ConfigError, DataError

FUZZ = settings(max_examples=120, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
argtext = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=200)  # argv has no NUL


@pytest.fixture(scope="module")
def cli_bundle(tiny_bundle, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-fuzz")
    shutil.copytree(tiny_bundle / "bundle", d / "b")
    return d


@needs_tiny_bundle
@FUZZ
@given(history=argtext, query=st.none() | argtext, k=st.integers(-5, 2000) | argtext,
       extra=st.lists(st.sampled_from(["--year-min", "--mmr-lambda", "--exclude-category", "--include-category"]),
                      max_size=2), val=argtext)
def test_cli_recommend_answers_or_explains(cli_bundle, history, query, k, extra, val):
    from genre_edge.cli import main

    args = ["recommend", "--bundle", str(cli_bundle / "b"), "--profile", "x86-avx512-vnni", "--state-dir",
            str(cli_bundle / "state"), "--history", history, "-k", str(k), "--json"]
    if query is not None:
        args += ["--query", query]
    for opt in extra:
        args += [opt, val]
    r = CliRunner().invoke(main, args)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code in (0, 1, 2), r.output
    if r.exit_code == 0:
        out = json.loads(r.stdout)
        assert len(out["items"]) <= int(str(k).strip())  # click also accepts " 7" or "+7"
    else:
        assert "Error" in r.output


def _generic(tmp_path_factory):
    return write_generic(tmp_path_factory.mktemp("gen"), n_users=8, n_items=12)


@FUZZ
@given(which=st.sampled_from(["inter.csv", "items.csv", "data.toml"]), how=st.sampled_from(["replace", "splice"]),
       data=st.binary(max_size=3000), at=st.integers(0, 10_000))
def test_generic_loader_loads_or_names_the_problem(tmp_path_factory, which, how, data, at):
    toml = _generic(tmp_path_factory)
    f = toml.parent / which
    old = f.read_bytes()
    f.write_bytes(data if how == "replace" else old[: at % (len(old) + 1)] + data + old[at % (len(old) + 1):])
    try:
        ds = load_dataset(toml)
    except (DataError, ConfigError) as exc:  # a broken data.toml is a config error naming file and key
        assert str(exc)
        return
    assert ds.n_items >= 0 and len(ds.interactions.user) == len(ds.interactions.item)


@FUZZ
@given(which=st.sampled_from(["u.data", "u.item"]), data=st.binary(max_size=2000), at=st.integers(0, 10_000))
def test_ml100k_loader_loads_or_names_the_problem(tmp_path_factory, which, data, at):
    d = tmp_path_factory.mktemp("ml")
    flags = "|".join(["0"] * 18 + ["1"])
    (d / "u.item").write_bytes(f"1|Heat (1995)|01-Jan-1995||http://x|{flags}\n2|Babe (1995)|||http://x|{flags}\n"
                               .encode("latin-1"))
    (d / "u.data").write_text("1\t1\t5\t100\n1\t2\t3\t200\n2\t2\t4\t150\n")
    _splice_and_load(d, which, data, at, "ml-100k")


@FUZZ
@given(which=st.sampled_from(["news.tsv", "behaviors.tsv"]), data=st.binary(max_size=2000), at=st.integers(0, 10_000))
def test_mind_loader_loads_or_names_the_problem(tmp_path_factory, which, data, at):
    d = tmp_path_factory.mktemp("mind")
    (d / "news.tsv").write_text("N1\tsports\tfootball\tBig win\tThe team won.\thttp://x\t[]\t[]\n"
                                "N2\tnews\tpolitics\tVote\tPolls.\thttp://x\t[]\t[]\n")
    (d / "behaviors.tsv").write_text("1\tU1\t11/15/2019 10:22:32 AM\tN1\tN2-1 N1-0\n")
    _splice_and_load(d, which, data, at, "mind")


def _splice_and_load(d, which: str, data: bytes, at: int, fmt: str) -> None:
    """Insert ``data`` into file ``which`` at ``at`` (mod its length); the load succeeds or names the problem."""
    f = d / which
    old = f.read_bytes()
    f.write_bytes(old[: at % (len(old) + 1)] + data + old[at % (len(old) + 1):])
    try:
        load_dataset(d, fmt)
    except DataError as exc:
        assert str(exc)
