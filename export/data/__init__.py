"""Data layer: one normalized schema for every supported format, plus fetching and stats."""
from .schema import Dataset, Impression, Interactions, Items
from .loaders import LOADERS, load_dataset

__all__ = ["Dataset", "Impression", "Interactions", "Items", "LOADERS", "load_dataset"]
