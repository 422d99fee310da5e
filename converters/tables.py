"""Rename tables: ordered regex substitutions applied one after another to every key.

A table is data, not code: a converter is a table plus a check that the renamed keys form the
expected layout. The detectron2 table is the one facebookresearch/moco
``detection/convert-pretrain-to-detectron2.py`` (and detectron2
``tools/convert-torchvision-to-d2.py``) apply: ``layer{t} -> res{t+1}``, ``bn{t} -> conv{t}.norm``,
stem keys under ``stem.``, ``downsample.0 -> shortcut``, ``downsample.1 -> shortcut.norm``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple


@dataclass(frozen=True)
class RenameTable:
    """Ordered ``(pattern, replacement)`` pairs, each applied with ``re.sub`` in turn."""

    name: str
    rules: Tuple[Tuple[str, str], ...]

    def rename(self, key: str) -> str:
        for pattern, repl in self.rules:
            key = re.sub(pattern, repl, key)
        return key

    def apply(self, keys: Sequence[str]) -> List[Tuple[str, str]]:
        """``[(old, new)]`` for all keys; raises ValueError if two keys land on one name."""
        pairs = [(k, self.rename(k)) for k in keys]
        seen: Dict[str, str] = {}
        for old, new in pairs:
            if new in seen:
                raise ValueError(f"table {self.name}: {seen[new]!r} and {old!r} both map to {new!r}")
            seen[new] = old
        return pairs


IDENTITY = RenameTable("identity", ())

# torchvision -> detectron2 (MoCo's detection/convert-pretrain-to-detectron2.py, rule for rule).
TORCHVISION_TO_D2 = RenameTable(
    "torchvision->detectron2",
    (
        (r"^conv1\.", "stem.conv1."),
        (r"^bn1\.", "stem.conv1.norm."),
        (r"^layer1\.", "res2."),
        (r"^layer2\.", "res3."),
        (r"^layer3\.", "res4."),
        (r"^layer4\.", "res5."),
        (r"\.bn([1-3])\.", r".conv\1.norm."),
        (r"\.downsample\.0\.", ".shortcut."),
        (r"\.downsample\.1\.", ".shortcut.norm."),
    ),
)

# detectron2 -> torchvision: the exact inverse (shortcut.norm before shortcut).
D2_TO_TORCHVISION = RenameTable(
    "detectron2->torchvision",
    (
        (r"^stem\.conv1\.norm\.", "bn1."),
        (r"^stem\.conv1\.", "conv1."),
        (r"^res2\.", "layer1."),
        (r"^res3\.", "layer2."),
        (r"^res4\.", "layer3."),
        (r"^res5\.", "layer4."),
        (r"\.conv([1-3])\.norm\.", r".bn\1."),
        (r"\.shortcut\.norm\.", ".downsample.1."),
        (r"\.shortcut\.", ".downsample.0."),
    ),
)

# ``nn.Sequential(*list(resnet.children())[:-1])`` numbering (UniGrad project/model.py, lightly's
# examples): 0 conv1, 1 bn1, 2 relu, 3 maxpool, 4-7 layer1-4, 8 avgpool (9 Flatten / fc).
SEQUENTIAL_TO_TORCHVISION = RenameTable(
    "sequential->torchvision",
    (
        (r"^0\.", "conv1."),
        (r"^1\.", "bn1."),
        (r"^4\.", "layer1."),
        (r"^5\.", "layer2."),
        (r"^6\.", "layer3."),
        (r"^7\.", "layer4."),
    ),
)


def prefix_table(prefix: str) -> RenameTable:
    """Add a prefix (mmseg/mmdet ``backbone.``)."""
    return RenameTable(f"+{prefix}", ((r"^", prefix),))
