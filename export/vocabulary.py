"""The request parser's vocabulary for a catalog: each category's name forms plus synonyms.

It travels in the bundle manifest (``query_parser.vocabulary``), so a device parses requests with the
words its catalog was exported with. Synonyms are names a user may call a category by ("science
fiction" for Sci-Fi, "kids" for Children's), not moods: "funny" or "scary" are left to the encoder,
which weighs them against everything else in the request.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from genre_edge.bundle import QueryParserSpec
from genre_edge.errors import ConfigError
from genre_edge.query_parser import category_phrases


@dataclass(frozen=True)
class QueryParserConfig:
    """``[query_parser]`` of a training config: how requests name this data set's categories."""
    builtin: bool = True  # use the built-in synonyms of well-known category names
    synonyms: dict[str, tuple[str, ...]] = field(default_factory=dict)  # category -> extra phrases


def vocabulary(categories, conf: QueryParserConfig | None = None) -> QueryParserSpec:
    """Category -> phrases for every category of the catalog (``unknown`` and empty names left out)."""
    conf = conf or QueryParserConfig()
    unknown = sorted(set(conf.synonyms) - set(categories))
    if unknown:
        raise ConfigError(f"query_parser.synonyms: {unknown[0]!r} is not a category of this catalog; "
                          f"it has: {', '.join(sorted(c for c in set(categories) if c))}")
    vocab = {}
    for c in sorted(set(categories)):
        if not c or c == "unknown":
            continue
        vocab[c] = tuple(dict.fromkeys((*category_phrases(c, conf.builtin),
                                        *(p.lower() for p in conf.synonyms.get(c, ())))))
    return QueryParserSpec(vocabulary=vocab)
