"""Datasets: official-format readers, bundled offline default, in-memory batches."""
from .datasets import DATASETS, DatasetSpec, ImageData, find_root, load_dataset
from .loader import Batches, augment, stratified_split, to_pixels

__all__ = ["DATASETS", "Batches", "DatasetSpec", "ImageData", "augment", "find_root",
           "load_dataset", "stratified_split", "to_pixels"]
