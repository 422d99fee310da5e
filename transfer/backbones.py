"""Backbone registry: torchvision ResNets and a small-image variant, one API on all.

Every backbone is a :class:`ResNetBackbone` whose parameter and buffer names are exactly
torchvision's ``ResNet`` names (``conv1``, ``bn1``, ``layer1.0.conv1`` ...; no ``fc``), so an
exported state dict loads into ``torchvision.models.resnet50()`` with ``strict=False`` only
missing ``fc``.  Layout follows torchvision ``models/resnet.py``; the small-image variant
(3x3 stride-1 stem, no max-pool) follows the common CIFAR ResNet (``Conv2d(3, 64, 3, 1, padding=1)``,
``maxpool = Identity``). solo-learn's CIFAR stem pads by 2 instead (vturrisi/solo-learn
``solo/methods/base.py``, ``BaseMethod.__init__``: ``nn.Conv2d(3, 64, kernel_size=3, stride=1,
padding=2, bias=False)`` when ``cfg.data.dataset`` is cifar10/cifar100): the same weights, but a 34x34
res2 map on 32x32 inputs, so pooled features differ. ``ArchSpec.stem_padding`` rebuilds that stem
exactly; it is left out of the arch dict when unset, so existing exports keep their metadata.

API on every backbone:
- ``forward(x) -> (B, feature_dim)`` pooled features;
- ``forward_stages(x) -> {"stem", "res2", "res3", "res4", "res5"}`` intermediate maps (detection);
- ``feature_dim``, ``stage_channels``, ``spec`` (the arch dict stored in exports).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Type, Union

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from .errors import UserError
from .registry import Registry

Block = Union[Type[BasicBlock], Type[Bottleneck]]


@dataclass(frozen=True)
class ArchSpec:
    """Everything needed to rebuild a backbone from an export's metadata."""

    depth: int
    small: bool = False  # 3x3 stride-1 stem and no max-pool, for 28-64 px inputs
    width: float = 1.0  # multiplier on torchvision's 64-128-256-512 stage widths
    zero_init_residual: bool = True
    stem_padding: Optional[int] = None  # None: the standard padding (1 for the 3x3 stem, 3 for 7x7)


_LAYOUT: Dict[int, tuple] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
}


class ResNetBackbone(nn.Module):
    """A ResNet without its classifier, with torchvision's parameter names."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        if spec.depth not in _LAYOUT:
            raise UserError(f"unsupported ResNet depth {spec.depth}; choose one of {sorted(_LAYOUT)}")
        if not spec.width > 0:
            raise UserError(f"backbone width multiplier must be > 0, got {spec.width}")
        if spec.stem_padding is not None and (
                isinstance(spec.stem_padding, bool) or not isinstance(spec.stem_padding, int) or not 0 <= spec.stem_padding <= 3):
            raise UserError(f"arch stem_padding must be an integer in 0..3, got {spec.stem_padding!r}")
        self.spec = spec
        block, layers = _LAYOUT[spec.depth]
        widths = [max(4, int(round(64 * spec.width * m))) for m in (1, 2, 4, 8)]
        self.inplanes = widths[0]
        if spec.small:
            pad = 1 if spec.stem_padding is None else spec.stem_padding
            self.conv1 = nn.Conv2d(3, self.inplanes, 3, 1, pad, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            pad = 3 if spec.stem_padding is None else spec.stem_padding
            self.conv1 = nn.Conv2d(3, self.inplanes, 7, 2, pad, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, widths[0], layers[0], 1)
        self.layer2 = self._make_layer(block, widths[1], layers[1], 2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], 2)
        self.layer4 = self._make_layer(block, widths[3], layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.stage_channels: List[int] = [w * block.expansion for w in widths]
        self.feature_dim: int = self.stage_channels[-1]
        self._init_weights(spec.zero_init_residual)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        mods = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def _init_weights(self, zero_init_residual: bool) -> None:
        # torchvision models/resnet.py initialisation, incl. zero-init of the last BN per block.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward_stages(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        assert x.dim() == 4 and x.shape[1] == 3, f"expected (B, 3, H, W) input, got {tuple(x.shape)}"
        out: Dict[str, torch.Tensor] = {}
        x = self.relu(self.bn1(self.conv1(x)))
        out["stem"] = x = self.maxpool(x)
        out["res2"] = x = self.layer1(x)
        out["res3"] = x = self.layer2(x)
        out["res4"] = x = self.layer3(x)
        out["res5"] = self.layer4(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.forward_stages(x)["res5"]), 1)

    def arch_dict(self) -> dict:
        d = asdict(self.spec)
        if d["stem_padding"] is None:  # the standard stem: keep the arch dict exports always had
            del d["stem_padding"]
        return d


BACKBONES: Registry = Registry("backbone")


def _register(name: str, depth: int, small: bool) -> None:
    def build(width: float = 1.0, zero_init_residual: bool = True) -> ResNetBackbone:
        return ResNetBackbone(ArchSpec(depth, small, float(width), zero_init_residual))

    build.__doc__ = f"ResNet-{depth}{' small-image (3x3 stem, no max-pool)' if small else ''}."
    BACKBONES.register(name)(build)


for _d in (18, 34, 50):
    _register(f"resnet{_d}", _d, False)
    _register(f"small_resnet{_d}", _d, True)


def build_backbone(name: str, width: float = 1.0, zero_init_residual: bool = True) -> ResNetBackbone:
    return BACKBONES.get(name)(width=width, zero_init_residual=zero_init_residual)


def backbone_from_arch(arch: dict) -> ResNetBackbone:
    """Rebuild a backbone from the ``arch`` dict stored in an export's metadata."""
    try:
        spec = ArchSpec(**arch)
    except TypeError as e:
        raise UserError(f"bad arch metadata {arch!r}: {e}") from None
    return ResNetBackbone(spec)


def arch_name(spec: ArchSpec) -> str:
    return f"{'small_' if spec.small else ''}resnet{spec.depth}"
