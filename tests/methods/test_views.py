"""Item 6 of issue 13: the training crop is torchvision's RandomResizedCrop box (10 tries, then
the centre fallback; the aspect ratio redrawn, never clamped) and the eval view of ImageNet-sized
sources is resize 256 + centre crop 224."""
from __future__ import annotations

import math

import torch

from transfer.data.augment import AugmentConfig, Draw, crop_boxes, eval_transform


def _draw(n: int, seed: int = 0) -> Draw:
    return Draw(torch.Generator().manual_seed(seed), "cpu", n, 0, n)


def test_crop_boxes_keep_the_drawn_aspect_ratio_and_stay_inside() -> None:
    n = 4000
    cfg = AugmentConfig(size=224, scale_min=0.08, scale_max=1.0)
    W, H = torch.full((n,), 500.0), torch.full((n,), 375.0)
    x0, y0, w, h = crop_boxes(W, H, cfg, _draw(n))
    assert bool(((x0 >= 0) & (y0 >= 0) & (x0 + w <= W) & (y0 + h <= H)).all())
    r = w / h
    # every box is a redrawn in-range ratio (up to pixel rounding), none squeezed to the border
    assert bool((r > cfg.ratio_min * 0.97).all() and (r < cfg.ratio_max * 1.03).all())
    frac = w * h / (W * H)
    assert float(frac.max()) > 0.9 and float(frac.min()) < 0.1
    # boxes reach the image borders (the whole image is cropped from, not a centre square)
    assert bool((x0 == 0).any()) and bool((x0 + w == W).any())


def test_crop_boxes_fall_back_to_the_centre_when_no_try_fits() -> None:
    n = 8
    cfg = AugmentConfig(scale_min=1.0, scale_max=1.0, ratio_min=3.0, ratio_max=3.0)  # never fits a square
    x0, y0, w, h = crop_boxes(torch.full((n,), 100.0), torch.full((n,), 100.0), cfg, _draw(n))
    # in_ratio 1 < 3: w = W, h = round(W / 3), vertically centred
    assert torch.equal(w, torch.full((n,), 100.0)) and torch.equal(h, torch.full((n,), 33.0))
    assert torch.equal(x0, torch.zeros(n)) and torch.equal(y0, torch.full((n,), math.floor(67 / 2)))


def test_eval_view_is_resize_256_then_centre_crop_224() -> None:
    x = torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8)
    y = eval_transform(x, 224, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert y.shape == (2, 3, 224, 224)
    assert torch.allclose(y, x[..., 16:240, 16:240].float() / 255)
    small = torch.randint(0, 256, (1, 1, 28, 28), dtype=torch.uint8)
    assert eval_transform(small, 32, (0.5,), (0.5,)).shape == (1, 3, 32, 32)  # small data: resized
