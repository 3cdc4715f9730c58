"""Image corruptions of CIFAR-10-C / ImageNet-C (Hendrycks & Dietterich, ICLR 2019) in torch, for
the corruption-robustness tables (PAPER.md, "Corruption robustness"), and the paper's
frequency-band noise (Park & Kim, Fig. 2b).

    g = torch.Generator().manual_seed(0)
    y = corrupt(x, "fog", 3, g)                 # x: (B, 3, H, W) in [0, 1], before normalisation
    y = frequency_noise(x, f=0.5, generator=g)  # noise in the square band 0.3 pi .. 0.7 pi

Every corruption in `CORRUPTIONS` is ``fn(x, severity, generator=None, preset="auto")``. Severities
1..5 use the reference constants of Hendrycks' ``make_imagenet_c.py`` (preset "imagenet") or
``make_cifar_c.py`` ("cifar"); "auto" takes "cifar" when the shorter image side is at most
`CIFAR_MAX_SIDE` pixels (CIFAR is 32 px), "imagenet" otherwise. Each function's docstring ends with
its constants. Severity 0 returns the input itself. Outputs are clipped to [0, 1], with the input's
shape, dtype and device.

Random draws are made on the generator's device (the CPU when no generator is given, then from
torch's global seed) and moved to the images, so one seed gives the same corruption on every device.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg

from surgeon.core import checks
from surgeon.core.errors import SurgeonError
from surgeon.core.registry import Registry

__all__ = ["CORRUPTIONS", "CONSTANTS", "CIFAR_MAX_SIDE", "corrupt", "plasma_fractal", "band_mask",
           "frequency_noise"]

Corruption = Callable[..., torch.Tensor]
#: Every corruption, by name (`corrupt`, ``surgeon robustness --corruptions``).
CORRUPTIONS: Registry[Corruption] = Registry("corruption")
#: Which reference constants a corruption uses (its ``preset`` argument): by image size, ImageNet-C or CIFAR-10-C.
CONSTANTS = ("auto", "imagenet", "cifar")

CIFAR_MAX_SIDE = 64  # "auto" uses the CIFAR-10-C constants up to this image side


# ----------------------------------------------------------------------------------------------
# Checks, randomness, filtering


def _check_images(x: Any) -> None:
    if not (isinstance(x, torch.Tensor) and x.is_floating_point() and x.dim() == 4 and x.shape[1] in (1, 3)):
        got = f"shape {tuple(x.shape)}, dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise SurgeonError(f"images must be a float batch (B, 3, H, W) or grey (B, 1, H, W) in [0, 1], got {got}; "
                           f"add a batch dimension with x[None] or scale uint8 images with x.float() / 255")


def _working(x: torch.Tensor) -> torch.Tensor:
    """x itself if float32 / float64, else as float32 (FFTs and several CPU kernels take no half precision)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _like(draw: Callable[..., torch.Tensor], x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """`draw` (torch.rand / torch.randn) of x's shape and dtype, made on the generator's device."""
    return draw(x.shape, generator=generator, device=_gen_device(generator), dtype=x.dtype).to(x.device)


def _gauss1d(sigma: float, radius: int) -> torch.Tensor:
    """Normalised Gaussian taps exp(-i^2 / (2 sigma^2)), i = -radius .. radius (float64)."""
    i = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-(i**2) / (2 * sigma**2))
    return g / g.sum()


def _filter(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate every channel with an odd-sized (kh, kw) `kernel`, padding the borders by `mode`
    ("reflect": OpenCV's default BORDER_REFLECT_101; "replicate": scipy's "nearest")."""
    c = x.shape[1]
    kh, kw = kernel.shape
    padded = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode=mode)
    return F.conv2d(padded, kernel.to(x).expand(c, 1, kh, kw), groups=c)


# ----------------------------------------------------------------------------------------------
# The registry


def _corruption(imagenet: Sequence[Any], cifar: Sequence[Any]) -> Callable[[Callable[..., torch.Tensor]], Corruption]:
    """Register ``fn(x, c, generator)``, c being one severity's constant, as the corruption
    ``fn(x, severity, generator=None, preset="auto")`` under fn's name."""

    def register(fn: Callable[..., torch.Tensor]) -> Corruption:
        @functools.wraps(fn)
        def corruption(x: torch.Tensor, severity: int, generator: torch.Generator | None = None,
                       preset: str = "auto") -> torch.Tensor:
            _check_images(x)
            if not isinstance(severity, int) or not 0 <= severity <= 5:
                raise SurgeonError(f"severity {severity!r} is out of range; choose an integer from 0 (clean) to 5")
            if preset not in CONSTANTS:
                raise SurgeonError(f"preset {preset!r} is unknown; choose from {', '.join(CONSTANTS)}")
            if severity == 0:
                return x
            if preset == "auto":
                preset = "cifar" if min(x.shape[-2:]) <= CIFAR_MAX_SIDE else "imagenet"
            c = (cifar if preset == "cifar" else imagenet)[severity - 1]
            if x.shape[1] == 1:  # grey: corrupted as the RGB image of equal channels, then its first channel
                return fn(_working(x).expand(-1, 3, -1, -1), c, generator)[:, :1].clamp(0, 1).to(x.dtype)
            return fn(_working(x), c, generator).clamp(0, 1).to(x.dtype)

        corruption.__doc__ = (f"{fn.__doc__}\n\n    Constants for severities 1..5: ImageNet-C {tuple(imagenet)}; "
                              f"CIFAR-10-C {tuple(cifar)}.")
        return CORRUPTIONS.register(fn.__name__, corruption)

    return register


def corrupt(x: torch.Tensor, name: str, severity: int, generator: torch.Generator | None = None, *,
            preset: str = "auto") -> torch.Tensor:
    """Corruption `name` of `CORRUPTIONS` at `severity` (0 = clean .. 5) applied to the images x
    (B, 3, H, W) in [0, 1]; deterministic given `generator`. Grey images (B, 1, H, W) are corrupted
    as the RGB image of three equal channels, of which the first is kept (per-value noise keeps its
    strength; colour operations leave grey channels equal)."""
    return CORRUPTIONS.get(name)(x, severity, generator, preset)


# ----------------------------------------------------------------------------------------------
# Noise


@_corruption(imagenet=(0.08, 0.12, 0.18, 0.26, 0.38), cifar=(0.04, 0.06, 0.08, 0.09, 0.10))
def gaussian_noise(x: torch.Tensor, sigma: float, generator: torch.Generator | None) -> torch.Tensor:
    """x + sigma * N(0, 1), independently per value."""
    return x + sigma * _like(torch.randn, x, generator)


@_corruption(imagenet=(60, 25, 12, 5, 3), cifar=(500, 250, 100, 75, 50))
def shot_noise(x: torch.Tensor, rate: float, generator: torch.Generator | None) -> torch.Tensor:
    """Poisson(rate * x) / rate: photon noise with `rate` photons at full intensity."""
    counts = torch.poisson((x * rate).to(_gen_device(generator)), generator=generator)
    return counts.to(x.device) / rate


@_corruption(imagenet=(0.03, 0.06, 0.09, 0.17, 0.27), cifar=(0.01, 0.02, 0.03, 0.05, 0.07))
def impulse_noise(x: torch.Tensor, amount: float, generator: torch.Generator | None) -> torch.Tensor:
    """Salt and pepper as skimage.util.random_noise(mode="s&p", amount): each value independently
    becomes 1 or 0 (equally likely) with probability `amount`."""
    flip = _like(torch.rand, x, generator) < amount
    salt = _like(torch.rand, x, generator) < 0.5
    return torch.where(flip, salt.to(x.dtype), x)


@_corruption(imagenet=(0.15, 0.2, 0.35, 0.45, 0.6), cifar=(0.06, 0.1, 0.12, 0.16, 0.2))
def speckle_noise(x: torch.Tensor, sigma: float, generator: torch.Generator | None) -> torch.Tensor:
    """x + x * sigma * N(0, 1), independently per value (one of the four extra corruptions)."""
    return x + x * sigma * _like(torch.randn, x, generator)


# ----------------------------------------------------------------------------------------------
# Blur


@_corruption(imagenet=(1, 2, 3, 4, 6), cifar=(0.4, 0.6, 0.7, 0.8, 1))
def gaussian_blur(x: torch.Tensor, sigma: float, generator: torch.Generator | None) -> torch.Tensor:
    """Gaussian blur of std `sigma` as skimage.filters.gaussian: taps to radius int(4 sigma + 0.5),
    borders replicated (scipy's mode "nearest"), separable (one of the four extra corruptions).
    Kept rather than torchvision's `gaussian_blur`: the same taps, but it reflects the borders, so
    the pixels within the radius of an edge differ from the reference (the interior agrees to 1e-12)."""
    g = _gauss1d(sigma, int(4 * sigma + 0.5))
    return _filter(_filter(x, g[None], "replicate"), g[:, None], "replicate")


@_corruption(imagenet=((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
             cifar=((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)))
def defocus_blur(x: torch.Tensor, c: tuple[float, float], generator: torch.Generator | None) -> torch.Tensor:
    """Correlation with the reference's `disk(radius, alias_blur)`: on the grid -R..R, R = max(8,
    radius), the points with i^2 + j^2 <= radius^2, normalised, then blurred by a Gaussian of std
    alias_blur over 3 x 3 taps (5 x 5 when radius > 8); borders reflected as cv2.filter2D does.
    The anti-aliasing blur is a full convolution (the kernel grows by its radius) where cv2 reflects
    at the grid's edge; no mass is lost either way."""
    radius, alias = c
    half = max(8, math.floor(radius))
    i = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((i[:, None] ** 2 + i[None] ** 2) <= radius**2).double()
    g = _gauss1d(alias, 1 if radius <= 8 else 2)
    kernel = F.conv2d((disk / disk.sum())[None, None], torch.outer(g, g)[None, None], padding=2 * (g.numel() // 2))
    return _filter(x, kernel[0, 0], "reflect")


@_corruption(imagenet=((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
             cifar=((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)))
def motion_blur(x: torch.Tensor, c: tuple[int, float], generator: torch.Generator | None) -> torch.Tensor:
    """ImageMagick's MotionBlurImage(radius, sigma, angle), which the reference calls through Wand,
    with angle ~ U(-45, 45) degrees per image: out(y, x) = sum_i w_i img(y + round(i sin a),
    x + round(i cos a)) over the width = 2 radius + 1 taps i = 0 .. width - 1, w_i proportional to
    exp(-i^2 / (2 sigma^2)), borders replicated. Taps beyond about 4 sigma weigh nothing, so the
    CIFAR-10-C severities 3 and 4 (both sigma 2, radius 6 and 8) give the same image."""
    radius, sigma = c
    width = 2 * radius + 1
    h, w = x.shape[-2:]
    angle = torch.deg2rad(torch.rand(x.shape[0], generator=generator, device=_gen_device(generator),
                                     dtype=torch.float64).cpu() * 90 - 45)
    i = torch.arange(width, dtype=torch.float64)
    weights = torch.exp(-(i**2) / (2 * sigma**2))
    weights = (weights / weights.sum()).tolist()
    # per image, the (dy, dx) of each tap as python ints, rounded half down as ImageMagick does;
    # plain slices of the padded image are cheaper on the CPU than a batched gather
    taps = torch.ceil(i[:, None] * torch.stack([angle.sin(), angle.cos()], -1)[:, None] - 0.5).long().tolist()
    pad = width - 1
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    return torch.stack([sum(wt * img[:, pad + dy:pad + dy + h, pad + dx:pad + dx + w]
                            for wt, (dy, dx) in zip(weights, offsets))
                        for img, offsets in zip(padded, taps)])


# ----------------------------------------------------------------------------------------------
# Weather


def plasma_fractal(n: int, size: int, decay: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """n plasma fractals (n, size, size) in [0, 1] by the reference's diamond-square algorithm
    (size a power of two, periodic): starting from 0 at the corner, each step of side s sets the
    square centres, then the edge midpoints, to the mean of their 4 neighbours plus
    U(-wibble, wibble) * wibble; wibble starts at 100 and is divided by `decay` per halving of s.
    Each map is then scaled to [0, 1]. Drawn in float64 on the generator's device."""
    if size < 2 or size & (size - 1):
        raise SurgeonError(f"plasma fractal size {size} must be a power of two, at least 2")
    dev = _gen_device(generator)
    m = torch.zeros(n, size, size, dtype=torch.float64, device=dev)
    step, wibble = size, 100.0

    def jitter(total: torch.Tensor) -> torch.Tensor:
        u = torch.rand(total.shape, generator=generator, device=dev, dtype=torch.float64)
        return total / 4 + wibble * (2 * u - 1) * wibble

    while step >= 2:
        half = step // 2
        corners = m[:, ::step, ::step]
        around = corners + corners.roll(-1, 1)
        m[:, half::step, half::step] = jitter(around + around.roll(-1, 2))
        centres = m[:, half::step, half::step]
        m[:, ::step, half::step] = jitter(centres + centres.roll(1, 1) + corners + corners.roll(-1, 2))
        m[:, half::step, ::step] = jitter(centres + centres.roll(1, 2) + corners + corners.roll(-1, 1))
        step, wibble = half, wibble / decay
    lo = m.amin((1, 2), keepdim=True)
    return (m - lo) / (m.amax((1, 2), keepdim=True) - lo)


@_corruption(imagenet=((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),
             cifar=((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)))
def fog(x: torch.Tensor, c: tuple[float, float], generator: torch.Generator | None) -> torch.Tensor:
    """(x + t P) * M / (M + t): P a `plasma_fractal` with the given decay (one per image, shared by
    the channels, the top-left H x W of a map of the next power of two), t the fog thickness and
    M the image's maximum."""
    thickness, decay = c
    b, _, h, w = x.shape
    size = max(2, 1 << (max(h, w) - 1).bit_length())
    fractal = plasma_fractal(b, size, decay, generator)[:, None, :h, :w].to(x)
    top = x.amax((1, 2, 3), keepdim=True)
    return (x + thickness * fractal) * top / (top + thickness)


# ----------------------------------------------------------------------------------------------
# Digital


@_corruption(imagenet=(0.1, 0.2, 0.3, 0.4, 0.5), cifar=(0.05, 0.1, 0.15, 0.2, 0.3))
def brightness(x: torch.Tensor, delta: float, generator: torch.Generator | None) -> torch.Tensor:
    """HSV value V = max(r, g, b) raised by `delta` and clipped to 1, hue and saturation kept (the
    reference's skimage rgb2hsv / hsv2rgb round trip). With H and S fixed RGB is proportional to V,
    so x' = x * V' / V (grey V' where V = 0)."""
    v = x.amax(1, keepdim=True)
    return torch.where(v > 0, x / v.clamp_min(1e-12), 1.0) * (v + delta).clamp(0, 1)


@_corruption(imagenet=(0.4, 0.3, 0.2, 0.1, 0.05), cifar=(0.75, 0.5, 0.4, 0.3, 0.15))
def contrast(x: torch.Tensor, factor: float, generator: torch.Generator | None) -> torch.Tensor:
    """(x - m) * factor + m, m the mean of each image's channel over its pixels."""
    m = x.mean((2, 3), keepdim=True)
    return (x - m) * factor + m


def _box_weights(n_out: int, n_in: int) -> torch.Tensor:
    """PIL's BOX resampling along one axis as an (n_out, n_in) matrix: output pixel i averages the
    input pixels j with -1/2 < (j + 1/2 - c) / s <= 1/2, c = (i + 1/2) n_in / n_out its centre in
    input pixels, s = max(n_in / n_out, 1) (when enlarging: the nearest input pixel), j within
    floor(c -+ s / 2 + 1/2). The arithmetic follows Pillow's precompute_coeffs, so ties fall the same way."""
    scale = n_in / n_out
    s = max(scale, 1.0)
    centre = (torch.arange(n_out, dtype=torch.float64)[:, None] + 0.5) * scale
    j = torch.arange(n_in, dtype=torch.float64)[None]
    t = (j - centre + 0.5) * (1.0 / s)
    bounds = (j >= torch.floor(centre - s / 2 + 0.5)) & (j < torch.floor(centre + s / 2 + 0.5))
    inside = ((t > -0.5) & (t <= 0.5) & bounds).double()
    return inside / inside.sum(1, keepdim=True)


@_corruption(imagenet=(0.6, 0.5, 0.4, 0.3, 0.25), cifar=(0.95, 0.9, 0.85, 0.75, 0.65))
def pixelate(x: torch.Tensor, scale: float, generator: torch.Generator | None) -> torch.Tensor:
    """The reference's two PIL BOX resizes, down to int(scale H) x int(scale W) and back (as
    matrices along each axis, without PIL's rounding to 8 bits after each pass)."""
    h, w = x.shape[-2:]
    small_h, small_w = max(1, int(h * scale)), max(1, int(w * scale))
    rows = (_box_weights(h, small_h) @ _box_weights(small_h, h)).to(x)  # (H, H): down, then up
    cols = (_box_weights(w, small_w) @ _box_weights(small_w, w)).to(x)
    return rows @ x @ cols.T


@_corruption(imagenet=(25, 18, 15, 10, 7), cifar=(80, 65, 58, 50, 40))
def jpeg_compression(x: torch.Tensor, quality: int, generator: torch.Generator | None) -> torch.Tensor:
    """A JPEG round trip at `quality` of the image rounded to 8 bits (libjpeg through
    torchvision.io, on the CPU; the reference saves with PIL)."""
    u8 = (x * 255).round().clamp(0, 255).to(torch.uint8).cpu()
    decoded = decode_jpeg(encode_jpeg(list(u8), quality=quality))
    return torch.stack(decoded).to(x) / 255


# ----------------------------------------------------------------------------------------------
# Frequency-band noise (Park & Kim, Fig. 2b)


def band_mask(h: int, w: int, f: float, width: float = 0.2) -> torch.Tensor:
    """Boolean (h, w) mask of the square frequency ring f - width <= r <= f + width, in the centred
    layout of torch.fft.fftshift (zero frequency at (h // 2, w // 2)). r = max(|k_y| / (h / 2),
    |k_x| / (w / 2)) is the L-inf norm of the frequency as a fraction of pi (each axis's Nyquist
    frequency is 1); `width` is the ring's half-width, as in PAPER.md ("between f - 0.2 and f + 0.2")."""
    checks.args(width=width)
    checks.check_float("f", f, min=0.0, max=1.0)
    ky = (torch.arange(h, dtype=torch.float64) - h // 2).abs() / (h / 2)
    kx = (torch.arange(w, dtype=torch.float64) - w // 2).abs() / (w / 2)
    r = torch.maximum(ky[:, None], kx[None, :])
    return (r >= f - width) & (r <= f + width)


def frequency_noise(x: torch.Tensor, f: float, eps: float = 0.1, width: float = 0.2,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Park & Kim, Fig. 2b: x + Re(IFFT2(band * FFT2(delta))), delta = eps * sign(N(0, 1)) per value
    (image, channel, pixel) and band = `band_mask(H, W, f, width)` on the centred spectrum: the
    magnitudes inside the ring are kept and the others zeroed, the phases kept. f is the band's
    centre as a fraction of pi (the paper reports f = 0.1 .. 0.9). The result is not clipped to
    [0, 1]: clipping would move noise energy out of the band."""
    _check_images(x)
    if not 0 <= f <= 1:
        raise SurgeonError(f"f={f} is outside [0, 1]; give the band centre as a fraction of pi, e.g. 0.5")
    if width <= 0:
        raise SurgeonError(f"width={width} must be positive: it is the band's half-width, a fraction of pi")
    if eps < 0:
        raise SurgeonError(f"eps={eps} must be non-negative: it is the noise amplitude before filtering")
    work = _working(x)
    delta = eps * torch.sign(_like(torch.randn, work, generator))
    spectrum = torch.fft.fftshift(torch.fft.fft2(delta), dim=(-2, -1))
    spectrum = spectrum * band_mask(*x.shape[-2:], f, width).to(x.device)
    noise = torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1))).real
    return (work + noise).to(x.dtype)
