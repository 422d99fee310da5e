"""Item 6 of issue 13: the training crop is torchvision's RandomResizedCrop box (10 tries, then
the centre fallback; the aspect ratio redrawn, never clamped) and the eval view of ImageNet-sized
sources is resize 256 + centre crop 224; folder datasets are cropped from the full frame."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from transfer.data import StepBatches, TwoViewAugment, build_dataset, iterate_batches
from transfer.data.augment import AugmentConfig, Draw, PaddedBatch, crop_boxes, eval_transform


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


# ------------------------------------------------------------------ folder datasets: full frame
def _folder(tmp_path: Path, sizes: list, seed: int = 0) -> Path:
    """One class, one image per (w, h): uniform noise with a pure-red left and a pure-blue right
    band, 4 % of the width each."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (tmp_path / "c").mkdir(parents=True)
    for i, (w, h) in enumerate(sizes):
        a = rng.integers(60, 200, size=(h, w, 3), dtype=np.uint8)
        band = max(2, w // 25)
        a[:, :band] = (255, 0, 0)
        a[:, w - band:] = (0, 0, 255)
        Image.fromarray(a).save(tmp_path / "c" / f"{i}.png")
    return tmp_path


def test_training_views_of_a_folder_image_reach_its_borders(tmp_path: Path) -> None:
    """The old loader resized the short side then centre-cropped a square before the random crop:
    the left/right bands of a landscape image were never seen. Cropped from the full frame, some
    views hold each band (and every view is the one per-image torchvision-style crop)."""
    root = _folder(tmp_path, [(300, 200)] * 8)
    ds = build_dataset(str(root), "train", load_size=160)  # max_side 320: kept whole
    cfg = AugmentConfig(size=32, scale_min=0.08, p_jitter=0.0, p_gray=0.0, p_blur=0.0, p_flip=0.0)
    aug = TwoViewAugment(cfg, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    red = blue = 0
    for step, x, _ in iterate_batches(ds, StepBatches(len(ds), 8, seed=0, rank=0, world=1, start=0, end=6)):
        assert isinstance(x, PaddedBatch) and x.sizes.tolist() == [[200, 300]] * 8
        for v in aug(x, torch.Generator().manual_seed(step)):
            red += int(((v[:, 0] > 0.99) & (v[:, 1] < 0.01) & (v[:, 2] < 0.01)).flatten(1).any(1).sum())
            blue += int(((v[:, 2] > 0.99) & (v[:, 0] < 0.01) & (v[:, 1] < 0.01)).flatten(1).any(1).sum())
    assert red >= 3 and blue >= 3, f"of 96 views, {red} show the left band and {blue} the right band"


def test_padded_batch_views_equal_per_image_views() -> None:
    """Padding (the edge repeated) is never read: each row of a padded batch's views equals the
    view of that image alone (same random rows). Tolerance: affine_grid's per-pixel 3-term dot
    product in another batch shape, ~1e-6 on pixels in [0, 1]."""
    g = torch.Generator().manual_seed(0)
    imgs = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in ((40, 60), (57, 31), (33, 33))]
    batch = PaddedBatch.stack(imgs)
    assert batch.shape == (3, 3, 57, 60) and batch.sizes.tolist() == [[40, 60], [57, 31], [33, 33]]
    aug = TwoViewAugment(AugmentConfig(size=24), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    v1, v2 = aug(batch, torch.Generator().manual_seed(5))
    for i, x in enumerate(imgs):
        w1, w2 = aug(x[None], torch.Generator().manual_seed(5), offset=i, total=3)
        assert torch.allclose(v1[i:i + 1], w1, atol=1e-5) and torch.allclose(v2[i:i + 1], w2, atol=1e-5)


def test_folder_eval_view_is_torchvision_resize_256_centre_crop_224(tmp_path: Path) -> None:
    """``eval_transform(ds[i])`` equals torchvision's ``Resize(256)`` + ``CenterCrop(224)`` on the
    file, including odd sizes where the old decode's rounded long side and floored offset were a
    pixel off. Tolerance: both sides divide the same uint8 values by 255 (float32 rounding)."""
    tvt = pytest.importorskip("torchvision.transforms")
    from PIL import Image

    sizes = [(343, 300), (300, 457), (256, 256), (511, 263), (600, 600)]
    ds = build_dataset(str(_folder(tmp_path, sizes)), "train", load_size=256)
    ref = tvt.Compose([tvt.Resize(256), tvt.CenterCrop(224), tvt.ToTensor()])
    for i in range(len(sizes)):
        ours = eval_transform(ds[i][0][None], 224, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))[0]
        with Image.open(ds.files[i]) as im:
            theirs = ref(im.convert("RGB"))
        assert ours.shape == theirs.shape == (3, 224, 224)
        assert torch.allclose(ours, theirs, atol=1e-6), f"{ds.files[i].name}: max diff {float((ours - theirs).abs().max())}"


def test_folder_full_image_is_the_whole_frame_capped_at_max_side(tmp_path: Path) -> None:
    ds = build_dataset(str(_folder(tmp_path, [(300, 200), (900, 450)])), "train", load_size=256)
    assert ds.full_image(0)[0].shape == (3, 200, 300)  # under 2 x load_size: untouched
    assert ds.full_image(1)[0].shape == (3, 256, 512)  # long side capped at 512, ratio kept


def test_pretrain_on_a_folder_of_mixed_sizes(tmp_path: Path) -> None:
    """The trainer's path end to end: whole images of different sizes batch (padded) and train."""
    from tests.conftest import tiny_overrides
    from transfer.config import load_config
    from transfer.trainer import Trainer

    root = _folder(tmp_path / "data", [(40 + 7 * i, 30 + 5 * (i % 3)) for i in range(16)])
    cfg = load_config(None, tiny_overrides(tmp_path, name="f", **{"data.name": str(root), "data.load_size": 32,
                                                                  "optim.batch_size": 8, "optim.max_steps": 2}))
    tr = Trainer(cfg, device="cpu", quiet=True)
    out = tr.fit()
    tr.close()
    assert out["step"] == 2 and math.isfinite(out["loss"])
