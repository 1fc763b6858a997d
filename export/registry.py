"""Explicit registries of the configurable parts. Values are ``module:attr`` strings resolved
lazily, so importing the registry never imports torch."""
from __future__ import annotations

import importlib

POOLINGS = {"mean": "masked mean over tokens", "cls": "the [CLS] token"}
USER_MODELS = {
    "mean": "genre_edge_export.models:MeanUser",
    "attention": "genre_edge_export.models:AttentionUser",
    "nrms": "genre_edge_export.models:NRMSUser",
    "sasrec": "genre_edge_export.models:SASRecUser",
}
HEADS = {
    "dot": "genre_edge_export.models:DotHead",
    "mlp": "genre_edge_export.models:MLPHead",
}
CF_PARTS = {
    "none": "no collaborative signal",
    "cooccurrence": "item-item cosine co-occurrence neighbour table",
    "ease": "item-item EASE closed-form neighbour table",
    "mf": "item factors learned jointly (user = mean of history factors)",
}


def resolve(registry: dict, key: str):
    mod, _, attr = registry[key].partition(":")
    return getattr(importlib.import_module(mod), attr)
