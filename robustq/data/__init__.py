"""Datasets: official-format readers, bundled offline default, in-memory batches, fetching."""
from . import catalog  # noqa: F401  (registers the datasets)
from .datasets import (DATASETS, DatasetSpec, ImageData, Resource, candidate_roots, find_root,
                       get_spec, load_dataset, user_data_dir, verify)
from .loader import Batches, augment, stratified_split, to_pixels

__all__ = ["DATASETS", "Batches", "DatasetSpec", "ImageData", "Resource", "augment",
           "candidate_roots", "find_root", "get_spec", "load_dataset", "stratified_split",
           "to_pixels", "user_data_dir", "verify"]
