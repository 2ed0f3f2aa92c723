"""SageMaker Ground Truth semantic-segmentation colour maps: class name <-> colour, and binary masks.

A Ground Truth output manifest line holds, under ``<label-attribute>-ref-metadata``, an
``internal-color-map`` of ``{"<index>": {"class-name": ..., "hex-color": "#rrggbb"}}``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class ColorMapError(ValueError):
    """A colour map, class name or colour that cannot be used; the message says why."""


def parse_hex(color: str) -> tuple[int, int, int]:
    text = color.strip().lstrip("#")
    if len(text) != 6:
        raise ColorMapError(f"colour {color!r} is not of the form #rrggbb")
    try:
        return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)
    except ValueError:
        raise ColorMapError(f"colour {color!r} is not of the form #rrggbb") from None


def read_color_map(manifest: Path) -> dict[str, tuple[int, int, int]]:
    """Class name -> RGB from the first line of a Ground Truth output manifest."""
    try:
        line = json.loads(Path(manifest).read_text().splitlines()[0])
    except (OSError, IndexError, json.JSONDecodeError) as error:
        raise ColorMapError(f"cannot read a manifest line from {manifest}: {error}") from None
    for key, value in line.items():
        if key.endswith("-metadata") and isinstance(value, dict) and "internal-color-map" in value:
            return {entry["class-name"]: parse_hex(entry["hex-color"])
                    for entry in value["internal-color-map"].values()}
    raise ColorMapError(f"{manifest} has no '<label>-ref-metadata' with an internal-color-map")


def class_color(color_map: dict[str, tuple[int, int, int]], class_name: str) -> tuple[int, int, int]:
    if class_name not in color_map:
        raise ColorMapError(f"class {class_name!r} is not in the colour map; it has: {', '.join(color_map)}")
    return color_map[class_name]


def binary_mask(color_mask: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    """uint8 HxW, 255 where the HxWx3 colour mask has exactly ``color``."""
    hits = np.all(color_mask[..., :3] == np.array(color, dtype=color_mask.dtype), axis=-1)
    if not hits.any():
        raise ColorMapError(f"no pixel of the mask has colour #{''.join(f'{c:02x}' for c in color)}")
    return hits.astype(np.uint8) * 255
