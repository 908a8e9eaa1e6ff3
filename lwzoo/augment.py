"""MoCo v2's two-view augmentation as batched tensor ops.

Each view is random-resized-crop + flip, colour jitter (p), grayscale (p), Gaussian blur (p) and
normalisation, drawn independently per image but computed as batched tensor ops, so the same code
runs on CPU or GPU tensors. Jitter, grayscale and blur compute only the images their coin picked; on
CPU that stage walks the batch in cache-sized chunks on one thread, on a GPU it takes the whole batch.
All randomness comes from the ``generator`` passed in, which makes a step's views a function of
the step's seed (exact resume, reproducible runs).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .recipe import AugmentCfg

_GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, with the rounding of torchvision's rgb_to_grayscale
# On CPU the colour ops run on chunks of at most this many floats (1 MiB: one 224 px image, 21 at 64 px, 85 at
# 32 px), so an image's few dozen passes stay in cache instead of streaming the batch through memory each time,
# while small images still share each op's fixed cost. Measured best of 1-256 images per chunk at each size.
_CPU_CHUNK_ELEMENTS = 2**18
_NEGLIGIBLE_TAP = 2.0**-26  # a blur weight this small is below float32's resolution of the output
# Images up to this side are blurred by two matrix products with banded side x side matrices, the reflect padding
# folded in: `side` multiply-adds per output instead of 2r+1, but in BLAS, which beats 2r+1 broadcast multiply-adds
# (:func:`_weighted_taps`) up to about here. CPU seconds for 256 images on one thread, matrices against taps:
# 32 px 0.016 / 0.029, 64 px 0.053 / 0.081, 224 px 0.080 / 0.035 (median of 15, the 2-core dev box, December 2026).
_BLUR_MATMUL_MAX_SIDE = 128


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) luma y = 0.2989 r + 0.587 g + 0.114 b."""
    r, g, b = x.unbind(1)
    y = r * _GRAY[0]  # N x H x W; accumulated in place: one buffer, three passes
    return y.add_(g, alpha=_GRAY[1]).add_(b, alpha=_GRAY[2]).unsqueeze(1)


def crop_boxes(
    n: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    g: torch.Generator,
    device: torch.device,
    aspect: torch.Tensor | None = None,
) -> torch.Tensor:
    """RandomResizedCrop boxes drawn in each original image's frame, as (N, 4) ``(cx, cy, w, h)`` fractions of
    its width and height (so they apply unchanged to the image squashed to a square).

    As torchvision does on the original W x H image: area ``s * W * H`` with s ~ U(scale), log aspect
    ``log r ~ U(log ratio)``, so ``w = sqrt(s r W H)`` px and ``h = sqrt(s W H / r)`` px, or as fractions with
    A = W / H, ``fw = sqrt(s r / A)``, ``fh = sqrt(s A / r)``; the first of 10 tries that fits, else the
    largest centred box whose aspect is A clamped to ``ratio`` (``fw = min(1, c / A)``, ``fh = min(1, A / c)``,
    c = clamp(A, ratio)), centred; a box that fits sits uniformly where it fits. ``aspect`` (N,) holds A
    (default 1).
    """
    tries = 10
    a = torch.ones(n, device=device) if aspect is None else aspect.to(device=device, dtype=torch.float32)
    area = scale[0] + (scale[1] - scale[0]) * torch.rand(n, tries, generator=g, device=device)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(
        n, tries, generator=g, device=device
    )
    r = torch.exp(log_r)
    w, h = torch.sqrt(area * r / a[:, None]), torch.sqrt(area * a[:, None] / r)  # N x tries, fractions
    fits = (w <= 1) & (h <= 1)
    found = fits.any(1)
    first = fits.float().argmax(1)[:, None]  # the first try that fits (0 when none does)
    c = a.clamp(ratio[0], ratio[1])
    w = torch.where(found, w.gather(1, first).squeeze(1), (c / a).clamp(max=1))
    h = torch.where(found, h.gather(1, first).squeeze(1), (a / c).clamp(max=1))
    half = torch.full((n,), 0.5, device=device)  # the fallback box is centred, as torchvision's is
    cx = w / 2 + (1 - w) * torch.where(found, torch.rand(n, generator=g, device=device), half)
    cy = h / 2 + (1 - h) * torch.where(found, torch.rand(n, generator=g, device=device), half)
    return torch.stack([cx, cy, w, h], dim=1)


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each image to its box, mirror where ``flip``, and resize to ``size`` (bilinear), in one
    ``grid_sample``. x: (N, C, H, W) float, boxes: (N, 4) as from :func:`crop_boxes`, flip: (N,) bool."""
    cx, cy, w, h = boxes.unbind(1)
    sign = 1.0 - 2.0 * flip.to(x.dtype)
    zero = torch.zeros_like(cx)
    theta = torch.stack(
        [torch.stack([w * sign, zero, 2 * cx - 1], 1), torch.stack([zero, h, 2 * cy - 1], 1)], 1
    )  # N x 2 x 3, output [-1, 1] -> input [-1, 1]
    grid = F.affine_grid(theta.to(x.dtype), [len(x), x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> HSV with every channel in [0, 1]."""
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(maxc == r, ((g - b) / safe) % 6, torch.where(maxc == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(delta > 0, h / 6, torch.zeros_like(h))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return torch.stack([h, s, maxc], 1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = x.unbind(1)
    h6 = (h % 1.0) * 6

    def channel(n: float) -> torch.Tensor:  # branch-free: c = v - v s clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6
        k = (h6 + n) % 6
        return v - v * s * torch.minimum(k, 4 - k).clamp(0, 1)

    return torch.stack([channel(5), channel(3), channel(1)], 1)


# Colour jitter: torchvision's functional ops with one factor per image. The ``_`` versions work in place on a
# (N, 3, H, W) float batch in [0, 1] (the augmentation runs them on cache-sized chunks of its own buffer); the
# plain ones return a new tensor.


@functools.lru_cache(maxsize=16)
def _constant_on(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(values, device=device, dtype=dtype)


def _constant(values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    """A small constant vector on ``like``'s device and dtype, made once (a fresh tiny tensor per image
    costs as much as a pass over a 224 px plane)."""
    return _constant_on(values, like.device, like.dtype)


def _per_image(factor: torch.Tensor) -> torch.Tensor:
    return factor[:, None, None, None]  # (N,) -> N x 1 x 1 x 1


def adjust_brightness_(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """x <- clamp(f x, 0, 1)."""
    return x.mul_(_per_image(factor)).clamp_(0, 1)


def adjust_contrast_(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """x <- clamp(f x + (1 - f) mu, 0, 1), mu the image's mean luma (= the luma of its channel means)."""
    mu = x.mean(dim=(2, 3)) @ _constant(_GRAY, x)  # N
    # mul_ + add_ here: addcmul with both factors broadcast from N x 1 x 1 x 1 runs 5x slower on CPU
    return x.mul_(_per_image(factor)).add_(_per_image((1 - factor) * mu)).clamp_(0, 1)


def adjust_saturation_(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """x <- clamp(f x + (1 - f) y, 0, 1), y the pixel's luma."""
    y = grayscale(x).mul_(_per_image(1 - factor))  # N x 1 x H x W
    return torch.addcmul(y, x, _per_image(factor), out=x).clamp_(0, 1)


def adjust_hue_(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate each image's HSV hue by ``shift`` turns (|shift| <= 0.5): torchvision's adjust_hue, whose
    HSV round trip keeps saturation and value, done without building HSV and without comparisons or
    ``where`` (bool tensors are the slow ops here). With M, m the pixel's max and min channel, d = M - m
    (HSV's v = M, v s = d) and the indicators s_r = sign(M - r), s_g = sign(M - g), the hue in sextants is

        h6 d = (g - b) + s_r ((3b - S + 2d) + s_g (3r - S + 2d)),   S = r + g + b,

    i.e. (g - b)/d if M = r, (b - r)/d + 2 elif M = g, (r - g)/d + 4 otherwise (0 where d = 0). With
    H = (h6 + 6 shift) mod 6, channel c comes back as M - d clamp(2 - dist(H, C_c), 0, 1), the trapezoid
    of torchvision's hsv_to_rgb around C = 3, 5, 1 for r, g, b; for H - C in [-6, 6] that is

        c = (M + d) - d clamp(| |H - C| - 3 |, 1, 2).

    x: (N, 3, H, W) in [0, 1], modified in place; shift: (N,).
    """
    r, g, b = x.unbind(1)
    maxc = x.amax(1)  # N x H x W
    delta = torch.sub(maxc, x.amin(1))  # d
    not_r, not_g = torch.sub(maxc.unsqueeze(1), x[:, :2]).sign_().unbind(1)  # s_r: 0 where r is the max, else 1
    e = torch.mul(delta, 2).sub_(r).sub_(g).sub_(b)  # 2d - S (x.sum(1) is slower than two adds)
    h6 = torch.add(e, r, alpha=3).mul_(not_g).add_(e).add_(b, alpha=3).mul_(not_r).add_(g).sub_(b)  # h6 d
    # where d = 0 the numerator is 0 too, and 0 / tiny = 0; a hue is irrelevant where d is that small
    h6.div_(delta.clamp_min(torch.finfo(x.dtype).tiny)).add_(shift.view(-1, 1, 1), alpha=6)  # in [-4, 8)
    h6.sub_(torch.mul(h6, 1 / 6).floor_(), alpha=6)  # mod 6, up to rounding at the ends, which the
    # trapezoid does not mind (it is continuous, and |H - C| stays inside [0, 6])
    centres = _constant((3.0, 5.0, 1.0), x).view(1, 3, 1, 1)
    torch.sub(h6.unsqueeze(1), centres, out=x).abs_().sub_(3).abs_().clamp_(1, 2)  # r, g, b are dead here
    return torch.addcmul(maxc.add_(delta).unsqueeze(1), delta.unsqueeze(1), x, value=-1, out=x)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return adjust_brightness_(x.clone(), factor)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return adjust_contrast_(x.clone(), factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return adjust_saturation_(x.clone(), factor)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    return adjust_hue_(x.clone(), shift)


def blur_radius(sigma: torch.Tensor, side: int) -> int:
    """Half-width of the blur kernel: 3 sigma of the largest sigma, capped below the image side."""
    return int(min(math.ceil(3 * float(sigma.max())), side - 1))


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int | None = None) -> torch.Tensor:
    """Blur each image with its own sigma (pixels), separably, with reflect padding:
    y[i] = sum_{|j| <= r} w_j x[i + j] along the width, then the height, w_j = exp(-j^2 / 2 sigma^2) / Z.
    ``radius`` r defaults to :func:`blur_radius` of this batch. x: (N, C, H, W), sigma: (N,).

    Images up to ``_BLUR_MATMUL_MAX_SIDE`` px are filtered by two matrix products (:func:`_blur_by_matmul`),
    larger ones by 2r+1 shifted multiply-adds per pass (:func:`_weighted_taps`); both compute the same sums."""
    radius = blur_radius(sigma, min(x.shape[-2:])) if radius is None else radius
    if radius < 1:
        return x
    pos = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (pos[None, :] / sigma[:, None].clamp_min(1e-3)) ** 2)  # N x (2r+1)
    kernel = kernel / kernel.sum(1, keepdim=True)
    # taps below 2^-26 for every image here move no output by more than float32 rounding: skip them
    # (a small sigma in a batch whose radius a large one set would otherwise pay for its zeros)
    used = int((kernel.amax(0) >= _NEGLIGIBLE_TAP).sum()) // 2  # the kernel is symmetric
    if used < 1:
        return x
    kernel = kernel[:, radius - used : radius + used + 1]  # N x (2u+1)
    if max(x.shape[-2:]) <= _BLUR_MATMUL_MAX_SIDE:
        return _blur_by_matmul(x, kernel)
    weights = kernel.T[:, :, None, None, None]  # (2u+1) x N x 1 x 1 x 1
    # one padding for both passes: the rows the width pass blurs in the padding are the reflections of its
    # output rows (reflecting rows commutes with filtering along them)
    y = _weighted_taps(F.pad(x, (used,) * 4, mode="reflect"), weights, dim=3)  # N x C x (H + 2u) x W
    return _weighted_taps(y, weights, dim=2)


def reflect_blur_matrices(kernel: torch.Tensor, n: int) -> torch.Tensor:
    """Kernels (N, 2u+1) -> matrices B (N, n, n) that filter a length-n signal with reflect padding:
    (B v)_i = sum_{|j| <= u} w_j v_{refl(i + j)}, refl(t) = |t| mirrored again past n - 1 (F.pad's "reflect",
    u <= n - 1), so B_ik = sum of the w_j with refl(i + j) = k: the kernel on the band, the taps that fall off
    an end folded back in. Built as one product with 0/1 masks rather than a scatter, so it is deterministic
    on every device."""
    u = kernel.shape[1] // 2
    t = (torch.arange(n, device=kernel.device)[:, None] + torch.arange(-u, u + 1, device=kernel.device)).abs()
    source = torch.where(t > n - 1, 2 * (n - 1) - t, t)  # n x (2u+1): the input index each tap of output i reads
    masks = source[:, :, None] == torch.arange(n, device=kernel.device)  # n x (2u+1) x n
    return torch.einsum("bj,ijk->bik", kernel, masks.to(kernel.dtype))  # N x n x n


def _blur_by_matmul(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The separable blur of :func:`gaussian_blur` as Y = B_H X B_W^T per image and channel, B from
    :func:`reflect_blur_matrices`. x: (N, C, H, W), kernel: (N, 2u+1)."""
    h, w = x.shape[-2:]
    b_w = reflect_blur_matrices(kernel, w)  # N x W x W
    b_h = b_w if h == w else reflect_blur_matrices(kernel, h)  # N x H x H
    rows = torch.matmul(x, b_w.transpose(1, 2).unsqueeze(1))  # N x C x H x W, each row filtered
    return torch.matmul(b_h.unsqueeze(1), rows)  # N x C x H x W, then each column


def _weighted_taps(padded: torch.Tensor, weights: torch.Tensor, dim: int) -> torch.Tensor:
    """sum_j weights[j] * padded.narrow(dim, j, size): a depthwise 1-D convolution with a kernel per image,
    as 2r+1 multiply-adds into one buffer (faster on CPU than a grouped conv2d with N*C groups)."""
    size = padded.shape[dim] - (len(weights) - 1)
    y = padded.narrow(dim, 0, size) * weights[0]
    for j in range(1, len(weights)):
        y.addcmul_(padded.narrow(dim, j, size), weights[j])
    return y


class TwoViewAugment(nn.Module):
    """Two independent MoCo v2 views of a uint8 batch (N, 3, S, S) -> two float (N, 3, s, s) batches,
    normalised with the recipe's mean and std."""

    mean: torch.Tensor
    std: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, cfg: AugmentCfg, channels_last: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.channels_last = channels_last
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)
        # (v - mean) / std as v * scale + shift: two passes without a division
        self.register_buffer("scale", 1 / self.std, persistent=False)
        self.register_buffer("shift", -self.mean / self.std, persistent=False)

    @torch.no_grad()
    def forward(
        self, images: torch.Tensor, generator: torch.Generator, aspects: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two views of uint8 images (N, 3, S, S); ``aspects`` (N,) are the originals' width / height when the
        images are stored whole (squashed), so crops are drawn in each original's frame (default: squares)."""
        x = images.float().div_(255)
        return self.view(x, generator, aspects), self.view(x, generator, aspects)

    @torch.no_grad()
    def view(self, x: torch.Tensor, g: torch.Generator, aspects: torch.Tensor | None = None) -> torch.Tensor:
        """One augmented view of a float batch in [0, 1] (``aspects`` as for :meth:`forward`)."""
        cfg, n, dev = self.cfg, len(x), x.device

        def coin(p: float) -> torch.Tensor:
            return torch.rand(n, generator=g, device=dev) < p

        boxes = crop_boxes(n, cfg.crop_scale, cfg.crop_ratio, g, dev, aspects)
        v = resized_crop(x, boxes, coin(cfg.flip_p), cfg.image_size)
        return self._colour_blur_normalise(v, self._draw(n, g, dev))

    def _draw(self, n: int, g: torch.Generator, dev: torch.device) -> _ViewDraws:
        """The view's random parameters after the crop, drawn for every image in the generator's order:
        jitter coin, the order of the four jitter ops (once per batch, as ColorJitter draws it per call),
        each op's factors, grayscale coin, blur coin, blur sigmas (of the blurred images only)."""
        cfg, d = self.cfg, _ViewDraws()

        def coin(p: float) -> torch.Tensor:
            return torch.rand(n, generator=g, device=dev) < p

        if cfg.jitter_p > 0 and any(cfg.jitter):
            d.jitter = coin(cfg.jitter_p)
            b, c, s, h = cfg.jitter
            ops = [
                (adjust_brightness_, b, (max(0.0, 1 - b), 1 + b)),
                (adjust_contrast_, c, (max(0.0, 1 - c), 1 + c)),
                (adjust_saturation_, s, (max(0.0, 1 - s), 1 + s)),
                (adjust_hue_, h, (-h, h)),
            ]
            order = [ops[i] for i in torch.randperm(4, generator=g, device=dev).tolist() if ops[i][1] > 0]
            d.jitter_ops = tuple(op for op, _, _ in order)
            d.factors = torch.stack([_uniform(n, lo, hi, g, dev) for _, _, (lo, hi) in order], 1)  # N x ops
        if cfg.grayscale_p > 0:
            d.gray = coin(cfg.grayscale_p)
        if cfg.blur_p > 0 and cfg.blur_sigma[1] > 0:
            blur = coin(cfg.blur_p)
            if blur.any():
                d.sigma = torch.zeros(n, device=dev)
                d.sigma[blur] = _uniform(int(blur.sum()), *cfg.blur_sigma, g, dev)
        return d

    def _colour_blur_normalise(self, v: torch.Tensor, d: _ViewDraws) -> torch.Tensor:
        """Jitter, grayscale and blur the images their coins picked, in place in ``v`` (N, 3, s, s), and
        normalise into the output layout.

        On CPU this runs a chunk of images at a time (one image at 224 px), so an image stays in cache through
        its few dozen passes, and on one torch thread: a chunk's ops are too small to split, each split being a
        fork/join, and on a busy machine every join waits for a descheduled thread (2 threads measured about
        10x slower than 1 at 224 px on the loaded 2-core dev box). On an accelerator the chunk is the batch."""
        v = v.contiguous()
        n, cpu = len(v), v.device.type == "cpu"
        radius = blur_radius(d.sigma, min(v.shape[-2:])) if d.sigma is not None else 0
        # channels-last output in v's own memory: image i's 3 s^2 floats sit at the same offset in both
        # layouts, so each chunk is rewritten in place (no fresh 40 MB buffer to fault in at 224 px, batch 64)
        out = v.view(n, *v.shape[2:], 3).permute(0, 3, 1, 2) if self.channels_last else v  # NHWC view of v
        chunk = max(1, _CPU_CHUNK_ELEMENTS // v[0].numel()) if cpu else n
        jitter = functools.partial(_jitter_, ops=d.jitter_ops)
        blur = functools.partial(gaussian_blur, radius=radius)
        with _torch_threads(1) if cpu else contextlib.nullcontext():
            for lo in range(0, n, chunk):
                rows = slice(lo, lo + chunk)
                part = v[rows]
                if d.jitter is not None:
                    _on_picked(part, d.jitter[rows], jitter, d.factors[rows])
                if d.gray is not None:
                    _on_picked(part, d.gray[rows], _to_grayscale)
                if d.sigma is not None and radius >= 1:
                    _on_picked(part, d.sigma[rows] > 0, blur, d.sigma[rows])
                part.mul_(self.scale).add_(self.shift)  # (v - mean) / std
                if out is not v:
                    out[rows] = part.clone()  # NCHW -> NHWC over the same memory, via a copy in cache
        return out


@dataclass
class _ViewDraws:
    """One view's random parameters for N images (None: the op is off in the recipe)."""

    jitter: torch.Tensor | None = None  # N bool: colour jitter applies
    jitter_ops: tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ...] = ()  # in this batch's order
    factors: torch.Tensor | None = None  # N x len(jitter_ops), each op's factor per image
    gray: torch.Tensor | None = None  # N bool
    sigma: torch.Tensor | None = None  # N blur sigma in pixels, 0 where the blur coin did not pick the image


def _jitter_(x: torch.Tensor, factors: torch.Tensor, ops: tuple[Callable, ...]) -> torch.Tensor:
    for op, factor in zip(ops, factors.unbind(1), strict=True):
        op(x, factor)
    return x


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` inside the block (a process-wide setting), restored after."""
    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _to_grayscale(x: torch.Tensor) -> torch.Tensor:
    return grayscale(x).expand_as(x)


def _on_picked(part: torch.Tensor, picked: torch.Tensor, op: Callable[..., torch.Tensor], *per_image: torch.Tensor):
    """part[i] <- op(part[i], per_image[0][i], ...) for the images i where ``picked``, in place in ``part``.

    Only the picked images are computed (the old ``where(coin, op(v), v)`` computed all of them). When all
    are picked (a chunk of one image, or p = 1) ``op`` runs on ``part`` itself, without a gather and scatter."""
    idx = picked.nonzero().squeeze(1)
    if len(idx) == len(part):
        result = op(part, *per_image)
        if result is not part:
            part.copy_(result)
    elif len(idx):
        part.index_copy_(0, idx, op(part.index_select(0, idx), *(p[idx] for p in per_image)))
