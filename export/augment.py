"""Text augmentation without an LLM: field dropout, token deletion / swap, WordNet synonyms.

Training pre-renders ``variants`` augmented texts per item (the frozen encoder layers are cached
per text, so they must exist up front) and shows one of them instead of the item's own text for
a ``prob`` share of training examples; evaluation always reads the real text. Distillation adds
the same variants as extra views.

Synonyms come from WordNet 3.0's database files (Princeton's ``dict/`` folder: ``index.*``,
``data.*``, ``*.exc``) read offline with nltk's ``WordNetCorpusReader``: Debian/Ubuntu ``apt-get
install wordnet-base`` puts them in ``/usr/share/wordnet``; NLTK's ``corpora/wordnet`` folder has the
same files. A word (any inflected form: "stories", "toys") is replaced by another lemma of its most
frequent sense only (``story`` -> ``narrative``, never ``floor``).
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

from . import require

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
    seed: int = cfg.bounded(0, 0, cfg.MAX_SEED, "seed of the augmented texts")

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


# WordNet 3.0's 45 lexicographer files, in the order of their numbers: nltk's reader needs a `lexnames`
# file, which Debian's wordnet-base does not ship (it is the same for every WordNet 3.0 database)
LEXNAMES = ("adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
            "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
            "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
            "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
            "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
            "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather "
            "adj.ppl").split()
_LEX_POS = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}
_NLTK_POS = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}


def _reader_view(folder: Path) -> Path:
    """A folder nltk's WordNetCorpusReader accepts: copies of the database files of ``folder`` (~30 MB;
    nltk refuses links that leave its data folders), plus what a bare ``dict/`` folder may lack
    (``lexnames``; empty exception/count files and empty parts of speech). The user's folder is
    never written to; the copy is removed when the process ends."""
    import atexit
    import shutil
    import tempfile

    view = Path(tempfile.mkdtemp(prefix="genre-wordnet-"))
    atexit.register(shutil.rmtree, view, True)
    for pos in _POS:
        for kind in ("index", "data"):
            src = folder / f"{kind}.{pos}"
            if src.is_file():
                shutil.copyfile(src, view / src.name)
            else:
                (view / src.name).write_text("")
        exc = folder / f"{pos}.exc"
        shutil.copyfile(exc, view / exc.name) if exc.is_file() else (view / exc.name).write_text("")
    for name in ("lexnames", "cntlist.rev"):
        if (folder / name).is_file():
            shutil.copyfile(folder / name, view / name)
    if not (view / "lexnames").exists():
        (view / "lexnames").write_text("".join(f"{i:02d}\t{n}\t{_LEX_POS[n.split('.')[0]]}\n"
                                                for i, n in enumerate(LEXNAMES)))
    if not (view / "cntlist.rev").exists():
        (view / "cntlist.rev").write_text("")
    return view


class Synonyms:
    """word -> other lemmas of its most frequent sense, through nltk's ``WordNetCorpusReader``.

    A word form is reduced to its lemma with WordNet's morphology (``morphy``: the exception lists
    and the detachment rules, so "stories" -> "story", "loved" -> "love"); of the parts of speech it
    can be, the one whose first sense is tagged most often in SemCor wins ("funny": adjective). A
    regularly inflected form gets its one-word synonyms inflected the same way ("stories" ->
    "narratives"); an irregular one ("went") gets none rather than a wrong form.
    """

    def __init__(self, folder: str | Path):
        import warnings

        nltk_data = require("nltk.data", "export", "WordNet synonyms (augment.synonyms)")
        from nltk.corpus.reader.wordnet import WordNetCorpusReader

        class Reader(WordNetCorpusReader):
            def map_wn(self, version="wordnet"):
                # one database read as it is: no mapping to another WordNet version (which would look
                # for nltk's downloaded 'wordnet' corpus; nothing is downloaded here)
                return None

        self.folder = Path(folder)
        view = _reader_view(self.folder)
        if str(view) not in nltk_data.path:  # nltk reads only folders its data path allows
            nltk_data.path.append(str(view))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "multilingual functions are not available": not used here
            try:
                self.wn = Reader(str(view), None)
            except (OSError, ValueError, AssertionError, IndexError) as exc:
                raise ConfigError(f"{folder}: not a readable WordNet database ({exc})") from None
        self._cache: dict[str, tuple[str, ...]] = {}

    def get(self, word: str, default=()) -> tuple[str, ...]:
        w = word.lower()
        if w not in self._cache:
            self._cache[w] = self._lookup(w)
        return self._cache[w] or default

    def __contains__(self, word: str) -> bool:
        return bool(self.get(word))

    def __getitem__(self, word: str) -> tuple[str, ...]:
        got = self.get(word)
        if not got:
            raise KeyError(word)
        return got

    def _lookup(self, word: str) -> tuple[str, ...]:
        best, best_tags = (), -1
        for pos in _POS:
            p = _NLTK_POS[pos]
            for base in self.wn._morphy(word, p):  # every lemma the form can come from
                if "_" in base:
                    continue
                senses = self.wn.synsets(base, p)
                if not senses:
                    continue
                lemmas = senses[0].lemmas()
                tags = sum(lem.count() for lem in lemmas if lem.name().lower() == base)
                syn = [re.sub(r"\(.*\)$", "", lem.name()).replace("_", " ").lower() for lem in lemmas]
                syn = list(dict.fromkeys(x for x in syn if x != base))
                if base != word:
                    syn = [y for y in (_inflect(x, base, word, pos) for x in syn) if y]
                if syn and tags > best_tags:
                    best, best_tags = tuple(syn), tags
        return best


def _inflect(syn: str, base: str, form: str, pos: str) -> str | None:
    """``syn`` inflected as ``form`` is of ``base`` when that inflection is a regular one; else None."""
    if " " in syn or "-" in syn:
        return None
    if pos == "noun" and form in (base + "s", base + "es", base[:-1] + "ies"):
        return _plural(syn)
    if pos == "verb":
        if form in (base + "s", base + "es", base[:-1] + "ies"):
            return _plural(syn)
        if form in (base + "ed", base + "d", base[:-1] + "ied", base + base[-1] + "ed"):
            return syn + "d" if syn.endswith("e") else syn[:-1] + "ied" if _consonant_y(syn) else syn + "ed"
        if form in (base + "ing", base[:-1] + "ing", base + base[-1] + "ing"):
            return (syn[:-1] if syn.endswith("e") and not syn.endswith("ee") else syn) + "ing"
    return None


def _consonant_y(w: str) -> bool:
    return len(w) > 1 and w.endswith("y") and w[-2] not in "aeiou"


def _plural(w: str) -> str:
    if _consonant_y(w):
        return w[:-1] + "ies"
    return w + "es" if w.endswith(("s", "x", "z", "ch", "sh")) else w + "s"


@lru_cache(maxsize=4)
def load_synonyms(folder: str) -> Synonyms:
    """The synonyms of the WordNet database in ``folder`` (a ``dict/`` folder: index.*, data.*, *.exc)."""
    syn = Synonyms(folder)
    log.info("WordNet: synonyms from %s (nltk's reader)", folder)
    return syn


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
            options = synonyms.get(low, ()) if _WORD.match(core) and low not in _KEEP else ()
            if options and rng.random() < conf.synonyms:
                s = options[int(rng.integers(len(options)))]
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
