import pytest

from genre_edge import config as cfgmod
from genre_edge.errors import ConfigError


def test_packaged_configs_load():
    pytest.importorskip("torch")
    from genre_edge_export.train_config import load_config, packaged_config

    for name in ("ml-100k", "ml-100k-quick"):
        c = load_config(packaged_config(name))
        assert c.data.source == "ml-100k"
    # every packaged config loads (a bad key in one would surface only when a user picks it)
    from importlib.resources import files

    names = sorted(p.name[:-5] for p in files("genre_edge_export.configs").iterdir() if p.name.endswith(".toml"))
    assert {"ml-100k-quick-next", "ml-100k-quick-sasrec", "ml-100k-quick-hard", "synth-news-quick"} <= set(names)
    from genre_edge_export.distill import DistillConfig
    from genre_edge_export.llm import EnrichConfig

    other = {"distill-augment": DistillConfig, "enrich-ml-100k": EnrichConfig}  # genre distill / augment llm
    for name in names:
        if name in other:
            assert cfgmod.load(other[name], packaged_config(name))
            continue
        c = load_config(packaged_config(name))
        assert c.name and c.data.source
    with pytest.raises(ConfigError, match="no packaged config 'ml-100k-quik' and no such file; packaged: .*ml-100k-quick,"):
        packaged_config("ml-100k-quik")


@pytest.mark.parametrize("text, needle", [
    ("[encoder]\npooling = 'max'\n", "encoder.pooling: 'max' is not valid; choose one of: mean, cls"),
    ("[user_model]\nkind = 'gru'\n", "choose one of: mean, attention, nrms"),
    ("[train]\nepochz = 3\n", "train.epochz: unknown key; valid keys are"),
    ("[train]\nepochs = 0\n", "train.epochs: 0 is below the minimum 1"),
    ("[train]\nlr = 'fast'\n", "train.lr: expected a number"),
    # seeds reach numpy's generators (0..2**32-1): a negative one was a traceback from inside numpy
    ("[train]\nseed = -1\n", "train.seed: -1 is below the minimum 0"),
    ("[train]\nseed = 4294967296\n", "train.seed: 4294967296 is above the maximum 4294967295"),
    ("[augment]\nseed = -3\n", "augment.seed: -3 is below the minimum 0"),
    ("[encoder]\ntemplate = '{title} {plot.upper}'\n", "{plot.upper} is not a field name; use id, title"),
    ("[cf]\nkind = 'svd'\n", "choose one of: none, cooccurrence, ease, mf"),
    ("[head]\nkind = 'mlp'\nrerank_top = 10\n", "rerank_top must be >= 20"),
    ("bogus = 1\n", "bogus: unknown key"),
    ("[data\n", "not valid TOML"),
])
def test_bad_training_configs_name_file_key_and_choices(tmp_path, text, needle):
    pytest.importorskip("torch")
    from genre_edge_export.train_config import load_config

    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert needle in str(ei.value)
    assert str(p) in str(ei.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        cfgmod.read_toml(tmp_path / "nope.toml")


def test_toml_roundtrip_of_resolved_config():
    pytest.importorskip("torch")
    from genre_edge_export.train_config import Config

    c = Config()
    text = cfgmod.dumps_toml(cfgmod.to_dict(c))
    import tomllib

    assert cfgmod.from_dict(Config, tomllib.loads(text)) == c


def test_relative_paths_in_a_training_config_are_found_next_to_it(tmp_path, monkeypatch):
    """`source = "data.toml"` beside my.toml failed with "no such data folder" when genre ran from another
    folder; a path there from the working directory keeps its meaning, a known data set name is a name."""
    pytest.importorskip("torch")
    from genre_edge_export.train_config import load_config

    here, other = tmp_path / "proj", tmp_path / "elsewhere"
    here.mkdir()
    other.mkdir()
    (here / "data.toml").write_text("")
    (here / "enrich.jsonl").write_text("")
    (here / "my.toml").write_text('[data]\nsource = "data.toml"\nenrichment = "enrich.jsonl"\nuser_profiles = "nope.jsonl"\n')
    monkeypatch.chdir(other)
    conf = load_config(here / "my.toml")
    assert conf.data.source == str(here / "data.toml") and conf.data.enrichment == str(here / "enrich.jsonl")
    assert conf.data.user_profiles == "nope.jsonl"  # nowhere: left as written, for the reader's error to name
    (other / "data.toml").write_text("")
    assert load_config(here / "my.toml").data.source == "data.toml"  # the working directory's comes first
    (here / "ml-100k").mkdir()
    (here / "my.toml").write_text('[data]\nsource = "ml-100k"\n')
    assert load_config(here / "my.toml").data.source == "ml-100k"
