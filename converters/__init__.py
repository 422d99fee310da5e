"""Converters: any SSL ResNet checkpoint in; detectron2, mmsegmentation, timm, torchvision out.

Everything passes through one canonical form (:mod:`converters.canonical`): a torchvision-named
ResNet state dict plus metadata. Readers recognise their source by its keys
(:mod:`converters.formats`), writers rename through tables (:mod:`converters.tables`), and every
conversion returns a :class:`~converters.report.ConversionReport`.

Python API::

    sd, meta, report = read_checkpoint("moco_v2_800ep.pth.tar")          # online encoder
    sd, meta, report = read_checkpoint("dino.pth", momentum=True)         # teacher
    backbone, meta = load_any_backbone("solo.ckpt")                       # a ResNetBackbone
    report = convert("byol.ckpt", "detectron2", "byol_r50.pkl")
"""
from __future__ import annotations

from .canonical import deduce_arch
from .convert import convert, load_any_backbone
from .formats import LAYOUTS
from .readers import describe, read_checkpoint
from .report import ConversionReport
from .writers import WRITERS



def __getattr__(name: str):
    """``READERS``: the names of the readable checkpoint layouts, computed on access so that a
    layout registered later (``formats.register_layout``) is listed too."""
    if name == "READERS":
        return [layout.name for layout in LAYOUTS]
    raise AttributeError(f"module 'converters' has no attribute {name!r}")

__all__ = [
    "ConversionReport", "LAYOUTS", "READERS", "WRITERS", "convert", "deduce_arch", "describe",
    "load_any_backbone", "read_checkpoint",
]
