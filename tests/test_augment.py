"""Text augmentation: WordNet files read offline, each operation, and its use in training and distillation."""
import numpy as np
import pytest

from conftest import have_export

pytestmark = pytest.mark.skipif(not have_export(), reason="export extra not installed")

HEADER = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
# WordNet 3.0 file format: index lines "lemma pos synset_cnt p_cnt [ptrs] sense_cnt tagsense_cnt offsets",
# data lines "offset lex_filenum ss_type w_cnt(hex) word lex_id ... p_cnt ... | gloss"
INDEX_NOUN = HEADER + ("story n 2 1 @ 2 5 00000100 00000200  \n"
                       "toy n 1 1 @ 1 1 00000300  \n"
                       "funny n 1 0 1 0 00000400  \n")
DATA_NOUN = HEADER + ("00000100 10 n 03 story 0 narrative 0 tale 0 000 | a message that tells events  \n"
                      "00000200 04 n 02 story 0 floor 0 000 | a level of a building  \n"
                      "00000300 06 n 02 toy 0 plaything 0 000 | an artifact for play  \n"
                      "00000400 10 n 02 funny 0 funny_story 0 000 | a joke  \n")
INDEX_ADJ = HEADER + "funny a 1 0 1 3 00000500  \n"
DATA_ADJ = HEADER + "00000500 00 a 03 funny 0 amusing 0 comic(a) 0 000 | arousing laughter  \n"


@pytest.fixture
def wordnet(tmp_path):
    for name, text in (("index.noun", INDEX_NOUN), ("data.noun", DATA_NOUN), ("index.adj", INDEX_ADJ),
                       ("data.adj", DATA_ADJ)):
        (tmp_path / name).write_text(text)
    return tmp_path


def test_synonyms_come_from_the_most_frequent_sense_and_the_most_tagged_part_of_speech(wordnet):
    from genre_edge_export.augment import find_wordnet, load_synonyms

    syn = load_synonyms(str(find_wordnet(str(wordnet))))
    assert syn["story"] == ("narrative", "tale")  # never "floor" (a rarer sense)
    assert syn["toy"] == ("plaything",)
    assert syn["funny"] == ("amusing", "comic")  # adjective (3 SemCor tags) beats the noun (0); "(a)" stripped


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
