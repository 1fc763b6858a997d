"""The training config: one frozen dataclass per concept, loaded from TOML and validated."""
from __future__ import annotations

import dataclasses
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

from genre_edge import config as cfg
from genre_edge.errors import ConfigError


from .augment import AugmentConfig
from .device import DEVICES
from .precision import PRECISIONS
from .registry import CF_PARTS, HEADS, POOLINGS, USER_MODELS
from .split import SplitConfig
from .trend import TREND_SHARES
from .vocabulary import QueryParserConfig

POPULARITY_CHOICES = ("auto", "static") + tuple(f"trending-{s:g}" for s in TREND_SHARES)
# the fields every item has (Items.fields; runtime catalog.item_text); a template may also name any text column
# of its data ([items] text, a loader's abstract or tags, LLM enrichment's description), checked when the data
# is read (text.item_texts)
TEMPLATE_FIELDS = ("id", "title", "year", "genres", "categories", "category", "subcategory")


@dataclass(frozen=True)
class DataConfig:
    source: str = "ml-100k"  # a known name (fetched on demand) or a path
    format: str = "auto"
    # ratings >= threshold are positives; unset: the data set's own (a generic data TOML's `threshold`, else
    # 4.0). A default of 4.0 here once overrode the data TOML's threshold, which then had no effect at all
    threshold: float | None = cfg.bounded(None, 0.0, None, "ratings >= threshold are positives (unset: the data's own)")
    # A domain of the data set (cross-domain experiments): items with any of include_categories
    # (empty = all) and none of exclude_categories.
    include_categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()
    # LLM item enrichment (genre augment llm): an items.v1.jsonl whose description / keywords become
    # the template fields {description} and {keywords}
    enrichment: str = ""
    # LLM texts about users (genre augment llm), read with user_model.profile_weight: interest profiles
    # (users.v1.jsonl) and synthetic items for users with few interactions (synthetic.v1.jsonl)
    user_profiles: str = ""
    synthetic_items: str = ""


@dataclass(frozen=True)
class EncoderConfig:
    path: str = ""  # a local Hugging Face encoder folder; "" = the packaged all-MiniLM-L6-v2 teacher
    pooling: str = cfg.choice("mean", tuple(POOLINGS))
    max_tokens: int = cfg.bounded(32, 4, 512)
    template: str = "{title} ({year}). Genres: {genres}."
    trainable_layers: int = cfg.bounded(1, 0, 48, "top transformer layers to fine-tune (0 = frozen)")
    adapter: bool = True  # residual linear adapter after pooling (trained)

    def validate(self):
        try:
            names = [f for _, f, _, _ in string.Formatter().parse(self.template) if f is not None]
        except ValueError as exc:
            raise ConfigError(f"encoder.template: {exc}") from None
        for n in names:
            if not n.isidentifier():  # {title.upper}, {0}, {}: format's attribute, index and positional forms
                raise ConfigError(f"encoder.template: {{{n}}} is not a field name; use {', '.join(TEMPLATE_FIELDS)} "
                                  "or a text column of the data ([items] text)")


@dataclass(frozen=True)
class UserModelConfig:
    kind: str = cfg.choice("attention", tuple(USER_MODELS))
    max_history: int = cfg.bounded(50, 1, 1000)
    heads: int = cfg.bounded(4, 1, 32, "nrms: self-attention heads")
    hidden: int = cfg.bounded(128, 8, 4096, "attention: additive-attention hidden size")
    # A user's LLM texts (interest profile, synthetic items), embedded by the item tower and averaged, blended
    # into the user vector with this weight (0 = off) - what serving does with a free-text query and
    # query_weight = this weight.
    profile_weight: float = cfg.bounded(0.0, 0.0, 1.0, "needs data.user_profiles and/or data.synthetic_items")


@dataclass(frozen=True)
class HeadConfig:
    kind: str = cfg.choice("dot", tuple(HEADS))
    hidden: int = cfg.bounded(64, 4, 4096, "mlp: hidden units")
    rerank_top: int = cfg.bounded(200, 10, 100000, "mlp: candidates re-scored by the MLP after the blend")
    # The blend's popularity feature: "static" = log count over all of training; "trending-S" = counts as of
    # the request time, each event fading with a half-life of S x the training log's span (export/trend.py),
    # read on the device as of the request time; "auto" = static or one of the trending half-lives, chosen
    # on validation nDCG@10 with the blend (news: what is popular now; movies: the long-run count).
    popularity: str = cfg.choice("auto", POPULARITY_CHOICES)


@dataclass(frozen=True)
class CFConfig:
    kind: str = cfg.choice("ease", tuple(CF_PARTS))
    neighbors: int = cfg.bounded(200, 1, 100000, "neighbour table size per item (cooccurrence/ease)")
    # EASE's L2 weight; "auto" = chosen on validation nDCG@10 of the CF part alone from the grid the ease-recency
    # baseline searches (EASE_LAMBDAS), jointly with an "auto" side_weight
    ease_lambda: float | str = 250.0
    mf_dim: int = cfg.bounded(64, 2, 1024)
    # Recency: history item at position p from the end votes with floor + (1 - floor) * 0.5 ** (p / half_life).
    # "auto" = half-life and floor chosen on validation nDCG@10 with the blend, from the grid the ease-recency
    # baseline searches (export/baselines.py: RECENCY_GRID) plus no recency (every history item counts the same).
    recency_half_life: str = cfg.choice("auto", ("auto", "0", "5", "10", "25", "50", "100"))
    recency_floor: float = cfg.bounded(0.5, 0.0, 1.0, "weight left to the oldest history items (with a fixed "
                                       "recency_half_life; auto chooses the floor too)")
    # kind = "ease": item similarity added to EASE's Gram matrix (collective EASE; export/baselines.py:
    # ease_weights), so items alike by content vote for each other although no user rated both. "encoder" = the
    # cosine of the config's *pretrained* encoder's item-text embeddings (the language model, before any training);
    # "categories" = of the items' category sets (what the ease-categories baseline uses); "none" = plain EASE.
    side_information: str = cfg.choice("none", ("none", "encoder", "categories"))
    # its weight, in co-ratings (a number >= 0), or "auto" = chosen on validation nDCG@10 of the CF part alone (each
    # weight at its best recency of the grid) from SIDE_WEIGHTS (export/baselines.py), which include 0 (plain EASE)
    side_weight: float | str = "auto"
    # kind = "ease": more neighbour tables for users with short histories. T (> 0): one table for histories of 1 to
    # T items; a list [T1, T2, ...] (ascending): one for 1 to T1 items, one for T1+1 to T2, ... (0 or [] = none).
    # Short histories want more regularisation and a larger CF share than whole ones (benchmarks/short_history.py:
    # on ml-100k lambda 2000-4000 instead of 250, and the CF score x4-16); each table's lambda and side weight are
    # chosen as the main table's, on validation histories cut to its longest length, after training.
    short_history: int | tuple[int, ...] = 0
    short_neighbors: int = cfg.bounded(100, 1, 100000, "each short-history table's neighbours per item (100 did as "
                                       "well as 500 at 1-3 items on ml-100k, at a fifth of the size)")
    # each short-history table's weight in the blend, as a multiple of the main CF weight: "auto" = chosen on
    # validation histories cut to its longest length from SHORT_CF_SCALES (export/calibrate.py), or no such table
    # when none of them beats the main table there; a number >= 0 ships every table with that multiple
    short_scale: float | str = "auto"

    @property
    def short_tiers(self) -> tuple[int, ...]:
        """The longest history each short-history table serves, ascending (empty: none)."""
        v = self.short_history
        return (() if v == 0 else (v,)) if isinstance(v, int) else tuple(v)

    def validate(self):
        tiers = self.short_tiers
        if any(not 1 <= t <= 1000 for t in tiers) or list(tiers) != sorted(set(tiers)) or \
                (isinstance(self.short_history, int) and not 0 <= self.short_history <= 1000):
            raise ConfigError(f"cf.short_history: {self.short_history!r} is not valid; give a history length 1-1000 "
                              "(0 = no short-history table) or an ascending list of them, e.g. [1, 2, 3]")
        for key in ("ease_lambda", "side_weight", "short_scale"):
            v = getattr(self, key)
            if isinstance(v, str) and v != "auto":
                raise ConfigError(f"cf.{key}: {v!r} is not valid; give a number >= 0 or \"auto\"")
            if not isinstance(v, str) and v < 0:
                raise ConfigError(f"cf.{key}: {v!r} is below the minimum 0")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = cfg.bounded(4, 1, 1000)
    steps_per_epoch: int = cfg.bounded(0, 0, None, "0 = one pass over the training positives")
    batch_size: int = cfg.bounded(256, 1, 65536)
    negatives: int = cfg.bounded(128, 1, 100000, "sampled negatives shared by a batch; at least the number of "
                                   "warm items = every warm item once (a full softmax)")
    impression_negatives: int = cfg.bounded(
        4, 0, 1000, "per positive, up to this many items shown in the same impression but not clicked (the "
        "user's label-0 events at the same timestamp, as in MIND); 0 = off. Data without them uses sampled ones only")
    cf_negatives: int = cfg.bounded(
        0, 0, 1000, "per positive, this many hard negatives drawn from the user's cf_negative_pool best items by "
        "the CF part (never a training positive of the user): items CF ranks alike, which content must separate; 0 = off")
    cf_negative_pool: int = cfg.bounded(50, 1, 100000, "how many of the CF part's best items per user cf_negatives "
                                        "draws from")
    # What a training example's user model and CF part see: "before" = the user's training positives strictly
    # before the target event (next-item prediction: what serving does, and what a temporal holdout tests);
    # "others" = every other training positive of the user, later ones included (fill in the blank).
    example_history: str = cfg.choice("others", ("others", "before"))
    lr: float = cfg.bounded(2e-3, 0.0, 1.0)
    encoder_lr: float = cfg.bounded(2e-5, 0.0, 1.0)
    weight_decay: float = cfg.bounded(0.0, 0.0, 1.0)
    seed: int = cfg.bounded(0, 0, cfg.MAX_SEED, "training seed (initialisation, sampling, splits of the data it samples)")
    patience: int = cfg.bounded(2, 0, 1000, "epochs without validation nDCG@10 gain before stopping")
    threads: int = cfg.bounded(0, 0, 256, "torch threads; 0 = all cores")
    precision: str = cfg.choice("fp32", PRECISIONS, "the training step's forward pass: fp32, or bf16 autocast "
                                "(CPUs with AVX-512 BF16/AMX, GPUs from Ampere; export/precision.py)")
    device: str = cfg.choice("cpu", DEVICES, "where training runs: cpu, cuda (torch's GPU; with several processes "
                             "each takes GPU LOCAL_RANK) or auto (cuda when torch sees one; export/device.py)")
    max_eval_users: int = cfg.bounded(0, 0, None, "evaluation during training (epochs, calibration, WiSE-FT, "
                                      "the report) on a fixed random sample of this many users; 0 = all")
    calibrate_blend: bool = True  # fit the head's content/CF/popularity blend on validation nDCG@10
    blend_tolerance: float = cfg.bounded(0.001, 0.0, 0.1, "calibration keeps the largest content weight whose "
                                         "validation nDCG@10 is within this of the best")
    # After training, mix the item tower's trained weights with the pretrained ones (WiSE-FT) and
    # choose the mix on warm validation + cold-validation nDCG@10 (needs split.cold_valid_quantile > 0).
    interpolate: bool = True
    # Few-shot: learn from a seeded sample of this many training positives (0 = all). Users' histories
    # as model input stay whole; popularity is counted on the sample. Content models only (cf.kind = none).
    max_train_positives: int = cfg.bounded(0, 0, None, "0 = all")
    # Transfer: start from a trained model folder (its encoder, adapter, user model and head) instead of
    # the pretrained encoder, and keep the item tower frozen for the first freeze_epochs epochs.
    init_from: str = ""
    freeze_epochs: int = cfg.bounded(0, 0, 1000)


@dataclass(frozen=True)
class DomainConfig:
    """One domain of a multi-domain run (``[[domains]]``): its own data, user model, head, CF part and
    popularity; the item encoder is shared. Empty / unset fields inherit ``[data]``, ``[encoder]`` and
    ``[train]``, so "several categories of one data set" needs only a name and categories, and "several
    data sets" a ``source`` (and usually a ``template``) each."""

    name: str = ""  # required: the model folder <out>/<name>
    source: str = ""
    format: str = ""
    threshold: float | None = cfg.bounded(None, 0.0, None, "unset = data.threshold")
    include_categories: tuple[str, ...] = ()
    exclude_categories: tuple[str, ...] = ()
    enrichment: str = ""
    template: str = ""  # the item text template of this data set ("" = encoder.template)
    max_train_positives: int | None = cfg.bounded(None, 0, None, "few-shot domain; unset = train.max_train_positives")
    steps_per_epoch: int | None = cfg.bounded(None, 0, None, "unset = train.steps_per_epoch")

    def validate(self):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", self.name):
            raise ConfigError(f"name: {self.name!r} is not a valid domain name (it names a folder): use 1-64 letters, "
                              "digits, '_', '-' or '.', starting with a letter or digit")
        if self.template:
            EncoderConfig(template=self.template).validate()


@dataclass(frozen=True)
class Config:
    name: str = "genre"
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    user_model: UserModelConfig = field(default_factory=UserModelConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    cf: CFConfig = field(default_factory=CFConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    query_parser: QueryParserConfig = field(default_factory=QueryParserConfig)
    # Multi-domain (multi-task) training: one shared item encoder, per-domain user model / head / CF part.
    domains: tuple[DomainConfig, ...] = ()

    def validate(self):
        if self.cf.short_tiers and self.cf.kind != "ease":
            raise ConfigError(f"cf.short_history = {self.cf.short_history} needs cf.kind = 'ease' (its tables are "
                              f"EASE chosen for short histories), not {self.cf.kind!r}; or set short_history = 0")
        if self.domains:
            self._validate_domains()
            return
        if self.user_model.profile_weight > 0 and not (self.data.user_profiles or self.data.synthetic_items):
            raise ConfigError("user_model.profile_weight > 0 needs data.user_profiles and/or data.synthetic_items "
                              "(users.v1.jsonl / synthetic.v1.jsonl from 'genre augment llm')")
        if self.train.max_train_positives and self.cf.kind != "none":
            raise ConfigError("train.max_train_positives (few-shot) needs cf.kind = 'none': the CF part would "
                              "still learn from every training interaction")
        if self.train.cf_negatives and self.cf.kind not in ("ease", "cooccurrence"):
            raise ConfigError(f"train.cf_negatives needs cf.kind = 'ease' or 'cooccurrence' (a fitted neighbour table "
                              f"ranks each user's pool before training), not {self.cf.kind!r}; or set cf_negatives = 0")
        if self.cf.side_information == "none" and self.cf.side_weight != "auto":
            raise ConfigError(f"cf.side_weight = {self.cf.side_weight!r} weighs side information, and "
                              "cf.side_information is 'none'; set side_information = 'encoder' or 'categories', or drop "
                              "side_weight")
        if self.cf.side_information != "none" and self.cf.kind != "ease":
            raise ConfigError(f"cf.side_information = {self.cf.side_information!r} needs cf.kind = 'ease' (it joins "
                              f"EASE's Gram matrix), not {self.cf.kind!r}; or set side_information = 'none'")
        if self.head.kind == "mlp" and self.head.rerank_top < 20:
            raise ConfigError("head.rerank_top must be >= 20 with head.kind = 'mlp' (metrics look at the top 20)")

    def _validate_domains(self):
        names = [d.name for d in self.domains]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"domains: the name {dup[0]!r} is used twice; each domain needs its own name")
        if len(self.domains) < 2:
            raise ConfigError("domains: a multi-domain run needs at least 2 [[domains]] (for one, use [data])")
        if self.data.include_categories or self.data.exclude_categories:
            raise ConfigError("data.include_categories / exclude_categories: with [[domains]], set the categories "
                              "in each domain")
        for d in self.domains:
            try:
                self.for_domain(d.name).validate()
            except ConfigError as exc:
                raise ConfigError(f"domains ({d.name}): {exc}") from None

    def for_domain(self, name: str) -> "Config":
        """The single-domain config of domain ``name``: what its model folder records, so that distill,
        export and init_from read it like any other trained model."""
        d = {x.name: x for x in self.domains}.get(name)
        if d is None:
            raise ConfigError(f"no domain {name!r}; domains are: {', '.join(x.name for x in self.domains)}")
        data = dataclasses.replace(
            self.data, source=d.source or self.data.source, format=d.format or self.data.format,
            threshold=self.data.threshold if d.threshold is None else d.threshold,
            include_categories=d.include_categories, exclude_categories=d.exclude_categories,
            enrichment=d.enrichment or self.data.enrichment)
        train = dataclasses.replace(
            self.train,
            max_train_positives=self.train.max_train_positives if d.max_train_positives is None else d.max_train_positives,
            steps_per_epoch=self.train.steps_per_epoch if d.steps_per_epoch is None else d.steps_per_epoch)
        return dataclasses.replace(self, name=f"{self.name}.{d.name}", data=data, train=train, domains=(),
                                   encoder=dataclasses.replace(self.encoder,
                                                               template=d.template or self.encoder.template))


def load_config(path: str | Path, overrides: dict | None = None) -> Config:
    """Load a training config; unknown keys and bad values name the file, key and choices. A relative path
    in it (data source, enrichment, user texts, domains' sources) that is not there from the working
    directory but is next to the config is read from there (``source = "data.toml"`` beside ``my.toml`` failed
    with "no such data folder" when genre ran from another folder)."""
    conf = cfg.load(Config, path, overrides)
    return _paths_near(conf, Path(path).parent)


def _paths_near(conf: Config, base: Path) -> Config:
    from .data.fetch import DATASETS

    def near(value: str) -> str:
        if not value or value in DATASETS or Path(value).is_absolute() or Path(value).exists():
            return value
        return str(base / value) if (base / value).exists() else value

    data = dataclasses.replace(conf.data, source=near(conf.data.source), enrichment=near(conf.data.enrichment),
                               user_profiles=near(conf.data.user_profiles),
                               synthetic_items=near(conf.data.synthetic_items))
    domains = tuple(dataclasses.replace(d, source=near(d.source), enrichment=near(d.enrichment)) for d in conf.domains)
    return dataclasses.replace(conf, data=data, domains=domains)


def packaged_config(name: str) -> Path:
    """Path of a config shipped under ``export/configs/``."""
    from importlib.resources import files

    root = Path(str(files("genre_edge_export.configs")))
    p = root / f"{name}.toml"
    if not p.is_file():
        names = sorted(q.stem for q in root.glob("*.toml"))
        raise ConfigError(f"no packaged config {name!r} and no such file; packaged: {', '.join(names)}")
    return p
