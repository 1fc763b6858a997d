import json
import re

import numpy as np
import pytest

from genre_edge_export.data import load_dataset
from genre_edge_export.data.loaders import detect_format
from genre_edge.errors import DataError


def _ml100k(tmp_path):
    d = tmp_path / "ml100k"
    d.mkdir()
    flags = ["0"] * 19
    a, b = flags.copy(), flags.copy()
    a[5] = "1"  # Comedy
    b[1] = b[16] = "1"  # Action, Thriller
    (d / "u.item").write_bytes(("1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(a) + "\n"
                                "2|Caf\xe9 Noir (1993)|01-Jan-1993||http://x|" + "|".join(b) + "\n").encode("latin-1"))
    (d / "u.data").write_text("1\t1\t5\t100\n1\t2\t3\t200\n2\t2\t4\t150\n2\t9\t4\t160\n")
    return d


def test_ml100k_original(tmp_path):
    ds = load_dataset(_ml100k(tmp_path))
    assert ds.items.title == ["Toy Story", "Caf\u00e9 Noir"]
    assert ds.items.year.tolist() == [1995, 1993]
    assert ds.items.categories[1] == ("Action", "Thriller")
    assert len(ds.interactions) == 3  # the row with unknown item 9 is skipped ...
    assert ds.report["rows_with_unknown_items"] == 1  # ... and reported
    assert ds.interactions.label.tolist() == [1, 1, 0]  # sorted by time: ratings 5, 4, 3 at threshold 4
    assert list(ds.interactions.time) == sorted(ds.interactions.time)


def test_ml100k_malformed_row_names_file_and_line(tmp_path):
    d = _ml100k(tmp_path)
    (d / "u.data").write_text("1\t1\t5\t100\n1\t2\t3\n")
    with pytest.raises(DataError, match=r"u\.data:2: expected 4 tab-separated fields"):
        load_dataset(d)


def test_recbole_atomic(tmp_path):
    d = tmp_path / "rb"
    d.mkdir()
    (d / "x.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t4\t5\n2\t11\t2\t6\n")
    (d / "x.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                              "10\tHeat\t1995\tAction Crime\n11\tBabe\t\tChildren's\n")
    ds = load_dataset(d)
    assert detect_format(d) == "recbole"
    assert ds.items.categories[0] == ("Action", "Crime") and ds.items.year.tolist() == [1995, 0]
    assert ds.interactions.label.tolist() == [1, 0]


def test_recbole_bad_number(tmp_path):
    d = tmp_path / "rb"
    d.mkdir()
    (d / "x.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\tfour\t5\n")
    (d / "x.item").write_text("item_id:token\tmovie_title:token_seq\n10\tHeat\n")
    with pytest.raises(DataError, match=r"x\.inter:2: rating 'four' is not a number"):
        load_dataset(d)


def test_ml1m(tmp_path):
    d = tmp_path / "ml1m"
    d.mkdir()
    (d / "movies.dat").write_bytes("1::Toy Story (1995)::Animation|Children's|Comedy\n2::Am\xe9lie (2001)::Romance\n".encode("latin-1"))
    (d / "ratings.dat").write_text("1::1::5::978300760\n1::2::2::978302109\n")
    ds = load_dataset(d)
    assert ds.items.title[1] == "Am\u00e9lie" and ds.items.categories[0] == ("Animation", "Children's", "Comedy")
    assert ds.interactions.label.tolist() == [1, 0]


def test_ml_latest_tags_become_text(tmp_path):
    d = tmp_path / "mll"
    d.mkdir()
    (d / "movies.csv").write_text('movieId,title,genres\n1,"Matrix, The (1999)",Action|Sci-Fi\n2,Nothing,(no genres listed)\n')
    (d / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.5,10\n1,2,1.0,11\n")
    (d / "tags.csv").write_text("userId,movieId,tag,timestamp\n1,1,cyberpunk,1\n2,1,Cyberpunk,2\n1,1,keanu,3\n")
    ds = load_dataset(d)
    assert ds.items.title[0] == "Matrix, The" and ds.items.year[0] == 1999
    assert ds.items.text["tags"][0] == "cyberpunk, keanu"
    assert ds.items.categories[1] == ()


def test_ml_latest_missing_column(tmp_path):
    d = tmp_path / "mll"
    d.mkdir()
    (d / "movies.csv").write_text("movieId,name\n1,x\n")
    (d / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    with pytest.raises(DataError, match="no column 'title'"):
        load_dataset(d)


def _mind(tmp_path):
    d = tmp_path / "mind"
    d.mkdir()
    (d / "news.tsv").write_text("N1\tsports\tfootball\tBig win\tThe team won.\thttp://x\t[]\t[]\n"
                                "N2\tnews\tpolitics\tVote today\tPolls open.\thttp://x\t[]\t[]\n"
                                "N3\tfood\trecipes\tSoup\tHot soup.\thttp://x\t[]\t[]\n")
    (d / "behaviors.tsv").write_text("1\tU1\t11/15/2019 10:22:32 AM\tN1 N404\tN2-1 N3-0 N405-0\n"
                                     "2\tU2\t11/15/2019 11:00:00 PM\t\tN1-0 N3-1\n")
    return d


def test_mind_with_missing_news_counts_them(tmp_path):
    ds = load_dataset(_mind(tmp_path))
    assert ds.report["unknown_item_ids"] == 2 and ds.report["rows_with_unknown_items"] == 2
    assert len(ds.impressions) == 2
    imp = ds.impressions[0]
    assert [ds.items.ids[i] for i in imp.items] == ["N2", "N3"] and imp.labels.tolist() == [1, 0]
    assert ds.items.text["abstract"][0] == "The team won."
    assert len(ds.interactions) == 3 and ds.interactions.label.all()  # N1 history, N2 click, N3 click


def test_mind_a_click_listed_again_in_later_histories_is_one_event(tmp_path):
    """A history that grows with the log's own clicks (what synth_news writes) listed each click again at its
    user's later impressions, and each listing became another interaction: a duplicate row per click (the
    synthetic news log had 6,908 held-out positives per period instead of 3,588). A click repeated in a later
    impression is a real second event and stays."""
    d = _mind(tmp_path)
    (d / "behaviors.tsv").write_text("1\tU1\t11/15/2019 10:00:00 AM\tN1\tN2-1 N3-0\n"
                                     "2\tU1\t11/15/2019 11:00:00 AM\tN1 N2\tN3-1\n"
                                     "3\tU1\t11/15/2019 12:00:00 PM\tN1 N2 N3\tN2-1 N1-0\n")
    ds = load_dataset(d)
    got = [(ds.items.ids[i], int(t) % 86400 // 3600) for i, t in zip(ds.interactions.item, ds.interactions.time)]
    # N1 from the history (just before the first impression), each click once, N2's second click kept
    assert got == [("N1", 9), ("N2", 10), ("N3", 11), ("N2", 12)]


def test_mind_bad_impression_token(tmp_path):
    d = _mind(tmp_path)
    (d / "behaviors.tsv").write_text("1\tU1\t11/15/2019 10:22:32 AM\tN1\tN2-x\n")
    with pytest.raises(DataError, match=r"behaviors\.tsv:1: impression 'N2-x'"):
        load_dataset(d)


def test_generic_csv_and_jsonl(tmp_path, toy_data):
    ds = load_dataset(toy_data)
    assert ds.n_items == 48 and ds.n_users == 60 and ds.items.year[0] == 1980
    d = tmp_path / "j"
    d.mkdir()
    (d / "i.jsonl").write_text(json.dumps({"sku": "a", "name": "Alpha", "tags": ["x", "y"]}) + "\n")
    (d / "e.jsonl").write_text(json.dumps({"u": "1", "sku": "a", "when": "2024-01-01T00:00:00Z"}) + "\n"
                               + json.dumps({"u": "1", "sku": "zzz", "when": "2024-01-02T00:00:00Z"}) + "\n")
    (d / "c.toml").write_text('[interactions]\npath="e.jsonl"\nuser="u"\nitem="sku"\ntime="when"\ntime_format="iso"\n'
                              '[items]\npath="i.jsonl"\nid="sku"\ntitle="name"\ncategories="tags"\n')
    ds = load_dataset(d / "c.toml")
    assert ds.items.categories[0] == ("x", "y") and ds.interactions.time[0] == 1704067200
    assert ds.report["rows_with_unknown_items"] == 1


def _generic(tmp_path, items: bytes, inter: str):
    """A generic data set of an items.csv and an inter.csv with the default column names: its config."""
    d = tmp_path / "g"
    d.mkdir()
    (d / "items.csv").write_bytes(items)
    (d / "inter.csv").write_text(inter)
    (d / "c.toml").write_text('[interactions]\npath="inter.csv"\n[items]\npath="items.csv"\n')
    return d / "c.toml"


def test_generic_wrong_encoding_names_line(tmp_path):
    conf = _generic(tmp_path, b"item_id,title\n1,ok\n2,caf\xe9\n", "user_id,item_id,timestamp\n")
    with pytest.raises(DataError, match="not valid utf-8"):
        load_dataset(conf)


def test_generic_duplicate_item_ids_are_named(tmp_path):
    conf = _generic(tmp_path, b"item_id,title\n1,one\n2,two\n1,uno\n", "user_id,item_id,timestamp\nu,1,5\n")
    with pytest.raises(DataError, match=r"items.csv: duplicate item ids: '1' \(each item once"):
        load_dataset(conf)


def test_generic_bad_config_key(tmp_path):
    (tmp_path / "c.toml").write_text('[interactions]\npath="x"\ncolour="red"\n[items]\npath="y"\n')
    from genre_edge.errors import ConfigError

    with pytest.raises(ConfigError, match="interactions.colour: unknown key"):
        load_dataset(tmp_path / "c.toml")


def test_missing_files_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match="no such data folder"):
        load_dataset(tmp_path / "nothing")
    (tmp_path / "events.csv").write_text("user_id,item_id,timestamp\n")  # a log given directly: it exists
    with pytest.raises(DataError, match=r"events\.csv: a file, not a data folder or a \.toml data config: describe"):
        load_dataset(tmp_path / "events.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot tell the data format"):
        load_dataset(tmp_path / "empty")
    d = tmp_path / "half"
    d.mkdir()
    (d / "u.data").write_text("1\t1\t5\t1\n")
    with pytest.raises(DataError, match=r"u\.item: file not found"):
        load_dataset(d)


def test_stats(toy_data):
    st = load_dataset(toy_data).stats()
    assert st["users"] == 60 and 0 < st["density"] < 1 and st["text_coverage"]["title"] == 1.0
    ds = load_dataset(toy_data)
    counts = {}
    for cs in ds.items.categories:
        for c in cs:
            counts[c] = counts.get(c, 0) + 1
    assert st["categories"]["distinct"] == len(counts) > 0
    name, n = st["categories"]["most_common"][0]
    assert n == max(counts.values()) == counts[name]


@pytest.mark.parametrize("table, key, msg", [
    ("interactions", "time", r"interactions: time: empty; the log needs a time column"),
    ("interactions", "user", r"interactions: user: empty; name the log's user column"),
    ("interactions", "item", r"interactions: item: empty"),
    ("items", "id", r"items: id: empty; name the item file's id column"),
])
def test_generic_empty_column_names_are_refused_at_load(tmp_path, table, key, msg):
    """An empty column name (a log without times, `time = ""`) reached the columnar reader and failed there
    with a traceback (KeyError: Field "" does not exist in schema); it is a config error naming the key."""
    from genre_edge.errors import ConfigError

    conf = _generic(tmp_path, b"item_id,title\na,A\n", "user_id,item_id,timestamp\n1,a,1700000000\n")
    text = conf.read_text().replace(f"[{table}]\n", f'[{table}]\n{key} = ""\n')
    conf.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(str(conf)) + ":" + msg):
        load_dataset(conf)


def test_generic_category_cells_holding_lists_and_years_as_written(tmp_path, caplog):
    """A CSV cell holding a list (JSON, or Python's repr as pandas writes it) is that list, not one category
    spelled with brackets; TMDB-style objects give their names; years written as floats or dates are read."""
    rows = [("a", '["Rock", "Pop"]', "1995"), ("b", "['Jazz', 'Blues']", "1995.0"),
            ("c", '[{"id": 1, "name": "Folk"}]', "1971-05-02"), ("d", "Rock|Metal", ""),
            ("e", "[Live]", "nan"), ("f", "[]", "unknown"), ("g", "[1, 2]", "2001"), ("h", "Rock|Pop|Rock", "")]
    items = "item_id,title,genres,year\n" + "".join(
        f'{i},T {i},"{c.replace(chr(34), chr(34) * 2)}",{y}\n' for i, c, y in rows)
    conf = _generic(tmp_path, items.encode(), "user_id,item_id,timestamp\n1,a,1700000000\n")
    conf.write_text(conf.read_text().replace('path="items.csv"\n', 'path="items.csv"\ncategories="genres"\nyear="year"\n'))
    with caplog.at_level("WARNING"):
        ds = load_dataset(conf)
    assert ds.items.categories == [("Rock", "Pop"), ("Jazz", "Blues"), ("Folk",), ("Rock", "Metal"), ("[Live]",), (),
                                   ("1", "2"), ("Rock", "Pop")]  # a category once per item (it showed [Rock, Pop, Rock])
    assert ds.items.year.tolist() == [1995, 1995, 1971, 0, 0, 0, 2001, 0]
    assert "1 of 8 items" in caplog.text and "'unknown'" in caplog.text and "items.csv:7" in caplog.text
    # the same lists in JSON lines: floats for years, lists of objects; a nested list is named with its line
    d = tmp_path / "j"
    d.mkdir()
    recs = [{"sku": "a", "tags": [{"name": "Drama"}, "War"], "y": 1995.0, "kw": ["space", "", "robots"]},
            {"sku": "b", "tags": '["x", "y"]', "y": None, "kw": "plain text"}]
    (d / "i.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (d / "e.jsonl").write_text(json.dumps({"u": "1", "sku": "a", "when": 1700000000}) + "\n")
    (d / "c.toml").write_text('[interactions]\npath="e.jsonl"\nuser="u"\nitem="sku"\ntime="when"\n'
                              '[items]\npath="i.jsonl"\nid="sku"\ntitle="sku"\ncategories="tags"\nyear="y"\ntext=["kw"]\n')
    ds = load_dataset(d / "c.toml")
    assert ds.items.categories == [("Drama", "War"), ("x", "y")] and ds.items.year.tolist() == [1995, 0]
    assert ds.items.text["kw"] == ["space, robots", "plain text"]  # a list field reads as its words
    # a misspelt mapped column read as empty for every item, silently; now it is named
    conf_text = (d / "c.toml").read_text()
    (d / "c.toml").write_text(conf_text.replace('year="y"', 'year="yr"'))
    with pytest.raises(DataError, match=r"i\.jsonl: no record has the key 'yr', which \[items\] maps \(keys seen: kw, sku, tags, y\)"):
        load_dataset(d / "c.toml")
    (d / "c.toml").write_text(conf_text)
    (d / "i.jsonl").write_text(json.dumps({"sku": "a", "tags": ["x", ["y"]], "kw": "k", "y": 1}) + "\n")
    with pytest.raises(DataError, match=r"i\.jsonl:1: column 'tags': categories must be strings.*\['y'\]"):
        load_dataset(d / "c.toml")
    # comma-separated categories read with the default "|": warned, with the key to set
    conf.write_text(conf.read_text().replace('year="year"\n', ""))
    (conf.parent / "items.csv").write_text('item_id,title,genres\na,A,"Comedy, Drama"\nb,B,Drama\nc,C,"Action, War"\n')
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert load_dataset(conf).items.categories[0] == ("Comedy, Drama",)
    assert "2 of 3 items have one category holding ','" in caplog.text and "set category_sep = ','" in caplog.text
    conf.write_text(conf.read_text().replace('categories="genres"', 'categories="genres"\ncategory_sep=","'))
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert load_dataset(conf).items.categories[0] == ("Comedy", "Drama")
    assert "category_sep" not in caplog.text
    conf.write_text(conf.read_text().replace('categories="genres"', 'categories="genre"'))
    with pytest.raises(DataError, match=r"items\.csv: no column 'genre' in header \(columns: item_id, title, genres\)"):
        load_dataset(conf)


def test_generic_mapped_rating_column_missing_is_named(tmp_path, toy_data):
    """Found by fuzzing: a configured rating column absent from the file raised KeyError."""
    import shutil

    d = tmp_path / "g"
    shutil.copytree(toy_data.parent, d)
    f = d / "inter.csv"
    f.write_text(f.read_text().replace("rating", "stars", 1))
    with pytest.raises(DataError, match=r"inter\.csv.*rating"):
        load_dataset(d / "data.toml")


def _same_dataset(a, b):
    assert a.users == b.users and a.report == b.report
    for f in ("user", "item", "time", "label"):
        np.testing.assert_array_equal(getattr(a.interactions, f), getattr(b.interactions, f))
    np.testing.assert_array_equal(np.isnan(a.interactions.rating), np.isnan(b.interactions.rating))
    np.testing.assert_allclose(np.nan_to_num(a.interactions.rating), np.nan_to_num(b.interactions.rating))


@pytest.mark.parametrize("extra", ["", 'rating = "rating"\n', 'rating = "rating"\nlabel = "clicked"\n'])
def test_columnar_reader_gives_the_row_readers_dataset(tmp_path, extra):
    """pyarrow's column-wise reading (logs of tens of millions of rows) = the row-by-row path: the same
    users in the same order, the same rows, labels and report (unknown items skipped), TSV, ms times."""
    pytest.importorskip("pyarrow")
    from genre_edge_export.data.loaders import load_generic

    rng = np.random.default_rng(0)
    (tmp_path / "items.csv").write_text("item_id,title\n" + "".join(f"i{k},Item {k}\n" for k in range(30)))
    rows = ["user\titem\tts\trating\tclicked"]
    for n in range(400):
        item = f"i{rng.integers(0, 34)}"  # i30..i33 are not in the item file
        rows.append(f"u{rng.integers(0, 50)}\t{item}\t{1_600_000_000_000 + int(rng.integers(0, 10**9))}.0\t"
                    f"{rng.integers(1, 6)}\t{rng.choice(['yes', 'no', ' TRUE ', '0'])}")
    (tmp_path / "log.tsv").write_text("\n".join(rows) + "\n")
    (tmp_path / "c.toml").write_text('[interactions]\npath = "log.tsv"\nuser = "user"\nitem = "item"\ntime = "ts"\n'
                                     'time_format = "unix_ms"\n' + extra + '[items]\npath = "items.csv"\n')
    col = load_generic(tmp_path / "c.toml", columnar=True)
    _same_dataset(col, load_generic(tmp_path / "c.toml", columnar=False))
    assert col.report["rows_with_unknown_items"] > 0 and len(col.interactions) > 300
    # Parquet (column-wise only) gives the same again
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    t = pacsv.read_csv(tmp_path / "log.tsv", parse_options=pacsv.ParseOptions(delimiter="\t"),
                       convert_options=pacsv.ConvertOptions(column_types={"user": pa.string(), "item": pa.string()}))
    pq.write_table(t, tmp_path / "log.parquet")
    (tmp_path / "p.toml").write_text((tmp_path / "c.toml").read_text().replace("log.tsv", "log.parquet"))
    _same_dataset(load_generic(tmp_path / "p.toml"), col)


def test_files_saved_with_a_byte_order_mark_and_crlf_read_as_without(tmp_path):
    """Windows editors save UTF-8 with a byte-order mark: a JSON-lines item file failed at line 1 ("Unexpected
    UTF-8 BOM"); CSV headers already dropped it."""
    (tmp_path / "items.jsonl").write_bytes('\ufeff{"id": "a", "title": "A"}\r\n{"id": "b", "title": "B"}\r\n'.encode())
    (tmp_path / "log.csv").write_bytes("\ufeffuser_id,item_id,timestamp\r\n1,a,100\r\n1,b,200\r\n".encode())
    (tmp_path / "d.toml").write_text('[interactions]\npath = "log.csv"\n[items]\npath = "items.jsonl"\nid = "id"\n')
    ds = load_dataset(tmp_path / "d.toml")
    assert ds.items.ids == ["a", "b"] and ds.items.title == ["A", "B"] and len(ds.interactions) == 2


def test_label_cells_written_as_numbers_or_words_read_the_same_both_ways(tmp_path):
    """A 0/1 label column written as floats ("1.0": a pandas float column) read as negative on every row; any
    number above 0 and yes/true/y/t are positive, the same column-wise and row by row, in CSV and Parquet."""
    pytest.importorskip("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    from genre_edge_export.data.loaders import load_generic

    cells = ["1.0", "0.0", "2", "y", "False", "n/a", "TRUE", "-1", "1", "0"]
    want = [1, 0, 1, 1, 0, 0, 1, 0, 1, 0]
    (tmp_path / "items.csv").write_text("item_id,title\n" + "".join(f"i{k},Item {k}\n" for k in range(len(cells))))
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp,clicked\n" + "".join(
        f"u1,i{k},{1000 + k},{c}\n" for k, c in enumerate(cells)))
    (tmp_path / "c.toml").write_text('[interactions]\npath = "log.csv"\nlabel = "clicked"\n[items]\npath = "items.csv"\n')
    col = load_generic(tmp_path / "c.toml", columnar=True)
    _same_dataset(col, load_generic(tmp_path / "c.toml", columnar=False))
    assert col.interactions.label[np.argsort(col.interactions.item)].tolist() == want
    pq.write_table(pa.table({"user_id": ["u1"] * 4, "item_id": ["i0", "i1", "i2", "i3"], "timestamp": [1, 2, 3, 4],
                             "clicked": pa.array([1.0, 0.0, None, 3.0])}), tmp_path / "log.parquet")
    (tmp_path / "p.toml").write_text((tmp_path / "c.toml").read_text().replace("log.csv", "log.parquet"))
    got = load_generic(tmp_path / "p.toml")
    assert got.interactions.label[np.argsort(got.interactions.item)].tolist() == [1, 0, 0, 1]


def test_columnar_reader_takes_iso_text_and_parquet_timestamp_and_date_columns(tmp_path):
    """ISO times are read column-wise (naive = UTC, or with zones) as the row reader reads them, and a Parquet
    log's timestamp or date column (what pandas writes for datetimes) as the instant it holds: it failed with
    "Unsupported cast from timestamp[us] to double", and a Parquet log with ISO text could not be read at all."""
    pytest.importorskip("pyarrow")
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    from genre_edge_export.data.loaders import load_generic

    rng = np.random.default_rng(1)
    (tmp_path / "items.csv").write_text("item_id,title\n" + "".join(f"i{k},Item {k}\n" for k in range(20)))
    when = [dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=int(s), microseconds=int(us))
            for s, us in zip(rng.integers(0, 10**7, 300), rng.integers(0, 10**6, 300))]
    users, items = [f"u{k}" for k in rng.integers(0, 40, 300)], [f"i{k}" for k in rng.integers(0, 20, 300)]
    conf = '[interactions]\npath = "{}"\ntime_format = "iso"\n[items]\npath = "items.csv"\n'
    for name, text in (("naive", lambda w: w.replace(tzinfo=None).isoformat()),  # 2024-01-01T02:46:40.123456
                       ("zoned", lambda w: w.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat())):
        (tmp_path / f"{name}.csv").write_text("user_id,item_id,timestamp\n" + "".join(
            f"{u},{i},{text(w)}\n" for u, i, w in zip(users, items, when)))
        (tmp_path / f"{name}.toml").write_text(conf.format(f"{name}.csv"))
        col = load_generic(tmp_path / f"{name}.toml", columnar=True)
        _same_dataset(col, load_generic(tmp_path / f"{name}.toml", columnar=False))
        assert sorted(col.interactions.time.tolist()) == sorted(int(w.timestamp()) for w in when)
        pq.write_table(pa.table({"user_id": users, "item_id": items, "timestamp": [text(w) for w in when]}),
                       tmp_path / f"{name}.parquet")
        (tmp_path / f"{name}-p.toml").write_text(conf.format(f"{name}.parquet"))
        _same_dataset(load_generic(tmp_path / f"{name}-p.toml"), col)
    # typed columns: timestamps with and without a zone, in any unit; dates (midnight UTC)
    for kind, values, secs in (
            (pa.timestamp("us"), [w.replace(tzinfo=None) for w in when], [int(w.timestamp()) for w in when]),
            (pa.timestamp("ns", tz="Europe/Berlin"), when, [int(w.timestamp()) for w in when]),
            (pa.timestamp("s", tz="UTC"), when, [int(w.timestamp()) for w in when]),
            (pa.date32(), [w.date() for w in when],
             [int(dt.datetime.combine(w.date(), dt.time(), dt.timezone.utc).timestamp()) for w in when])):
        pq.write_table(pa.table({"user_id": users, "item_id": items, "timestamp": pa.array(values, kind)}),
                       tmp_path / "typed.parquet")
        (tmp_path / "typed.toml").write_text(conf.format("typed.parquet").replace('time_format = "iso"\n', ""))
        got = load_generic(tmp_path / "typed.toml")
        assert sorted(got.interactions.time.tolist()) == sorted(secs), kind
        _same_dataset(load_generic(tmp_path / "typed.toml", columnar=False), got)  # row by row: the same
    # an item file in Parquet (it was refused: "read by the columnar reader only"), list categories and all
    pq.write_table(pa.table({"item_id": [f"i{k}" for k in range(20)], "title": [f"Item {k}" for k in range(20)],
                             "genres": [["Rock", "Pop"] if k % 2 else [] for k in range(20)],
                             "year": [1990 + k if k % 3 else None for k in range(20)]}), tmp_path / "items.parquet")
    (tmp_path / "pi.toml").write_text((tmp_path / "typed.toml").read_text().replace(
        'path = "items.csv"\n', 'path = "items.parquet"\ncategories = "genres"\nyear = "year"\n'))
    got = load_generic(tmp_path / "pi.toml")
    assert got.items.ids[:3] == ["i0", "i1", "i2"] and got.items.categories[:2] == [(), ("Rock", "Pop")]
    assert got.items.year[:3].tolist() == [0, 1991, 1992] and len(got.interactions) == 300
    (tmp_path / "pi.toml").write_text((tmp_path / "pi.toml").read_text().replace('year = "year"', 'year = "released"'))
    with pytest.raises(DataError, match=r"items\.parquet: no column 'released' \(columns: item_id, title, genres, year\)"):
        load_generic(tmp_path / "pi.toml")


def test_columnar_reader_hands_bad_lines_to_the_row_reader_which_names_them(tmp_path, toy_data):
    pytest.importorskip("pyarrow")
    from genre_edge.errors import DataError
    from genre_edge_export.data.loaders import load_generic

    (tmp_path / "items.csv").write_text("item_id,title\na,A\n")
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp,rating\n1,a,5,4\n1,a,6\n")
    (tmp_path / "c.toml").write_text('[interactions]\npath = "log.csv"\nrating = "rating"\n[items]\npath = "items.csv"\n')
    with pytest.raises(DataError, match="log.csv:3: expected 4 fields"):
        load_generic(tmp_path / "c.toml")
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp,rating\n1,a,5,4\n1,a,6,\n")
    with pytest.raises(DataError, match="log.csv:3"):
        load_generic(tmp_path / "c.toml")
    with pytest.raises(DataError, match="log.csv"):
        load_generic(tmp_path / "c.toml", columnar=True)


@pytest.mark.parametrize("columnar", [None, False])
@pytest.mark.parametrize("time, fmt, msg", [
    ("-5", "unix", r"time '-5' is outside unix seconds 0\.\.253402300799"),
    ("1e30", "unix", "is outside unix seconds"),  # once an OSError traceback in `genre data stats`
    ("1700000000000", "unix", 'looks like milliseconds: set time_format = "unix_ms"'),
    ("nan", "unix", "time 'nan' is not unix seconds"),
    ("1e30", "unix_ms", "is outside unix seconds"),
])
def test_times_outside_unix_seconds_name_the_line(tmp_path, time, fmt, msg, columnar):
    """The columnar reader hands such a log to the row reader, which names the line (and a likely unit)."""
    from genre_edge.errors import DataError
    from genre_edge_export.data.loaders import load_generic

    (tmp_path / "items.csv").write_text("item_id,title\na,A\nb,B\n")
    (tmp_path / "log.csv").write_text(f"user_id,item_id,timestamp\n1,a,1000\n1,b,{time}\n")
    (tmp_path / "c.toml").write_text(f'[interactions]\npath = "log.csv"\ntime_format = "{fmt}"\n'
                                     '[items]\npath = "items.csv"\n')
    with pytest.raises(DataError, match=f"log.csv:3: {msg}" if msg.startswith("time") else msg):
        load_generic(tmp_path / "c.toml", columnar=columnar)
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\n1,a,1000\n1,b,2000000\n")
    assert load_generic(tmp_path / "c.toml", columnar=columnar).interactions.time.max() == (2000 if fmt == "unix_ms" else 2000000)


def test_a_data_set_too_small_for_its_split_is_named_before_training(tmp_path):
    """Two events of one user: no validation positive to choose a model on. Said with the counts by the
    training data preparation and by `genre eval baselines` (training failed with a KeyError in its first
    epoch record; the baselines wrote a report of empty rows)."""
    from click.testing import CliRunner

    from genre_edge.cli import main
    from genre_edge.errors import DataError
    from genre_edge_export.data.loaders import load_generic
    from genre_edge_export.prepare import check_split
    from genre_edge_export.split import make_split

    (tmp_path / "items.csv").write_text("item_id,title\na,A\nb,B\n")
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\n1,a,100\n1,b,200\n")
    (tmp_path / "data.toml").write_text('[interactions]\npath = "log.csv"\n[items]\npath = "items.csv"\n')
    ds = load_generic(tmp_path / "data.toml")
    with pytest.raises(DataError, match=r"\(1 users, 2 items, 2 events, 2 positives\) is too small for the 'cold_item' "
                                        r"split: 1 training and 0 validation positives; .*min_train = 3"):
        check_split(make_split(ds), ds)
    r = CliRunner().invoke(main, ["eval", "baselines", "--data", str(tmp_path / "data.toml"), "--out", str(tmp_path / "r")])
    assert r.exit_code == 1 and "is too small for the 'cold_item' split" in r.output
    assert not (tmp_path / "r").exists()
    # no positive at all: the threshold against the ratings' range is named, not the data's size
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp,liked\n" + "".join(
        f"{u},{i},{100 * u + t},{t % 2}\n" for u in range(1, 9) for t, i in enumerate("abab")))
    (tmp_path / "data.toml").write_text('[interactions]\npath = "log.csv"\nrating = "liked"\n[items]\npath = "items.csv"\n')
    ds = load_generic(tmp_path / "data.toml")
    with pytest.raises(DataError, match=r"32 events and no positive one: its ratings run 0 to 1, and ratings >= the "
                                        r"threshold are positives: set `threshold`"):
        check_split(make_split(ds), ds)
    (tmp_path / "data.toml").write_text('threshold = 1.0\n' + (tmp_path / "data.toml").read_text())
    ds = load_generic(tmp_path / "data.toml")
    assert int(ds.interactions.label.sum()) == 16
    # no row names an item of the item file (ids written differently): said, not an IndexError from the split
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\n1,A1,100\n2,B2,200\n")
    (tmp_path / "data.toml").write_text('[interactions]\npath = "log.csv"\n[items]\npath = "items.csv"\n')
    msg = (r"has no interactions to split: all 2 rows of its log name items its item file lacks \(e\.g\. 'A1', 'B2'; "
           r"the item file's ids look like 'a', 'b'\): do the two id columns match\?")
    with pytest.raises(DataError, match=msg):
        make_split(load_generic(tmp_path / "data.toml"))
    r = CliRunner().invoke(main, ["eval", "baselines", "--data", str(tmp_path / "data.toml"), "--out", str(tmp_path / "r")])
    assert r.exit_code == 1 and re.search(msg, r.output) and "Traceback" not in r.output


@pytest.mark.parametrize("columnar", [None, False])
def test_generic_semicolon_csv_with_decimal_commas_reads_as_its_comma_twin(tmp_path, columnar):
    """A spreadsheet in a decimal-comma locale saves ';'-separated "CSV" with ratings like 3,5: it once failed
    with "no column 'item_id' (columns: item_id;title;genres)" and no option to say so. The header tells the
    delimiter; both readers (column-wise and row by row) read the same as the comma twin."""
    items = "item_id,title,genres\n1,One,Rock|Pop\n2,Two,Jazz\n3,Three,Rock\n"
    inter = "user_id,item_id,rating,timestamp\nu,1,3.5,10\nu,2,4.5,20\nv,3,5,30\nv,1,2,40\n"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    conf = ('[interactions]\npath="inter.csv"\nrating="rating"\n'
            '[items]\npath="items.csv"\ncategories="genres"\n')
    a = _generic(tmp_path / "a", items.encode(), inter)
    a.write_text(conf)
    comma = load_dataset(a, threshold=4.0)
    semi = _generic(tmp_path / "b", items.replace(",", ";").encode(),
                    inter.replace(",", ";").replace("3.5", "3,5").replace("4.5", "4,5"))
    semi.write_text(conf)
    from genre_edge_export.data.loaders import load_generic

    got = load_generic(semi, threshold=4.0, columnar=columnar)
    assert got.items.ids == comma.items.ids and got.items.categories == comma.items.categories
    assert got.items.categories[0] == ("Rock", "Pop")
    for k in ("user", "item", "time", "rating", "label"):
        np.testing.assert_array_equal(getattr(got.interactions, k), getattr(comma.interactions, k))
    assert got.interactions.rating.tolist() == [3.5, 4.5, 5.0, 2.0] and got.interactions.label.tolist() == [0, 1, 1, 0]


def test_generic_delimiter_key_is_checked_and_a_one_column_header_is_explained(tmp_path):
    from genre_edge.errors import ConfigError

    conf = _generic(tmp_path, b"item_id:title\n1:One\n", "user_id,item_id,timestamp\nu,1,5\n")
    # ':' is no common delimiter: the error says the header read as one column and which key to set
    with pytest.raises(DataError, match=r"columns: item_id:title\); the header reads as one column.*"
                                        r"set delimiter under \[items\]"):
        load_dataset(conf)
    conf.write_text('[interactions]\npath="inter.csv"\n[items]\npath="items.csv"\ndelimiter=":"\n')
    assert load_dataset(conf).items.title == ["One"]
    conf.write_text('[interactions]\npath="inter.csv"\n[items]\npath="items.csv"\ndelimiter=";;"\n')
    with pytest.raises(ConfigError, match=r"items: delimiter: ';;' is not one character"):
        load_dataset(conf)
    # a misspelt column in a ';' file lists the file's columns, not its whole header as one
    conf.write_text('[interactions]\npath="inter.csv"\n[items]\npath="items.csv"\nid="itemid"\n')
    (conf.parent / "items.csv").write_text("item_id;title\n1;One\n")
    with pytest.raises(DataError, match=r"no column 'itemid' in header \(columns: item_id, title\)$"):
        load_dataset(conf)


def test_the_data_tomls_threshold_is_the_one_stats_and_training_use(tmp_path):
    """A data TOML's `threshold` was overridden by load_dataset's and the training config's default 4.0:
    `genre data stats` and training counted ratings >= 4 as positives whatever the TOML said."""
    from genre_edge_export.prepare import config_dataset
    from genre_edge_export.train_config import load_config

    conf = _generic(tmp_path, b"item_id,title\n1,one\n2,two\n",
                    "user_id,item_id,rating,timestamp\nu,1,3,5\nu,2,4,6\nv,1,5,7\n")
    conf.write_text('threshold = 5.0\n[interactions]\npath="inter.csv"\nrating="rating"\n[items]\npath="items.csv"\n')
    assert load_dataset(conf).stats()["positives"] == 1
    assert load_dataset(conf, threshold=3.0).stats()["positives"] == 3  # a caller's threshold still wins
    train = tmp_path / "t.toml"
    train.write_text(f'[data]\nsource = "{conf}"\n')
    assert config_dataset(load_config(train)).interactions.label.sum() == 1
    train.write_text(f'[data]\nsource = "{conf}"\nthreshold = 4.0\n')  # the training config's, where it sets one
    assert config_dataset(load_config(train)).interactions.label.sum() == 2
    # the other formats keep 4.0 when nobody sets one
    assert load_dataset(_ml100k(tmp_path)).interactions.label.tolist() == [1, 1, 0]


@pytest.mark.parametrize("columnar", [None, False])
def test_generic_csv_typed_with_a_space_after_each_comma(tmp_path, columnar):
    """'u1, i1, 5' gave item ids ' i1' that matched no item (every row skipped as unknown), and a quoted title after
    the space was split at its comma. Both readers, and the device's item and event files, read it as typed."""
    from genre_edge.catalog import event_records, item_records
    from genre_edge_export.data.loaders import load_generic

    conf = _generic(tmp_path, b'item_id, title, genres\ni1, "Hello, World", Rock|Pop\ni2, Two, Jazz\n',
                    "user_id, item_id, rating, timestamp\nu1, i1, 4.5, 5\nu1, i2, 2, 6\nu2, i2, 5, 7\n")
    conf.write_text('[interactions]\npath="inter.csv"\nrating="rating"\n[items]\npath="items.csv"\ncategories="genres"\n')
    ds = load_generic(conf, columnar=columnar)
    assert ds.items.ids == ["i1", "i2"] and ds.items.title == ["Hello, World", "Two"]
    assert ds.items.categories == [("Rock", "Pop"), ("Jazz",)] and ds.users == ["u1", "u2"]
    assert len(ds.interactions) == 3 and not ds.report and ds.interactions.label.tolist() == [1, 0, 1]
    got = [rec for _, rec in item_records(['id, title, categories, year\n', 'c1, "Cee, One", Comedy, 1999\n'], "new.csv")]
    assert got == [{"id": "c1", "title": "Cee, One", "categories": ["Comedy"], "year": 1999}]
    assert [rec for _, rec in event_records(["item_id, time\n", "c1, 17\n"], "ev.csv")] == [{"item_id": "c1", "time": 17.0}]


@pytest.mark.parametrize("columnar", [None, False])
def test_generic_times_in_a_strptime_pattern_and_hints_for_the_wrong_format(tmp_path, columnar, caplog):
    """Times like 05/01/2024 10:00 could not be read at all (unix | unix_ms | iso only); ISO times under the
    default unix format said "is not a unix time" without saying what to set."""
    from genre_edge.errors import ConfigError
    from genre_edge_export.data.loaders import load_generic

    conf = _generic(tmp_path, b"item_id,title\ni1,One\ni2,Two\n",
                    "user_id,item_id,timestamp\nu1,i1,05/01/2024 10:00\nu1,i2,06/01/2024 11:30\n")
    conf.write_text('[interactions]\npath="inter.csv"\ntime_format="%d/%m/%Y %H:%M"\n[items]\npath="items.csv"\n')
    with caplog.at_level("INFO"):
        ds = load_generic(conf, columnar=columnar)
    assert ds.interactions.time.tolist() == [1704448800, 1704540600]  # 2024-01-05 10:00 and 01-06 11:30 UTC
    if columnar is None:
        assert "reading row by row" not in caplog.text  # the columnar reader took the pattern itself
    (conf.parent / "inter.csv").write_text("user_id,item_id,timestamp\nu1,i1,2024-01-05 10:00:00\n")
    conf.write_text('[interactions]\npath="inter.csv"\n[items]\npath="items.csv"\n')
    with pytest.raises(DataError, match=r"inter\.csv:2: time '2024-01-05 10:00:00' is not unix seconds; it is an ISO "
                                        r"8601 time: set time_format = \"iso\" under \[interactions\]"):
        load_generic(conf, columnar=columnar)
    (conf.parent / "inter.csv").write_text("user_id,item_id,timestamp\nu1,i1,05/01/2024\n")
    conf.write_text('[interactions]\npath="inter.csv"\ntime_format="iso"\n[items]\npath="items.csv"\n')
    with pytest.raises(DataError, match=r"is not an ISO 8601 time .*take a strptime pattern, e\.g\. time_format"):
        load_generic(conf, columnar=columnar)
    conf.write_text('[interactions]\npath="inter.csv"\ntime_format="dd/mm/yyyy"\n[items]\npath="items.csv"\n')
    with pytest.raises(ConfigError, match=r"time_format: 'dd/mm/yyyy' is not one of unix, unix_ms, iso nor a strptime"):
        load_generic(conf, columnar=columnar)
