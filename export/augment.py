"""Text augmentation without an LLM: field dropout, token deletion / swap, WordNet synonyms.

Training pre-renders ``variants`` augmented texts per item (the frozen encoder layers are cached
per text, so they must exist up front) and shows one of them instead of the item's own text for
a ``prob`` share of training examples; evaluation always reads the real text. Distillation adds
the same variants as extra views.

Synonyms come from WordNet 3.0's database files (Princeton's ``dict/`` folder: ``index.*`` and
``data.*``), read offline: Debian/Ubuntu ``apt-get install wordnet-base`` puts them in
``/usr/share/wordnet``; NLTK's ``corpora/wordnet`` folder has the same files. A word is replaced
by another lemma of its most frequent sense only (``story`` -> ``narrative``, never ``floor``).
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from genre_edge import config as cfg
from genre_edge.errors import ConfigError
from genre_edge.text_template import render, template_fields

log = logging.getLogger(__name__)

WORDNET_DIRS = ("/usr/share/wordnet", "/usr/local/share/wordnet", "~/nltk_data/corpora/wordnet")
_POS = ("noun", "verb", "adj", "adv")
_WORD = re.compile(r"^[A-Za-z][a-z]{2,}$")
# function words and the template's own labels: replacing them adds noise, not meaning
_KEEP = frozenset("the and for with from into over about after under that this these those are was were "
                  "has have had not but all any its his her their our your genres genre".split())


@dataclass(frozen=True)
class AugmentConfig:
    field_dropout: float = cfg.bounded(0.0, 0.0, 1.0, "drop each template field but the title with this chance")
    token_deletion: float = cfg.bounded(0.0, 0.0, 1.0, "delete each word with this chance")
    token_swap: float = cfg.bounded(0.0, 0.0, 1.0, "swap each word with its right neighbour with this chance")
    synonyms: float = cfg.bounded(0.0, 0.0, 1.0, "replace each content word by a WordNet synonym with this chance")
    wordnet: str = ""  # WordNet dict folder; "" = search WORDNET_DIRS and $WNHOME/dict
    variants: int = cfg.bounded(2, 0, 16, "augmented texts pre-rendered per item")
    prob: float = cfg.bounded(0.5, 0.0, 1.0, "share of training examples shown an augmented text")
    seed: int = 0

    @property
    def active(self) -> bool:
        return self.variants > 0 and self.prob > 0 and any(
            (self.field_dropout, self.token_deletion, self.token_swap, self.synonyms))


def find_wordnet(path: str = "") -> Path:
    cands = [path] if path else [*WORDNET_DIRS, *([os.environ["WNHOME"] + "/dict"] if "WNHOME" in os.environ else [])]
    for c in cands:
        p = Path(c).expanduser()
        if all((p / f"{f}.{pos}").is_file() for f in ("index", "data") for pos in ("noun", "adj")):
            return p
    raise ConfigError(f"augment.synonyms needs WordNet's database files (index.noun, data.noun, ...); not found in "
                      f"{', '.join(cands)}. Install them offline with 'apt-get install wordnet-base' (Debian/Ubuntu) "
                      "or set augment.wordnet to a WordNet dict folder")


@lru_cache(maxsize=4)
def load_synonyms(folder: str) -> dict[str, tuple[str, ...]]:
    """word -> other lemmas of its most frequent sense (per part of speech, merged), from WordNet files."""
    best: dict[str, tuple[int, list[str]]] = {}  # lemma -> (SemCor tag count of the part of speech, lemmas)
    root = Path(folder)
    for pos in _POS:
        idx, data = root / f"index.{pos}", root / f"data.{pos}"
        if not idx.is_file() or not data.is_file():
            continue
        first: dict[str, tuple[int, int]] = {}
        with open(idx, encoding="latin-1") as fh:
            for line in fh:
                if line.startswith(" "):
                    continue  # licence header
                f = line.split()
                try:  # lemma pos synset_cnt p_cnt [ptr...] sense_cnt tagsense_cnt offsets (most frequent first)
                    n_ptr = int(f[3])
                    first[f[0]] = (int(f[4 + n_ptr + 1]), int(f[4 + n_ptr + 2]))
                except (IndexError, ValueError):
                    continue
        wanted = {off for _, off in first.values()}
        words_of: dict[int, list[str]] = {}
        with open(data, encoding="latin-1") as fh:
            for line in fh:
                if line.startswith(" "):
                    continue
                f = line.split()
                try:
                    off, n = int(f[0]), int(f[3], 16)
                except (IndexError, ValueError):
                    continue
                if off in wanted:
                    words_of[off] = [re.sub(r"\(.*\)$", "", w).replace("_", " ").lower() for w in f[4: 4 + 2 * n: 2]]
        for lemma, (tags, off) in first.items():
            syn = [w for w in words_of.get(off, []) if w != lemma.replace("_", " ")]
            # the part of speech whose senses are tagged most often in SemCor wins ("funny": adjective)
            if syn and "_" not in lemma and (lemma not in best or tags > best[lemma][0]):
                best[lemma] = (tags, syn)
    out = {k: tuple(v) for k, (_, v) in best.items()}
    if not out:
        raise ConfigError(f"{folder}: no WordNet synonyms could be read (expected index.* and data.* files)")
    log.info("WordNet: synonyms for %d words from %s", len(out), folder)
    return out


def augment_text(template: str, fields: dict[str, str], conf: AugmentConfig, rng: np.random.Generator,
                 synonyms: dict[str, tuple[str, ...]] | None = None) -> str:
    """One augmented rendering of an item (the title is never dropped)."""
    f = dict(fields)
    if conf.field_dropout:
        for name in template_fields(template):
            if name != "title" and rng.random() < conf.field_dropout:
                f[name] = ""
    words = render(template, f).split()
    if conf.synonyms and synonyms:
        for i, w in enumerate(words):
            core = w.strip(".,;:()!?\"'")
            low = core.lower()
            if _WORD.match(core) and low not in _KEEP and low in synonyms and rng.random() < conf.synonyms:
                s = synonyms[low][int(rng.integers(len(synonyms[low])))]
                words[i] = w.replace(core, s.capitalize() if core[0].isupper() else s)
    if conf.token_deletion and len(words) > 2:
        keep = [w for w in words if rng.random() >= conf.token_deletion]
        words = keep if len(keep) >= 2 else words[:2]
    if conf.token_swap:
        for i in range(len(words) - 1):
            if rng.random() < conf.token_swap:
                words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def augmented_texts(items, template: str, conf: AugmentConfig) -> list[list[str]]:
    """``conf.variants`` lists of augmented item texts (each as long as the catalog), seeded."""
    if not conf.active:
        return []
    syn = load_synonyms(str(find_wordnet(conf.wordnet))) if conf.synonyms else None
    rng = np.random.default_rng(conf.seed)
    return [[augment_text(template, items.fields(i), conf, rng, syn) for i in range(len(items))]
            for _ in range(conf.variants)]
