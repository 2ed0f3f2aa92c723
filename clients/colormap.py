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


HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def parse_hex(color: str) -> tuple[int, int, int]:
    text = color.strip().lstrip("#") if isinstance(color, str) else ""
    if len(text) != 6 or not HEX_DIGITS.issuperset(text):  # int() alone takes signs, spaces, other scripts' digits
        raise ColorMapError(f"colour {color!r} is not of the form #rrggbb")
    return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)


def read_color_map(manifest: Path) -> dict[str, tuple[int, int, int]]:
    """Class name -> RGB from the first line of a Ground Truth output manifest."""
    try:
        line = json.loads(Path(manifest).read_text().splitlines()[0])
    except (OSError, IndexError, ValueError, RecursionError) as error:  # ValueError: JSON and UTF-8 errors
        raise ColorMapError(f"cannot read a manifest line from {manifest}: {error}") from None
    for key, value in (line.items() if isinstance(line, dict) else ()):
        if key.endswith("-metadata") and isinstance(value, dict) and "internal-color-map" in value:
            return _classes(manifest, value["internal-color-map"])
    raise ColorMapError(f"{manifest} has no '<label>-ref-metadata' with an internal-color-map")


def _classes(manifest: Path, entries) -> dict[str, tuple[int, int, int]]:
    """Class name -> RGB of an internal-color-map: {"<index>": {"class-name": ..., "hex-color": ...}}."""
    if not isinstance(entries, dict) or not all(isinstance(entry, dict) and isinstance(entry.get("class-name"), str)
                                                for entry in entries.values()):
        raise ColorMapError(f"{manifest}: the internal-color-map must map indices to "
                            '{"class-name": ..., "hex-color": "#rrggbb"} objects')
    return {entry["class-name"]: parse_hex(entry.get("hex-color")) for entry in entries.values()}


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
