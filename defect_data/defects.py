"""Synthetic anomalies: remove labelled components with ``ensemble_lama``, and the split rules.

Train images miss exactly one component; test images miss one to three. Each class is
removed at least ``per_class`` times in each split. File names record what was removed,
as in the AWS post: ``40_im_mask_IC_resistor1_resistor2.jpg``.
"""
from __future__ import annotations

import numpy as np

from typing import Callable

from clients.colormap import parse_hex
from clients.inpaint import inpaint, png_bytes
from clients.protocols import Route

# (image uint8 HxWx3, hole uint8 HxW 0/255) -> the image with the hole filled
Inpainter = Callable[[np.ndarray, np.ndarray], np.ndarray]

TEST_MAX_DEFECTS = 3


def plan(classes: list[str], split: str, per_class: int, seed: int = 0) -> list[tuple[str, ...]]:
    """Which classes each anomaly image of the split misses, every class at least ``per_class`` times."""
    if not classes:
        raise ValueError("no component classes to remove")
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    if split == "train":
        return [(name,) for name in classes for _ in range(per_class)]
    if split != "test":
        raise ValueError(f"unknown split {split!r}: train or test")
    counts = dict.fromkeys(classes, 0)
    combos: list[tuple[str, ...]] = []
    while min(counts.values()) < per_class:
        size = int(rng.integers(1, min(TEST_MAX_DEFECTS, len(classes)) + 1))
        rarest = min(counts, key=counts.get)  # keeps the loop short and the classes balanced
        others = [name for name in classes if name != rarest]
        picked = [rarest, *rng.choice(others, size - 1, replace=False)] if size > 1 else [rarest]
        combo = tuple(name for name in classes if name in picked)  # colour-map order
        combos.append(combo)
        for name in combo:
            counts[name] += 1
    return combos


def file_name(index: int, removed: tuple[str, ...]) -> str:
    return f"{index}_im_mask_{'_'.join(removed)}.jpg"


def hole(masks: dict[str, np.ndarray], removed: tuple[str, ...]) -> np.ndarray:
    """uint8 0/255: the union of the removed components' masks."""
    union = np.zeros_like(next(iter(masks.values())))
    for name in removed:
        union = np.maximum(union, masks[name])
    return union


def anomaly_mask(masks: dict[str, np.ndarray], removed: tuple[str, ...], color_map: dict[str, str]) -> np.ndarray:
    """Colour mask of what is missing: each removed component in its class colour, on the background colour."""
    background = parse_hex(next(iter(color_map.values())))
    shape = next(iter(masks.values())).shape
    colour = np.empty((*shape, 3), np.uint8)
    colour[:] = background
    for name in removed:
        colour[masks[name] > 0] = parse_hex(color_map[name])
    return colour


def served(route: Route) -> Inpainter:
    """Fills through the served ``ensemble_lama`` (a local server or a SageMaker endpoint)."""
    return lambda image, hole_mask: inpaint(route, png_bytes(image), png_bytes(hole_mask))


def in_process(lama_weights) -> Inpainter:
    """Fills with a LaMa checkpoint in-process: the product's own (``train_lama``), or big-lama."""
    from builders.declaration import BuildOptions
    from builders.in_process import InProcessLama

    return InProcessLama(BuildOptions(lama_weights=lama_weights)).inpaint


def remove(fill: Inpainter, image: np.ndarray, masks: dict[str, np.ndarray], removed: tuple[str, ...]) -> np.ndarray:
    """The image with the removed components inpainted away by LaMa."""
    return fill(image, hole(masks, removed))
