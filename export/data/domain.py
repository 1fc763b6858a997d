"""Domains: the items of some categories of a data set (cross-domain and multi-domain training)."""
from __future__ import annotations

import logging

import numpy as np

from genre_edge.errors import ConfigError

log = logging.getLogger(__name__)


def domain(dataset, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()):
    """Items with any category of ``include`` (empty: all) and none of ``exclude`` (a domain)."""
    if not include and not exclude:
        return dataset
    cats = dataset.items.categories
    known = sorted({c for cs in cats for c in cs})
    bad = [c for c in (*include, *exclude) if c not in known]
    if bad:
        raise ConfigError(f"data.include_categories / exclude_categories: unknown categor{'ies' if len(bad) > 1 else 'y'} "
                          f"{', '.join(map(repr, bad))}; this data set has: {', '.join(known)}")
    keep = np.array([(not include or any(c in include for c in cs)) and not any(c in exclude for c in cs)
                     for cs in cats])
    if not keep.any():
        raise ConfigError("data.include_categories / exclude_categories leave no items")
    name = dataset.name + "[" + "+".join(include) + ("-" + "-".join(exclude) if exclude else "") + "]"
    log.info("domain %s: %d of %d items", name, int(keep.sum()), len(keep))
    return dataset.subset_items(keep, name)
