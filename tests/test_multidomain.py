"""Multi-domain (multi-task) training: one shared item encoder, per-domain user model / head / CF part."""
import hashlib
import json
import random

import numpy as np
import pytest

from conftest import GENRES, have_export, tiny_config, tiny_encoder

pytestmark = pytest.mark.skipif(not have_export(), reason="export extra not installed")

A = [GENRES[0], GENRES[1]]  # Action, Comedy
B = [GENRES[2], GENRES[3]]  # Drama, Horror


@pytest.fixture(scope="module")
def enc(tmp_path_factory):
    return tiny_encoder(tmp_path_factory.mktemp("mdenc") / "enc")


def two_domains(toy_data, enc, **over):
    base = {"domains": [{"name": "ac", "include_categories": A}, {"name": "dh", "include_categories": B}],
            "train": {"epochs": 2, "interpolate": False}}
    from genre_edge import config as cfgmod

    return tiny_config(toy_data, enc, **cfgmod.deep_merge(base, over))


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_domain_config_errors_name_the_problem(toy_data, enc, tmp_path):
    from genre_edge.errors import ConfigError
    from genre_edge_export.train_config import load_config

    with pytest.raises(ConfigError, match="name 'x' is used twice"):
        tiny_config(toy_data, enc, domains=[{"name": "x"}, {"name": "x"}])
    with pytest.raises(ConfigError, match="at least 2"):
        tiny_config(toy_data, enc, domains=[{"name": "x"}])
    with pytest.raises(ConfigError, match="set the categories in each domain"):
        tiny_config(toy_data, enc, data={"include_categories": A}, domains=[{"name": "x"}, {"name": "y"}])
    with pytest.raises(ConfigError, match="not a valid domain name"):
        tiny_config(toy_data, enc, domains=[{"name": "../up"}, {"name": "y"}])
    with pytest.raises(ConfigError, match=r"domains \(y\): train.max_train_positives .*needs cf.kind = 'none'"):
        tiny_config(toy_data, enc, domains=[{"name": "x"}, {"name": "y", "max_train_positives": 10}])
    with pytest.raises(ConfigError, match=r"template: \{plot\[0\]\} is not a field name"):
        tiny_config(toy_data, enc, domains=[{"name": "x", "template": "{plot[0]}"}, {"name": "y"}])
    with pytest.raises(ConfigError, match=r"domains\[1\]\.steps_per_epoch: -1 is below the minimum 0"):
        tiny_config(toy_data, enc, domains=[{"name": "x"}, {"name": "y", "steps_per_epoch": -1}])
    p = tmp_path / "c.toml"
    p.write_text('[[domains]]\nname = "x"\ncategories = ["Action"]\n\n[[domains]]\nname = "y"\n')
    with pytest.raises(ConfigError, match=r"c\.toml:domains\[0\]\.categories: unknown key; valid keys are: .*"
                                          r"include_categories"):
        load_config(p)
    conf = two_domains(toy_data, enc, domains=[{"name": "ac", "include_categories": A, "max_train_positives": 0},
                                               {"name": "dh", "include_categories": B, "steps_per_epoch": 3,
                                                "template": "{title}"}])
    dh = conf.for_domain("dh")
    assert dh.domains == () and dh.data.include_categories == tuple(B) and dh.encoder.template == "{title}"
    assert dh.train.steps_per_epoch == 3 and conf.for_domain("ac").train.steps_per_epoch == 4
    assert dh.name == "tiny.dh"
    with pytest.raises(ConfigError, match="no domain 'zz'; domains are: ac, dh"):
        conf.for_domain("zz")


def test_domains_share_the_encoder_and_keep_their_own_parts(toy_data, enc, tmp_path):
    import torch

    from genre_edge_export.multidomain import MultiTrainer

    conf = two_domains(toy_data, enc)
    mt = MultiTrainer(conf, tmp_path / "md", progress=False)
    (na, ta), (nb, tb) = mt.domains
    assert ta.tower is tb.tower is mt.tower and ta.rec is not tb.rec
    assert all(any(g in c for g in A) for c in ta.prep.data.items.categories)
    assert all(any(g in c for g in B) for c in tb.prep.data.items.categories)
    # one step of domain A moves the shared tower and A's parts, never B's parts
    opt = torch.optim.AdamW(list(mt.tower.parameters()) + list(ta.rec.parameters()) + list(tb.rec.parameters()),
                            lr=1e-2)
    for t in (ta, tb):
        t._bottom_cache()
        t.E = torch.as_tensor(t.all_embeddings())
    before = {k: v.detach().clone() for k, v in mt._trainable().items()}
    users, targets, times = next(ta._batches())
    ta._step(users, targets, times, opt, ta.seen_matrix())
    after = mt._trainable()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("tower.") for k in moved)
    assert any(k.startswith("ac/rec.user_model.") for k in moved)
    assert not any(k.startswith("dh/") for k in moved)


def test_multi_domain_run_writes_a_model_folder_per_domain_and_resumes(toy_data, enc, tmp_path):
    from genre_edge_export.distill import DistillConfig, distill
    from genre_edge_export.multidomain import MultiTrainer
    from genre_edge_export.train import train
    from genre_edge_export.train_config import load_config

    out = tmp_path / "md"
    rep1 = train(two_domains(toy_data, enc, train={"epochs": 1}), out, progress=False)
    assert rep1["best_epoch"] == 1 and len(rep1["history"]) == 1
    first = {n: d["valid"]["ndcg@10"] for n, d in rep1["domains"].items()}
    # a longer run in the same folder resumes after epoch 1 instead of starting over
    mt = MultiTrainer(two_domains(toy_data, enc), out, progress=False)
    rep = mt.fit()
    assert [h["epoch"] for h in rep["history"]] == [1, 2]
    assert rep["history"][0]["mean_valid_ndcg@10"] == pytest.approx(rep1["history"][0]["mean_valid_ndcg@10"])
    assert rep["history"][1]["steps"] == {"ac": 4, "dh": 4}
    assert set(rep["domains"]) == {"ac", "dh"} and all(d["test"]["users"] > 0 for d in rep["domains"].values())
    assert set(first) == {"ac", "dh"}
    # each domain folder is a normal single-domain model folder with the one shared (trained) encoder
    ea, eb = out / "ac" / "encoder" / "model.safetensors", out / "dh" / "encoder" / "model.safetensors"
    assert sha(ea) == sha(eb) != sha(enc / "model.safetensors")
    ca = load_config(out / "ac" / "config.toml")
    assert ca.domains == () and ca.data.include_categories == tuple(A)
    ra = json.loads((out / "ac" / "report.json").read_text())
    assert ra["multi_domain"]["domains"] == ["ac", "dh"] and ra["teacher"]["test"] == rep["domains"]["ac"]["test"]
    items = json.loads((out / "dh" / "items.json").read_text())
    assert all(any(g in c for g in B) for c in items["categories"])
    from safetensors.torch import load_file

    ua = load_file(str(out / "ac" / "recommender.safetensors"))
    ub = load_file(str(out / "dh" / "recommender.safetensors"))
    k = next(k for k in ua if k.startswith("rec.user_model."))
    assert not np.allclose(ua[k].numpy(), ub[k].numpy())  # per-domain user models
    assert np.allclose(ua["tower.adapter.weight"].numpy(), ub["tower.adapter.weight"].numpy())  # shared
    assert load_config(out / "config.toml").domains[1].name == "dh"
    # the run folder itself is not a model: the error says which folders are
    from genre_edge.errors import ConfigError

    with pytest.raises(ConfigError, match=r"multi-domain run: use one of its domain folders, .*md/ac, .*md/dh"):
        distill(out, DistillConfig(layers=(0, 2), epochs=1, threads=1), tmp_path / "s0", progress=False)
    # the export side reads a domain folder like any other teacher
    drep = distill(out / "dh", DistillConfig(layers=(0, 2), epochs=1, threads=1), tmp_path / "student", progress=False)
    assert drep["layers"] == [0, 2]


def write_mind(d, n_news=40, n_users=30):
    rng = random.Random(0)
    d.mkdir(parents=True)
    (d / "news.tsv").write_text("".join(f"N{i}\tcat{i % 4}\tsub\tHeadline {i}\tAbstract {i}\thttp://x\t[]\t[]\n"
                                        for i in range(n_news)))
    rows = []
    for u in range(n_users):
        for j in range(8):
            shown = rng.sample(range(n_news), 5)
            imp = " ".join(f"N{x}-{int(x == shown[0])}" for x in shown)
            rows.append(f"{u * 10 + j}\tU{u}\t11/{1 + j}/2019 {1 + u % 11}:00:00 AM\t\t{imp}\n")
    (d / "behaviors.tsv").write_text("".join(rows))
    return d


def test_two_data_sets_of_different_formats_train_together(toy_data, enc, tmp_path):
    from click.testing import CliRunner

    from genre_edge.cli import main

    mind = write_mind(tmp_path / "mind")
    cfg = tmp_path / "movies-news.toml"
    cfg.write_text(f'''name = "movies-news"
[split]
kind = "user_holdout"
[encoder]
path = "{enc}"
max_tokens = 16
trainable_layers = 1
[user_model]
kind = "attention"
max_history = 10
hidden = 16
[cf]
kind = "ease"
neighbors = 20
[train]
epochs = 1
steps_per_epoch = 3
batch_size = 16
negatives = 8
threads = 1
[[domains]]
name = "movies"
source = "{toy_data}"
template = "{{title}} ({{year}}). Genres: {{genres}}."
[[domains]]
name = "news"
source = "{mind}"
format = "mind"
template = "{{title}}. {{abstract}} ({{category}})"
''')
    res = CliRunner().invoke(main, ["train", "--config", str(cfg), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert "2 domains, shared encoder" in res.output and "news" in res.output
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert set(rep["domains"]) == {"movies", "news"}
    assert rep["domains"]["news"]["data"] != rep["domains"]["movies"]["data"]
    texts = json.loads((tmp_path / "out" / "news" / "items.json").read_text())["text"]
    assert texts[0].startswith("Headline 0. Abstract 0 (cat0)")
    rn = json.loads((tmp_path / "out" / "news" / "report.json").read_text())
    assert rn["impression_negatives"]["positives_with_impressions"] > 0.9  # MIND's own negatives in its domain


def test_wise_ft_keeps_the_best_mix_of_every_score():
    import torch

    from genre_edge_export.runloop import wise_ft

    p = torch.nn.Parameter(torch.ones(3))
    theta0 = {"w": torch.zeros(3)}
    seen = []

    def scores():  # two domains' scores: one prefers alpha 0.25, the other 0.75; their sum peaks at 0.5
        a = float(p.detach()[0])
        seen.append(a)
        return {"x": -abs(a - 0.25), "y": -abs(a - 0.75) - 0.1 * abs(a - 0.5)}

    out = wise_ft({"w": p}, theta0, scores)
    assert seen == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert out["alpha"] == 0.5 and torch.allclose(p.detach(), torch.full((3,), 0.5))
    assert [r["alpha"] for r in out["grid"]] == seen and set(out["grid"][0]) == {"alpha", "x", "y"}
    assert wise_ft({"w": p}, {}, scores) is None  # nothing trainable in the tower: nothing to mix
