"""Segmentation data: readers for the standard layouts (Pascal VOC 2012 + aug, Cityscapes,
ADE20K), the nuclei set from the stardist wheel, and a synthetic shapes generator. Every reader
returns :class:`SegDataset` splits of (RGB uint8 image, int64 label map with 255 = ignore)."""
from .base import IGNORE_INDEX, ArraySegDataset, FileSegDataset, SegDataset, check_sample
from .layouts import (ADE_CLASSES, ADE_LAYOUT, CITYSCAPES_CLASSES, CITYSCAPES_LAYOUT, VOC_CLASSES, VOC_LAYOUT,
                      read_ade, read_cityscapes, read_voc)
from .nuclei import find_nuclei, read_nuclei
from .shapes import VOC_PALETTE, write_shapes

__all__ = ["IGNORE_INDEX", "SegDataset", "FileSegDataset", "ArraySegDataset", "check_sample", "read_voc",
           "read_cityscapes", "read_ade", "read_nuclei", "find_nuclei", "write_shapes", "VOC_CLASSES",
           "CITYSCAPES_CLASSES", "ADE_CLASSES", "VOC_LAYOUT", "CITYSCAPES_LAYOUT", "ADE_LAYOUT", "VOC_PALETTE"]
