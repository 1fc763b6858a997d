"""Text augmentation: WordNet files read offline, each operation, and its use in training and distillation."""
import numpy as np
import pytest

from conftest import have_export

pytestmark = pytest.mark.skipif(not have_export(), reason="export extra not installed")

HEADER = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
# A miniature WordNet 3.0 dict/ folder in the real file format, as Debian's wordnet-base ships it (no
# lexnames file): data lines "offset lex_filenum ss_type w_cnt(hex) word lex_id ... p_cnt [frames] | gloss",
# where offset is the line's byte offset in the file; index lines "lemma pos synset_cnt p_cnt [ptrs]
# sense_cnt tagsense_cnt offsets (most frequent sense first)"
SYNSETS = {  # pos -> [(name, lex_filenum, words, gloss)]
    "noun": [("story1", 10, ["story", "narrative", "tale"], "a message that tells events"),
             ("story2", 4, ["story", "floor"], "a level of a building"),
             ("toy1", 6, ["toy", "plaything"], "an artifact for play"),
             ("funny1", 10, ["funny", "funny_story"], "a joke")],
    "adj": [("funny2", 0, ["funny", "amusing", "comic(a)"], "arousing laughter")],
    "verb": [("love1", 37, ["love", "adore"], "have a great affection for"),
             ("run1", 38, ["run", "scarper"], "move fast")],
}
EXC = {"verb": "ran run\n"}
# SemCor tag counts by sense key (sorted: nltk searches the file): the adjective "funny" is tagged 3 times
CNTLIST = "funny%3:00:00:: 1 3\n"


@pytest.fixture
def wordnet(tmp_path):
    letter = {"noun": "n", "verb": "v", "adj": "a"}
    for pos, synsets in SYNSETS.items():
        data, offsets, senses = HEADER, {}, {}
        for name, lex, words, gloss in synsets:
            offsets[name] = len(data.encode())
            body = " ".join(f"{w} 0" for w in words)
            frames = " 00" if pos == "verb" else ""
            data += f"{offsets[name]:08d} {lex:02d} {letter[pos]} {len(words):02x} {body} 000{frames} | {gloss}  \n"
            for w in words:
                senses.setdefault(w.split("(")[0].lower(), []).append(name)
        index = HEADER + "".join(f"{w} {letter[pos]} {len(ns)} 0 {len(ns)} 0 {' '.join(f'{offsets[n]:08d}' for n in ns)}  \n"
                                 for w, ns in sorted(senses.items()))
        (tmp_path / f"data.{pos}").write_text(data)
        (tmp_path / f"index.{pos}").write_text(index)
    for pos, text in EXC.items():
        (tmp_path / f"{pos}.exc").write_text(text)
    (tmp_path / "cntlist.rev").write_text(CNTLIST)
    return tmp_path


def test_synonyms_come_from_the_most_frequent_sense_and_the_most_tagged_part_of_speech(wordnet):
    from genre_edge_export.augment import find_wordnet, load_synonyms

    syn = load_synonyms(str(find_wordnet(str(wordnet))))
    assert syn["story"] == ("narrative", "tale")  # never "floor" (a rarer sense)
    assert syn["toy"] == ("plaything",)
    assert syn["funny"] == ("amusing", "comic")  # adjective (3 SemCor tags) beats the noun (0); "(a)" stripped
    # word forms (nltk's morphy): regular inflections carry over to the synonym, irregular ones get none
    assert syn["stories"] == ("narratives", "tales") and syn["toys"] == ("playthings",)
    assert syn.get("loved") == ("adored",) and syn.get("loving") == ("adoring",) and syn.get("runs") == ("scarpers",)
    assert syn.get("ran") == () and syn.get("unknownword") == () and "the" not in syn
    assert not list((wordnet).glob("lexnames"))  # the user's folder is read, never written to


def test_missing_wordnet_names_the_fix(tmp_path):
    from genre_edge.errors import ConfigError
    from genre_edge_export.augment import find_wordnet

    with pytest.raises(ConfigError, match="apt-get install wordnet-base"):
        find_wordnet(str(tmp_path))


def test_each_operation(wordnet):
    from genre_edge_export.augment import AugmentConfig, augment_text, load_synonyms

    tpl, f = "{title} ({year}). Genres: {genres}.", {"title": "Toy Story", "year": "1995", "genres": "Comedy"}
    rng = np.random.default_rng(0)
    assert augment_text(tpl, f, AugmentConfig(field_dropout=1.0), rng) == "Toy Story."  # title is kept
    syn = load_synonyms(str(wordnet))
    assert augment_text(tpl, f, AugmentConfig(synonyms=1.0), rng, syn) == \
        "Plaything Narrative (1995). Genres: Comedy."  # capitalisation kept; "Genres" is a label
    got = augment_text(tpl, f, AugmentConfig(token_deletion=0.99), rng)
    assert len(got.split()) == 2  # never fewer than two words
    swapped = augment_text(tpl, f, AugmentConfig(token_swap=1.0), np.random.default_rng(1))
    assert sorted(swapped.split()) == sorted("Toy Story (1995). Genres: Comedy.".split()) and swapped != \
        "Toy Story (1995). Genres: Comedy."
    assert not AugmentConfig().active and AugmentConfig(token_swap=0.1).active
    assert not AugmentConfig(token_swap=0.1, variants=0).active


def test_training_and_distillation_read_augmented_texts(toy_data, tmp_path, wordnet):
    import dataclasses

    from conftest import tiny_config, tiny_encoder
    from genre_edge_export.augment import AugmentConfig
    from genre_edge_export.distill import DistillConfig, distill
    from genre_edge_export.train import train
    from genre_edge_export.trainer import Trainer

    aug = AugmentConfig(field_dropout=0.5, token_deletion=0.2, synonyms=0.5, wordnet=str(wordnet), variants=2, prob=1.0)
    conf = dataclasses.replace(tiny_config(toy_data, tiny_encoder(tmp_path / "enc")), augment=aug)
    t = Trainer(conf, tmp_path / "t", progress=False)
    n = len(t.texts)
    assert len(t.aug_texts) == 2 and all(len(v) == n for v in t.aug_texts)
    assert t.ids_all.shape[0] == 3 * n and np.array_equal(t.ids, t.ids_all[:n])
    assert any(a != b for a, b in zip(t.aug_texts[0], t.texts))
    t._bottom_cache()
    assert t.bottom.shape[0] == 3 * n
    # training rows are drawn from the augmented copies (prob 1.0); evaluation reads the real texts
    t.rng = np.random.default_rng(0)
    ref = t.encode(np.arange(n), grad=False)
    aug_e = t.encode(np.arange(n), grad=True)
    assert aug_e.shape == ref.shape and not np.allclose(aug_e.detach().numpy(), ref.numpy())
    assert np.allclose(t.all_embeddings(), ref.numpy(), atol=1e-6)
    rep = train(conf, tmp_path / "teacher", progress=False)
    assert rep["teacher"]["test"]["users"] > 0
    d = distill(tmp_path / "teacher", DistillConfig(layers=(0,), epochs=1, threads=1, augment=aug),
                tmp_path / "student", progress=False)
    assert d["config"]["augment"]["synonyms"] == 0.5


@pytest.mark.skipif(not all(__import__("pathlib").Path("/usr/share/wordnet", f).is_file() for f in ("index.noun", "data.noun")),
                    reason="Debian's wordnet-base is not installed (`make test` installs it where apt-get runs as root)")
def test_the_real_wordnet_database_through_nltk():
    """Debian's WordNet 3.0 (no lexnames file there): word forms get inflected synonyms of their first sense."""
    from genre_edge_export.augment import load_synonyms

    syn = load_synonyms("/usr/share/wordnet")
    assert "narrative" in syn["story"] and "floor" not in syn["story"]
    assert "narratives" in syn["stories"] and "playthings" in syn["toys"]
    assert "amusing" in syn["funny"] and syn.get("the") == ()
