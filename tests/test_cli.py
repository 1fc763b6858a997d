import json
import re

from click.testing import CliRunner

from conftest import have_export, needs_export
from genre_edge.cli import main


def test_help_lists_everything():
    r = CliRunner().invoke(main, ["--help"])
    for cmd in ("data", "eval", "train", "distill", "export", "recommend", "serve", "bundle", "profile", "items",
                "embed", "bench", "quickstart"):
        assert cmd in r.output


@needs_export
def test_data_stats_json(toy_data):
    r = CliRunner().invoke(main, ["data", "stats", str(toy_data), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["items"] == 48
    r = CliRunner().invoke(main, ["data", "stats", "/no/such/place"])
    assert r.exit_code == 1 and "not a known data set" in r.output


def test_recommend_and_bundle_commands(tiny_bundle, tmp_path):
    b = str(tiny_bundle / "bundle")
    st = str(tmp_path / "state")
    r = CliRunner().invoke(main, ["recommend", "--bundle", b, "--profile", "x86-avx512-vnni", "--state-dir", st,
                                  "--history", "m0,m6,zzz", "-k", "3", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert len(out["items"]) == 3 and out["unknown_ids"] == ["zzz"]
    # a title given for an id is named with its id
    title = json.loads((tiny_bundle / "bundle" / "catalog" / "items.json").read_text())["title"][0]
    r = CliRunner().invoke(main, ["recommend", "--bundle", b, "--state-dir", st, "--history", title.upper(), "-k", "2"])
    assert r.exit_code == 0 and f"{title.upper()!r} is the title of id m0" in r.output, r.output
    # options a path does not take are named, not silently dropped
    r = CliRunner().invoke(main, ["quickstart", "--encoder", "teacher", "--distill-epochs", "3", "--work",
                                  str(tmp_path / "qs")])
    if have_export():
        assert r.exit_code == 1 and "--distill-epochs distils a student" in r.output
    else:  # a runtime-only install (a device): the training-side command names what to install
        assert r.exit_code == 1 and "needs the 'export' extra" in r.output and "pip install" in r.output
    assert not (tmp_path / "qs").exists()
    r = CliRunner().invoke(main, ["recommend", "--bundle", b, "--state-dir", st, "--user", "u1"])
    assert r.exit_code == 1 and "--user is a user of the training data (--model)" in r.output
    r = CliRunner().invoke(main, ["recommend", "--model", b, "--history", "m0", "--query", "x", "--include", "A"])
    assert r.exit_code == 1 and "--query, --include: request options of the on-device path" in r.output
    r = CliRunner().invoke(main, ["recommend", "--bundle", b, "--state-dir", st, "--history", "m0", "-k", "0"])
    assert r.exit_code == 1 and "k must be" in r.output
    r = CliRunner().invoke(main, ["recommend", "--bundle", b, "--state-dir", st, "--year-min", "1990", "--year-max", "1980"])
    assert r.exit_code == 1 and "year_min (1990) is after year_max (1980)" in r.output
    # a new user: the most popular items, said so; filters nothing passes: said so, not a blank list
    r = CliRunner().invoke(main, ["recommend", "--bundle", b, "--state-dir", st, "-k", "2"])
    assert r.exit_code == 0 and "strategy popular" in r.output and " 2. " in r.output
    r = CliRunner().invoke(main, ["recommend", "--bundle", b, "--state-dir", st, "--history", "m0", "--year-min", "3000"])
    assert r.exit_code == 0 and "no item passes the filters" in r.output
    # fewer items pass than were asked for: the list is all there is, and says so
    r = CliRunner().invoke(main, ["recommend", "--bundle", b, "--state-dir", st, "--history", "m0", "-k", "1000"])
    assert r.exit_code == 0 and "of the 1000 asked: no other item passes the filters" in r.output
    r = CliRunner().invoke(main, ["recommend", "--bundle", b, "--state-dir", st, "--history", "m0", "-k", "3"])
    assert r.exit_code == 0 and " 3. " in r.output and "asked" not in r.output
    # a misspelt category is an error naming it and the valid ones; case does not matter
    r = CliRunner().invoke(main, ["recommend", "--bundle", b, "--state-dir", st, "--history", "m0", "--include", "Horrror"])
    assert r.exit_code == 1 and "'Horrror'" in r.output and "Horror" in r.output.split("categories:")[-1]
    r = CliRunner().invoke(main, ["recommend", "--bundle", b, "--state-dir", st, "--history", "m0", "--include", "horror",
                                  "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["items"]
    r = CliRunner().invoke(main, ["bundle", "verify", b])
    assert r.exit_code == 0 and "ok" in r.output
    r = CliRunner().invoke(main, ["bundle", "info", b, "--json"])
    assert "int8-avx512vnni" in json.loads(r.output)["variants"]
    r = CliRunner().invoke(main, ["bundle", "verify", str(tmp_path)])
    assert r.exit_code == 1 and "no manifest.json" in r.output
    r = CliRunner().invoke(main, ["items", "add", "--bundle", b, "--state-dir", st, "--id", "z1", "--title", "Zed",
                                  "--categories", "Comedy"])
    assert r.exit_code == 0 and "z1" in r.output
    r = CliRunner().invoke(main, ["items", "search", "--bundle", b, "--state-dir", st, "zed", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["items"][0] == {"id": "z1", "title": "Zed", "categories": ["Comedy"],
                                                                     "year": 0, "on_device": True}
    # a retitle from the command line keeps what it does not name (it once dropped categories and year)
    r = CliRunner().invoke(main, ["items", "add", "--bundle", b, "--state-dir", st, "--id", "z1", "--title", "Zed II",
                                  "--year", "1999"])
    r = CliRunner().invoke(main, ["items", "add", "--bundle", b, "--state-dir", st, "--id", "z1", "--title", "Zed III"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["items", "search", "--bundle", b, "--state-dir", st, "z1", "--json"])
    assert json.loads(r.output)["items"][0] == {"id": "z1", "title": "Zed III", "categories": ["Comedy"], "year": 1999,
                                                "on_device": True}
    r = CliRunner().invoke(main, ["items", "add", "--bundle", b, "--state-dir", st, "--id", "z1", "--title", "Zed",
                                  "--categories", "", "--year", "0"])
    r = CliRunner().invoke(main, ["items", "search", "--bundle", b, "--state-dir", st, "z1", "--json"])
    assert json.loads(r.output)["items"][0] == {"id": "z1", "title": "Zed", "categories": [], "year": 0, "on_device": True}
    r = CliRunner().invoke(main, ["items", "add", "--bundle", b, "--state-dir", st, "--file", "-"],
                           input='{"id": "d1", "title": "A"}\n{"id": "d1", "title": "B"}\n')
    assert r.exit_code == 1 and "duplicate item ids in one request: 'd1'" in r.output
    r = CliRunner().invoke(main, ["items", "add", "--bundle", b, "--state-dir", st, "--file", "-"], input="")
    assert r.exit_code == 1 and "<stdin>: no items in it" in r.output
    # a CSV item file (it was read as JSON lines: "not valid JSON" at line 1)
    csv_file = tmp_path / "new.csv"
    csv_file.write_text('id,title,categories,year,text\nc1,"Cee, One",Comedy|Drama,1999,a film\n'
                        'c2,Cee Two,"[""Horror""]",,\n\n')
    r = CliRunner().invoke(main, ["items", "add", "--bundle", b, "--state-dir", st, "--file", str(csv_file)])
    assert r.exit_code == 0 and "added/updated 2 item(s): c1, c2" in r.output, r.output
    r = CliRunner().invoke(main, ["items", "search", "--bundle", b, "--state-dir", st, "Cee", "--json"])
    got = {it["id"]: it for it in json.loads(r.output)["items"]}
    assert got["c1"]["title"] == "Cee, One" and got["c1"]["categories"] == ["Comedy", "Drama"] and got["c1"]["year"] == 1999
    assert got["c2"]["categories"] == ["Horror"] and got["c2"]["year"] == 0
    # ';'-separated, as spreadsheets in decimal-comma locales save CSV ("expected a header of ... got id;title")
    csv_file.write_text("id;title;categories;year\nc1;Cee, Uno;Comedy|Drama;2001\n")
    r = CliRunner().invoke(main, ["items", "add", "--bundle", b, "--state-dir", st, "--file", str(csv_file)])
    assert r.exit_code == 0 and "added/updated 1 item(s): c1" in r.output, r.output
    r = CliRunner().invoke(main, ["items", "search", "--bundle", b, "--state-dir", st, "Uno", "--json"])
    got = json.loads(r.output)["items"][0]
    assert (got["title"], got["categories"], got["year"]) == ("Cee, Uno", ["Comedy", "Drama"], 2001)
    for text, msg in (("item_id,title\nc3,X\n", r"new\.csv:1: expected a header of id, title, .*got item_id, title"),
                      ("id,title,year\nc3,X,soon\n", r"new\.csv:2: year must be a whole number \(or empty\), got 'soon'"),
                      ("id,title\nc3,X,extra\n", r"new\.csv:2: expected 2 fields, got 3"),
                      ("id,title,categories\nc3,X,[Horror\n", r"new\.csv:2: categories '\[Horror' start like a JSON list")):
        csv_file.write_text(text)
        r = CliRunner().invoke(main, ["items", "add", "--bundle", b, "--state-dir", st, "--file", str(csv_file)])
        assert r.exit_code == 1 and re.search(msg, r.output), r.output
    bom = tmp_path / "bom.jsonl"  # a byte-order mark (Windows editors) failed line 1 as "not valid JSON"
    bom.write_bytes('\ufeff{"id": "c1", "title": "Cee One"}\r\n'.encode())
    r = CliRunner().invoke(main, ["items", "add", "--bundle", b, "--state-dir", st, "--file", str(bom)])
    assert r.exit_code == 0 and "added/updated 1 item(s): c1" in r.output, r.output
    r = CliRunner().invoke(main, ["items", "remove", "--bundle", b, "--state-dir", st, "c1", "c2"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["items", "add", "--bundle", b, "--state-dir", st, "--id", "z1", "--title", "Zed",
                                  "--categories", "Comedy"])
    r = CliRunner().invoke(main, ["items", "search", "--bundle", b, "--state-dir", st, "", "--offset", "3", "--limit", "2"])
    assert r.exit_code == 0 and r.output.rstrip().endswith("4-5 of 49 matching item(s)"), r.output
    r = CliRunner().invoke(main, ["items", "search", "--bundle", b, "--state-dir", st, "bad\x01text"])
    assert r.exit_code == 1 and "control characters" in r.output
    r = CliRunner().invoke(main, ["items", "remove", "--bundle", b, "--state-dir", st, "z1", "nope"])
    assert r.exit_code == 0 and "unknown: nope" in r.output
    r = CliRunner().invoke(main, ["embed", "--bundle", b, "--json", "hello world"])
    assert r.exit_code == 0 and json.loads(r.output)["dim"] == 32
    r = CliRunner().invoke(main, ["bench", "--bundle", b, "--profile", "nope", "--reps", "5"])
    assert r.exit_code == 1 and "unknown profile 'nope'" in r.output
    # a port past 65535 was wrapped by the socket layer (99999 listened on 34463): refused before loading
    r = CliRunner().invoke(main, ["serve", "--bundle", b, "--port", "99999"])
    assert r.exit_code == 2 and "99999 is not in the range 0<=x<=65535" in r.output
    # an address or port that cannot be listened on is named before anything loads or says "serving on"
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = CliRunner().invoke(main, ["serve", "--bundle", b, "--port", str(busy.getsockname()[1])])
    assert r.exit_code == 1 and "the port is in use" in r.output and "serving" not in r.output
    r = CliRunner().invoke(main, ["serve", "--bundle", b, "--host", "999.1.1.1"])
    assert r.exit_code == 1 and "--host '999.1.1.1': not an address or a name this machine resolves" in r.output
    # an API key that cannot protect anything is refused before serving: an empty key file, a blank
    # GENRE_API_KEY (once taken as the key " ", which no X-API-Key header can carry: writes locked out)
    (tmp_path / "key").write_text("\n")
    r = CliRunner().invoke(main, ["serve", "--bundle", b, "--api-key-file", str(tmp_path / "key")])
    assert r.exit_code == 1 and "the file is empty" in r.output
    r = CliRunner().invoke(main, ["serve", "--bundle", b], env={"GENRE_API_KEY": "  "})
    assert r.exit_code == 1 and "GENRE_API_KEY is set but empty" in r.output


def test_recommend_model_reaches_the_export_side_through_its_hook(tiny_bundle):
    """`genre recommend --model` (PyTorch path) is provided by the export package as an entry-point hook."""
    import pytest

    from conftest import have_export

    if not have_export():
        pytest.skip("export extra not installed")
    r = CliRunner().invoke(main, ["recommend", "--model", str(tiny_bundle / "teacher"), "--history", "m0,m6,m12",
                                  "-k", "3", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert len(out) == 3 and all(o["id"] not in ("m0", "m6", "m12") and o["because"] for o in out)


def test_every_command_and_option_has_help_text():
    import click

    ctx = click.Context(main)
    missing = []

    def walk(cmd, prefix):
        for name in (cmd.list_commands(ctx) if isinstance(cmd, click.Group) else []):
            walk(cmd.get_command(ctx, name), prefix + [name])
        if not isinstance(cmd, click.Group):
            missing.extend((" ".join(prefix), p.opts) for p in cmd.params if isinstance(p, click.Option) and not p.help)
            if not cmd.help:
                missing.append((" ".join(prefix), "(command)"))

    walk(main, ["genre"])
    assert missing == []


@needs_export
def test_export_and_distill_refuse_outputs_that_would_destroy_a_model_or_other_files(tiny_bundle, tmp_path):
    """An export replaces its --out folder whole: --out naming the model folder deleted the model, and any other
    folder would have lost its files; distillation into the teacher's folder overwrote the teacher. Refused,
    with nothing written; re-exporting over a bundle still works."""
    import shutil

    student, teacher = tiny_bundle / "student", tiny_bundle / "teacher"
    before = sorted(p.name for p in student.iterdir())
    r = CliRunner().invoke(main, ["export", "--model", str(student), "--out", str(student)])
    assert r.exit_code == 1 and "which this command reads; choose another folder for the bundle" in r.output
    r = CliRunner().invoke(main, ["export", "--model", str(student), "--out", str(tiny_bundle)])  # its parent
    assert r.exit_code == 1 and "which this command reads; choose another folder for the bundle" in r.output
    assert sorted(p.name for p in student.iterdir()) == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    r = CliRunner().invoke(main, ["export", "--model", str(student), "--out", str(tmp_path / "mine")])
    assert r.exit_code == 1 and "exists and is not a bundle folder (no manifest.json)" in r.output
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    r = CliRunner().invoke(main, ["distill", "--teacher", str(teacher), "--out", str(teacher)])
    assert r.exit_code == 1 and "which this command reads; choose another folder for the model" in r.output
    r = CliRunner().invoke(main, ["distill", "--teacher", str(teacher), "--out", str(tmp_path / "mine")])
    assert r.exit_code == 1 and "is not a model folder (no config.toml + recommender.safetensors)" in r.output
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    shutil.copytree(tiny_bundle / "bundle", tmp_path / "again")  # a bundle folder is an export's to replace
    r = CliRunner().invoke(main, ["export", "--model", str(student), "--teacher", str(teacher), "--out",
                                  str(tmp_path / "again"), "--profile", "x86-avx512-vnni", "--min-kept", "0",
                                  "--min-cold-kept", "0", "--min-request-kept", "0"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "again" / "manifest.json").is_file()
