"""The LaMa generator (big-lama): a ResNet of Fast Fourier Convolutions (Suvorov et al., WACV 2022).

Module names and order follow the reference implementation, so the official checkpoint's
``generator.*`` tensors load with ``strict=True``. The 2-D real FFT of the Fourier unit
takes one of two routes, a module option that changes no weight:

- ``"matrix"``: products with cosine/sine matrices built from the input size, the same
  numbers as ``torch.fft.rfftn(norm="ortho")`` as plain ONNX MatMuls that every execution
  provider runs (onnxruntime's CUDA provider has no DFT kernel). Traced to TorchScript it
  is slow and bakes the tracing device into the matrices.
- ``"fft"``: ``torch.fft`` itself, for TorchScript (``pytorch_libtorch``): cuFFT on a GPU,
  and the traced graph keeps no device and dynamic H, W and batch. Its inverse is written
  so that cuFFT gets input it defines a result for (docs/lama-gpu-fft.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

# Channel split of the resnet blocks: 3/4 of the channels go to the global (spectral) branch.
GLOBAL_RATIO = 0.75
FOURIER_ROUTES = ("matrix", "fft")


@dataclass(frozen=True)
class GeneratorSize:
    """big-lama is the default; smaller sizes are trained by this project for offline use."""

    ngf: int = 64
    n_downsampling: int = 3
    n_blocks: int = 18
    max_features: int = 1024


BIG_LAMA = GeneratorSize()


def _dft_angles(length: int, positions: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    # Reduce the integer products modulo the length first: float32 cos/sin stay exact to ~1e-7.
    return torch.remainder(positions[:, None] * bins[None, :], length) * (2 * math.pi / length)


def _self_conjugate(bins: torch.Tensor, length: int) -> torch.Tensor:
    """The rfft bins equal to their own mirror image (DC and, for an even length, Nyquist)."""
    return (bins == 0) | (2 * bins == length)


def _axis(x: torch.Tensor, dim: int) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(length, positions 0..length-1, rfft bins 0..length//2) along ``dim``."""
    length = x.shape[dim]
    positions = torch.arange(length, dtype=torch.float32, device=x.device)
    return length, positions, positions[: length // 2 + 1]


def rfft2_ortho(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts of ``torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")``."""
    height, rows, _ = _axis(x, -2)
    width, cols, bins = _axis(x, -1)
    angle_w = _dft_angles(width, cols, bins)  # (W, K)
    real, imag = x @ torch.cos(angle_w), -(x @ torch.sin(angle_w))
    angle_h = _dft_angles(height, rows, rows)  # (H, H), symmetric
    cos_h, sin_h = torch.cos(angle_h), torch.sin(angle_h)
    scale = (height * width) ** -0.5
    return (cos_h @ real + sin_h @ imag) * scale, (cos_h @ imag - sin_h @ real) * scale


def irfft2_ortho(real: torch.Tensor, imag: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``torch.fft.irfftn(real + 1j * imag, s=like.shape[-2:], dim=(-2, -1), norm="ortho")``."""
    height, rows, _ = _axis(like, -2)
    width, cols, bins = _axis(like, -1)
    angle_h = _dft_angles(height, rows, rows)
    cos_h, sin_h = torch.cos(angle_h), torch.sin(angle_h)
    real, imag = cos_h @ real - sin_h @ imag, cos_h @ imag + sin_h @ real
    # Bins other than DC and Nyquist stand for themselves and their mirror image.
    weight = torch.where(_self_conjugate(bins, width), 1.0, 2.0)
    angle_w = _dft_angles(width, bins, cols)  # (K, W)
    spatial = (real * weight) @ torch.cos(angle_w) - (imag * weight) @ torch.sin(angle_w)
    return spatial * (height * width) ** -0.5


def rfft2_native(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    spectrum = torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")
    return spectrum.real, spectrum.imag


def self_conjugate_imag_zeroed(rows: torch.Tensor, width: int) -> torch.Tensor:
    """``rows`` (rfft bins along the last axis) with the imaginary part of the DC and Nyquist bins set to 0.

    The learned 1x1 convolution leaves those parts non-zero. A complex-to-real transform has no
    use for them: pocketfft (CPU) ignores them, but cuFFT's answer for such input is undefined and
    on an H200 it differed from the CPU's from 1024x1024 images up (docs/lama-gpu-fft.md).
    """
    bins = torch.cumsum(torch.ones_like(rows.real[..., :1, :]), dim=-1) - 1  # no device literal in a trace
    return torch.complex(rows.real, torch.where(_self_conjugate(bins, width), 0.0, rows.imag))


def irfft2_native(real: torch.Tensor, imag: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``torch.fft.irfftn(real + 1j * imag, s=like.shape[-2:], dim=(-2, -1), norm="ortho")`` as the CPU computes it."""
    width = like.shape[-1]
    rows = torch.fft.ifft(torch.complex(real, imag), dim=-2, norm="ortho")
    return torch.fft.irfft(self_conjugate_imag_zeroed(rows, width), n=width, dim=-1, norm="ortho")


TRANSFORMS = {"matrix": (rfft2_ortho, irfft2_ortho), "fft": (rfft2_native, irfft2_native)}


class FourierUnit(nn.Module):
    def __init__(self, channels: int, route: str = "matrix"):
        super().__init__()
        self.conv_layer = nn.Conv2d(channels * 2, channels * 2, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(channels * 2)
        self.relu = nn.ReLU(inplace=True)
        self.route = route

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        forward_transform, inverse_transform = TRANSFORMS[self.route]
        channels = x.shape[1]
        real, imag = forward_transform(x.float())
        # Interleave as [c0.re, c0.im, c1.re, ...], the reference's channel order.
        spectrum = torch.stack((real, imag), dim=2).flatten(1, 2)
        spectrum = self.relu(self.bn(self.conv_layer(spectrum)))
        spectrum = spectrum.unflatten(1, (channels, 2))
        return inverse_transform(spectrum[:, :, 0], spectrum[:, :, 1], x)


class SpectralTransform(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        hidden = out_channels // 2
        self.downsample = nn.Identity()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, hidden, kernel_size=1, bias=False),
                                   nn.BatchNorm2d(hidden), nn.ReLU(inplace=True))
        self.fu = FourierUnit(hidden)
        self.conv2 = nn.Conv2d(hidden, out_channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.downsample(x))
        return self.conv2(x + self.fu(x))


class FFC(nn.Module):
    """A convolution over a (local, global) channel pair; the global->global path is spectral."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, ratio_gin: float,
                 ratio_gout: float, stride: int = 1, padding: int = 0):
        super().__init__()
        in_global, out_global = int(in_channels * ratio_gin), int(out_channels * ratio_gout)
        in_local, out_local = in_channels - in_global, out_channels - out_global
        self.ratio_gout = ratio_gout

        def conv(cin: int, cout: int) -> nn.Module:
            if cin == 0 or cout == 0:
                return nn.Identity()
            return nn.Conv2d(cin, cout, kernel_size, stride, padding, bias=False, padding_mode="reflect")

        self.convl2l = conv(in_local, out_local)
        self.convl2g = conv(in_local, out_global)
        self.convg2l = conv(in_global, out_local)
        self.convg2g = SpectralTransform(in_global, out_global) if in_global and out_global else nn.Identity()

    def forward(self, x):
        x_local, x_global = x if isinstance(x, tuple) else (x, 0)
        out_local, out_global = 0, 0
        if self.ratio_gout != 1:
            out_local = self.convl2l(x_local) + self.convg2l(x_global)
        if self.ratio_gout != 0:
            out_global = self.convl2g(x_local) + self.convg2g(x_global)
        return out_local, out_global


class FFC_BN_ACT(nn.Module):  # noqa: N801 - the reference's name, kept for the checkpoint's sake
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, ratio_gin: float = 0.0,
                 ratio_gout: float = 0.0, stride: int = 1, padding: int = 0):
        super().__init__()
        self.ffc = FFC(in_channels, out_channels, kernel_size, ratio_gin, ratio_gout, stride, padding)
        out_global = int(out_channels * ratio_gout)
        self.bn_l = nn.BatchNorm2d(out_channels - out_global) if ratio_gout != 1 else nn.Identity()
        self.bn_g = nn.BatchNorm2d(out_global) if ratio_gout != 0 else nn.Identity()
        self.act_l = nn.ReLU(inplace=True) if ratio_gout != 1 else nn.Identity()
        self.act_g = nn.ReLU(inplace=True) if ratio_gout != 0 else nn.Identity()

    def forward(self, x):
        x_local, x_global = self.ffc(x)
        return self.act_l(self.bn_l(x_local)), self.act_g(self.bn_g(x_global))


class FFCResnetBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = FFC_BN_ACT(channels, channels, 3, GLOBAL_RATIO, GLOBAL_RATIO, padding=1)
        self.conv2 = FFC_BN_ACT(channels, channels, 3, GLOBAL_RATIO, GLOBAL_RATIO, padding=1)

    def forward(self, x):
        x_local, x_global = self.conv2(self.conv1(x))
        return x[0] + x_local, x[1] + x_global


class ConcatTupleLayer(nn.Module):
    def forward(self, x):
        return torch.cat(x, dim=1)


def set_fourier_route(module: nn.Module, route: str) -> nn.Module:
    """Switch every Fourier unit inside ``module`` to ``route``; the weights stay as they are."""
    if route not in FOURIER_ROUTES:
        raise ValueError(f"unknown Fourier route {route!r}; choose one of {', '.join(FOURIER_ROUTES)}")
    for unit in module.modules():
        if isinstance(unit, FourierUnit):
            unit.route = route
    return module


class FFCResNetGenerator(nn.Module):
    """4 channels (masked RGB, mask last) in [0, 1] -> 3 channels in [0, 1] (sigmoid)."""

    def __init__(self, size: GeneratorSize = BIG_LAMA, fourier_route: str = "matrix"):
        super().__init__()
        width = [min(size.max_features, size.ngf * 2 ** i) for i in range(size.n_downsampling + 1)]
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), FFC_BN_ACT(4, size.ngf, kernel_size=7)]
        for i in range(size.n_downsampling):
            last = i == size.n_downsampling - 1  # the last one opens the global branch
            layers.append(FFC_BN_ACT(width[i], width[i + 1], 3, ratio_gout=GLOBAL_RATIO if last else 0.0,
                                     stride=2, padding=1))
        layers += [FFCResnetBlock(width[-1]) for _ in range(size.n_blocks)]
        layers.append(ConcatTupleLayer())
        for i in reversed(range(size.n_downsampling)):
            layers += [nn.ConvTranspose2d(width[i + 1], width[i], 3, stride=2, padding=1, output_padding=1),
                       nn.BatchNorm2d(width[i]), nn.ReLU(inplace=True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(size.ngf, 3, kernel_size=7), nn.Sigmoid()]
        self.model = nn.Sequential(*layers)
        set_fourier_route(self, fourier_route)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def generator_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The generator's tensors of a LaMa training checkpoint, ``generator.`` prefix stripped."""
    state = checkpoint.get("state_dict", checkpoint)
    prefix = "generator."
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
