"""Batched two-view augmentation: the MoCo v2 recipe, scaled to the input size, on whole batches.

MoCo v2 (facebookresearch/moco ``main_moco.py``, ``aug_plus``): RandomResizedCrop(224, scale
0.2-1), ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8, RandomGrayscale p=0.2, GaussianBlur sigma 0.1-2
p=0.5, horizontal flip. Here every op runs on a whole uint8 batch as tensor ops (one
``grid_sample`` for crop+flip+resize, vectorised jitter, one grouped conv for blur), on the
training device, driven by an explicit ``torch.Generator`` so a step's views are a pure function of
(seed, step, rank): exact resume needs no data-loader state.

The crop box follows torchvision's ``RandomResizedCrop`` (10 tries, then the centre fallback),
drawn over each image's full frame (folder datasets arrive as a :class:`PaddedBatch`).
Differences from torchvision's per-image ops, stated: the jitter order is fixed (brightness, contrast, saturation, hue);
hue is a rotation in YIQ space; blur kernel = odd(0.1 x size) with sigma scaled by size/224.
Grayscale-aware: on 1-channel data the saturation, hue and grayscale ops are skipped (they are
identities on gray images) and the result is repeated to 3 channels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

_LUMA = (0.299, 0.587, 0.114)
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


@dataclass
class AugmentConfig:
    size: int = 224
    scale_min: float = 0.2
    scale_max: float = 1.0
    ratio_min: float = 3 / 4
    ratio_max: float = 4 / 3
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    p_jitter: float = 0.8
    p_gray: float = 0.2
    p_blur: float = 0.5
    blur_sigma_min: float = 0.1
    blur_sigma_max: float = 2.0
    p_flip: float = 0.5


class Draw:
    """Random draws for a *global* batch, sliced to this rank's rows, so a sample's views do not
    depend on how the global batch is split over ranks (1-process == N-process runs)."""

    def __init__(self, g: torch.Generator, device, total: int, offset: int, n: int) -> None:
        assert 0 <= offset and offset + n <= total, f"rows {offset}:{offset + n} outside batch of {total}"
        self.g, self.device, self.total, self.offset, self.n = g, device, total, offset, n

    def rand(self) -> torch.Tensor:
        r = torch.rand(self.total, generator=self.g, device=self.g.device)
        return r[self.offset:self.offset + self.n].to(self.device)

    def uniform(self, lo: float, hi: float) -> torch.Tensor:
        return self.rand() * (hi - lo) + lo

    def bernoulli(self, p: float) -> torch.Tensor:
        return self.rand() < p


def crop_boxes(width: torch.Tensor, height: torch.Tensor, cfg: AugmentConfig, g: Draw,
               tries: int = 10) -> tuple:
    """torchvision ``RandomResizedCrop.get_params`` for a batch of source sizes (pixels): up to
    ``tries`` draws of (area fraction ~ U(scale), log-ratio ~ U(log ratio)), ``w = round(sqrt(a r))``,
    ``h = round(sqrt(a / r))``, the first with ``0 < w <= W`` and ``0 < h <= H`` kept, its corner
    uniform over the valid positions; if none fits, the centre crop of the whole image with the
    aspect ratio clamped to the range. All draws are made for every sample (fixed RNG use).
    Returns (x0, y0, w, h) in pixels, float tensors."""
    W, H = width.float(), height.float()
    area = W * H
    log_lo, log_hi = math.log(cfg.ratio_min), math.log(cfg.ratio_max)
    found = torch.zeros_like(W, dtype=torch.bool)
    cw, ch = torch.zeros_like(W), torch.zeros_like(W)
    for _ in range(tries):
        a = area * g.uniform(cfg.scale_min, cfg.scale_max)
        r = torch.exp(g.uniform(log_lo, log_hi))
        w = torch.round(torch.sqrt(a * r))
        h = torch.round(torch.sqrt(a / r))
        ok = (w > 0) & (h > 0) & (w <= W) & (h <= H) & ~found
        cw, ch = torch.where(ok, w, cw), torch.where(ok, h, ch)
        found |= ok
    # fallback: the whole image's centre with the ratio clamped (torchvision's last resort)
    in_ratio = W / H
    fw = torch.where(in_ratio < cfg.ratio_min, W, torch.where(in_ratio > cfg.ratio_max, torch.round(H * cfg.ratio_max), W))
    fh = torch.where(in_ratio < cfg.ratio_min, torch.round(W / cfg.ratio_min), torch.where(in_ratio > cfg.ratio_max, H, H))
    cw, ch = torch.where(found, cw, fw), torch.where(found, ch, fh)
    # corner: torch.randint(0, H - h + 1) in torchvision; uniform integer here from one draw
    ux, uy = g.rand(), g.rand()
    x0 = torch.where(found, torch.floor(ux * (W - cw + 1)).clamp(max=W - cw), torch.floor((W - cw) / 2))
    y0 = torch.where(found, torch.floor(uy * (H - ch + 1)).clamp(max=H - ch), torch.floor((H - ch) / 2))
    return x0, y0, cw, ch


@dataclass
class PaddedBatch:
    """Images of different sizes in one tensor: image ``i`` sits at the top-left of ``images[i]``
    (B, C, Hmax, Wmax), its true size is ``sizes[i] = (h, w)``, and the padding repeats its last
    row and column. A crop box lies inside the true image, so bilinear sampling at the box edge
    reads the repeated edge, as ``grid_sample``'s border padding does on the unpadded image: the
    views equal per-image ones (``tests/methods/test_views.py``). ``shape`` and ``to`` let the
    trainer treat it as the batch tensor."""

    images: torch.Tensor
    sizes: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        return self.images.shape

    def to(self, *args, **kwargs) -> "PaddedBatch":
        images = self.images.to(*args, **kwargs)
        return PaddedBatch(images, self.sizes.to(images.device))

    def pin_memory(self) -> "PaddedBatch":  # DataLoader(pin_memory=True) calls this
        return PaddedBatch(self.images.pin_memory(), self.sizes.pin_memory())

    @staticmethod
    def stack(images: Sequence[torch.Tensor]) -> "PaddedBatch":
        """Pad (C, h, w) uint8 images to the largest h and w of the list, edge repeated."""
        H, W = max(int(x.shape[-2]) for x in images), max(int(x.shape[-1]) for x in images)
        out = torch.empty(len(images), images[0].shape[0], H, W, dtype=images[0].dtype)
        for i, x in enumerate(images):
            h, w = x.shape[-2], x.shape[-1]
            out[i, :, :h, :w] = x
            out[i, :, :h, w:] = x[:, :, w - 1:w]
            out[i, :, h:, :] = out[i, :, h - 1:h, :]
        return PaddedBatch(out, torch.tensor([[x.shape[-2], x.shape[-1]] for x in images], dtype=torch.long))


def random_resized_crop(x: torch.Tensor, cfg: AugmentConfig, g: Draw,
                        sizes: torch.Tensor | None = None) -> torch.Tensor:
    """Crop (:func:`crop_boxes` on each image's pixel size: ``sizes`` (B, 2) = (h, w) of a
    :class:`PaddedBatch`, else the batch's size) + flip + resize of a float batch (B, C, H, W) to
    ``cfg.size`` with one ``grid_sample``."""
    b, dev = x.shape[0], x.device
    H, W = x.shape[-2], x.shape[-1]
    if sizes is None:
        hs, ws = torch.full((b,), float(H), device=dev), torch.full((b,), float(W), device=dev)
    else:
        hs, ws = sizes[:, 0].to(dev, torch.float32), sizes[:, 1].to(dev, torch.float32)
    x0, y0, cw, ch = crop_boxes(ws, hs, cfg, g)
    flip = torch.where(g.bernoulli(cfg.p_flip), -1.0, 1.0)
    # pixel box -> normalised affine (align_corners=False: the image spans [-1, 1] edge to edge)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2] = cw / W * flip, (2 * x0 + cw) / W - 1
    theta[:, 1, 1], theta[:, 1, 2] = ch / H, (2 * y0 + ch) / H - 1
    grid = F.affine_grid(theta, [b, x.shape[1], cfg.size, cfg.size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    return (x[:, 0:1] * _LUMA[0] + x[:, 1:2] * _LUMA[1] + x[:, 2:3] * _LUMA[2])


def color_jitter(x: torch.Tensor, cfg: AugmentConfig, g: Draw) -> torch.Tensor:
    b, dev = x.shape[0], x.device
    on = g.bernoulli(cfg.p_jitter).view(b, 1, 1, 1)
    y = x
    if cfg.brightness > 0:
        f = g.uniform(max(0.0, 1 - cfg.brightness), 1 + cfg.brightness).view(b, 1, 1, 1)
        y = (y * f).clamp(0, 1)
    if cfg.contrast > 0:
        f = g.uniform(max(0.0, 1 - cfg.contrast), 1 + cfg.contrast).view(b, 1, 1, 1)
        m = _gray(y).mean(dim=(1, 2, 3), keepdim=True)
        y = (f * y + (1 - f) * m).clamp(0, 1)
    if x.shape[1] == 3:
        if cfg.saturation > 0:
            f = g.uniform(max(0.0, 1 - cfg.saturation), 1 + cfg.saturation).view(b, 1, 1, 1)
            y = (f * y + (1 - f) * _gray(y)).clamp(0, 1)
        if cfg.hue > 0:
            ang = g.uniform(-cfg.hue, cfg.hue) * 2 * math.pi
            yiq = torch.einsum("ij,bjhw->bihw", _YIQ.to(dev), y)
            c, s = torch.cos(ang).view(b, 1, 1), torch.sin(ang).view(b, 1, 1)
            i2 = c * yiq[:, 1] - s * yiq[:, 2]
            q2 = s * yiq[:, 1] + c * yiq[:, 2]
            yiq = torch.stack([yiq[:, 0], i2, q2], 1)
            y = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(_YIQ).to(dev), yiq).clamp(0, 1)
    return torch.where(on, y, x)


def random_grayscale(x: torch.Tensor, p: float, g: Draw) -> torch.Tensor:
    if x.shape[1] == 1 or p <= 0:
        return x
    on = g.bernoulli(p).view(-1, 1, 1, 1)
    return torch.where(on, _gray(x).expand_as(x), x)


def gaussian_blur(x: torch.Tensor, cfg: AugmentConfig, g: Draw) -> torch.Tensor:
    b, c, hgt, wid = x.shape
    k = max(3, int(0.1 * cfg.size) // 2 * 2 + 1)
    scale = cfg.size / 224.0
    sigma = g.uniform(cfg.blur_sigma_min * scale, cfg.blur_sigma_max * scale).clamp(min=1e-3)
    on = g.bernoulli(cfg.p_blur)
    if cfg.p_blur <= 0:
        return x
    r = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    ker = torch.exp(-(r.view(1, -1) ** 2) / (2 * sigma.view(-1, 1) ** 2))
    ker = ker / ker.sum(1, keepdim=True)
    ident = torch.zeros(k, device=x.device, dtype=x.dtype)
    ident[k // 2] = 1
    ker = torch.where(on.view(-1, 1), ker, ident)  # blur off -> delta kernel
    ker = ker.repeat_interleave(c, 0)  # (B*C, k)
    y = x.reshape(1, b * c, hgt, wid)
    y = F.pad(y, (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    y = F.conv2d(y, ker.view(b * c, 1, 1, k), groups=b * c)
    y = F.conv2d(y, ker.view(b * c, 1, k, 1), groups=b * c)
    return y.view(b, c, hgt, wid)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(B, 1|3, H, W) in [0, 1] -> normalised 3-channel tensor (gray repeated)."""
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    x = (x - m) / s
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x


class TwoViewAugment:
    """Two independently augmented views of a uint8 batch, normalised, 3 channels."""

    def __init__(self, cfg: AugmentConfig, mean: Sequence[float], std: Sequence[float]) -> None:
        self.cfg, self.mean, self.std = cfg, tuple(mean), tuple(std)

    def view(self, x: torch.Tensor, g: Draw, sizes: torch.Tensor | None = None) -> torch.Tensor:
        y = random_resized_crop(x, self.cfg, g, sizes)
        y = color_jitter(y, self.cfg, g)
        y = random_grayscale(y, self.cfg.p_gray, g)
        if self.cfg.p_blur > 0:
            y = gaussian_blur(y, self.cfg, g)
        return normalize(y, self.mean, self.std)

    def __call__(self, x_uint8: torch.Tensor | PaddedBatch, g: torch.Generator, offset: int = 0,
                 total: int | None = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Views of rows ``offset .. offset+B`` of a global batch of ``total`` (default: B); a
        :class:`PaddedBatch` (folder datasets) is cropped from each image's full frame."""
        sizes = None
        if isinstance(x_uint8, PaddedBatch):
            x_uint8, sizes = x_uint8.images, x_uint8.sizes
        assert x_uint8.dtype == torch.uint8 and x_uint8.dim() == 4, \
            f"expected a uint8 (B, C, H, W) batch, got {x_uint8.dtype} {tuple(x_uint8.shape)}"
        b = x_uint8.shape[0]
        d = Draw(g, x_uint8.device, total or b, offset, b)
        x = x_uint8.float().div_(255.0)
        return self.view(x, d, sizes), self.view(x, d, sizes)


def eval_transform(x_uint8: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Deterministic eval view. Sources at least ``size * 256/224`` on the short side get the
    standard ImageNet view: resize the short side to ``round(size * 256/224)``, centre crop
    ``size`` (256 -> 224); smaller sources (Fashion-MNIST, digits, synthetic) are resized to
    ``size`` (antialiased bilinear). Normalised, 3 channels."""
    x = x_uint8.float().div_(255.0)
    h, w = x.shape[-2], x.shape[-1]
    resize = int(round(size * 256 / 224))
    if min(h, w) >= resize:
        if min(h, w) != resize:
            s = resize / min(h, w)
            x = F.interpolate(x, size=(max(resize, round(h * s)), max(resize, round(w * s))), mode="bilinear",
                              antialias=True, align_corners=False)
        h, w = x.shape[-2], x.shape[-1]
        t, l = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
        x = x[..., t:t + size, l:l + size]
    elif h != size or w != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return normalize(x, mean, std)
