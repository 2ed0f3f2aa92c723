"""More normal images from one: controlled photometric changes plus a little hue and geometry.

The AWS post uses four imgaug transform kinds (gamma, sigmoid contrast, linear contrast,
additive Gaussian noise), ten images each. imgaug is unmaintained; this uses
albumentations, whose transforms cover the same ground, and writes sigmoid contrast (not
in albumentations) as a small function of its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import albumentations as A
import numpy as np


@dataclass(frozen=True)
class Ranges:
    gamma: tuple[float, float] = (0.7, 1.5)
    sigmoid_gain: tuple[float, float] = (5.0, 10.0)
    sigmoid_cutoff: tuple[float, float] = (0.35, 0.65)
    linear_contrast: tuple[float, float] = (0.6, 1.4)
    noise_std: tuple[float, float] = (0.01, 0.05)  # of the 0-255 range
    hue_shift: int = 6  # degrees, either way
    saturation_shift: int = 12
    translate: float = 0.02  # of the image size
    rotate: float = 2.0  # degrees


KINDS = ("gamma", "sigmoid_contrast", "linear_contrast", "gaussian_noise")


def sigmoid_contrast(image: np.ndarray, gain: float, cutoff: float) -> np.ndarray:
    """255 / (1 + exp(gain * (cutoff - x))) on x in [0, 1], rescaled so that 0 and 255 stay put."""
    x = image.astype(np.float32) / 255
    low, high = (1 / (1 + np.exp(gain * (cutoff - v))) for v in (0.0, 1.0))
    y = (1 / (1 + np.exp(gain * (cutoff - x))) - low) / (high - low)
    return np.clip(np.rint(y * 255), 0, 255).astype(np.uint8)


def _sigmoid_image(image: np.ndarray, gain: float, cutoff: float, **_) -> np.ndarray:
    return sigmoid_contrast(image, gain, cutoff)


def _photometric(kind: str, rng: np.random.Generator, ranges: Ranges):
    if kind == "gamma":
        gamma = int(round(100 * rng.uniform(*ranges.gamma)))
        return A.RandomGamma(gamma_limit=(gamma, gamma), p=1)
    if kind == "sigmoid_contrast":
        gain, cutoff = rng.uniform(*ranges.sigmoid_gain), rng.uniform(*ranges.sigmoid_cutoff)
        return A.Lambda(image=partial(_sigmoid_image, gain=gain, cutoff=cutoff), p=1)
    if kind == "linear_contrast":
        factor = rng.uniform(*ranges.linear_contrast) - 1
        return A.RandomBrightnessContrast(brightness_limit=(0, 0), contrast_limit=(factor, factor), p=1)
    if kind == "gaussian_noise":
        std = rng.uniform(*ranges.noise_std)
        return A.GaussNoise(std_range=(std, std), p=1)
    raise ValueError(f"unknown transform kind {kind!r}; choose from {', '.join(KINDS)}")


def augment(image: np.ndarray, kind: str, index: int, seed: int = 0, ranges: Ranges = Ranges(),
            geometric: bool = True) -> np.ndarray:
    """The ``index``-th variant of ``kind``: the same (seed, kind, index) gives the same pixels.

    ``geometric=False`` keeps pixels in place (an anomaly's mask must still fit it).
    """
    rng = np.random.default_rng([seed, KINDS.index(kind) if kind in KINDS else len(KINDS), index])
    transforms = [
        _photometric(kind, rng, ranges),
        A.HueSaturationValue(hue_shift_limit=ranges.hue_shift, sat_shift_limit=ranges.saturation_shift,
                             val_shift_limit=0, p=1),
    ]
    if geometric:
        transforms.append(A.Affine(translate_percent=(-ranges.translate, ranges.translate),
                                   rotate=(-ranges.rotate, ranges.rotate), border_mode=1, p=1))  # replicate edges
    pipeline = A.Compose(transforms, seed=int(rng.integers(2**31)))
    return pipeline(image=image)["image"]


def normal_stems(per_kind: int = 10, kinds: tuple[str, ...] = KINDS) -> list[tuple[str, str, int]]:
    """(file stem, kind, index) of the normal variants: 4 x 10 = 40 by default."""
    return [(f"normal_{kind}_{index:02d}", kind, index) for kind in kinds for index in range(per_kind)]


def normals(image: np.ndarray, per_kind: int = 10, seed: int = 0, kinds: tuple[str, ...] = KINDS,
            ranges: Ranges = Ranges()):
    """(file stem, image) for ``per_kind`` variants of every kind."""
    for stem, kind, index in normal_stems(per_kind, kinds):
        yield stem, augment(image, kind, index, seed, ranges)
