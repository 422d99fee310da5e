"""Datasets, batched augmentation and deterministic batch streams."""
from .augment import AugmentConfig, TwoViewAugment, eval_transform
from .datasets import DATASETS, ImageDataset, build_dataset, read_idx
from .loader import StepBatches, iterate_batches

__all__ = ["AugmentConfig", "TwoViewAugment", "eval_transform", "DATASETS", "ImageDataset",
           "build_dataset", "read_idx", "StepBatches", "iterate_batches"]
