"""SageMaker Ground Truth semantic-segmentation results: write them, read them, check them.

One output-manifest line names the photo (``source-ref``), its colour mask
(``<label>-ref``) and, in ``<label>-ref-metadata``, the ``internal-color-map`` of class
names and hex colours. Users with real photos bring their own files in this format.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from clients.colormap import ColorMapError, binary_mask, parse_hex, read_color_map

LABEL = "pcb"  # the label attribute name of the labelling job


class LabelError(ValueError):
    """The labelled sample cannot be used; the message names the problem."""


@dataclass
class Labelled:
    image: np.ndarray  # uint8 HxWx3
    mask: np.ndarray  # uint8 HxWx3 colour mask
    color_map: dict[str, str]  # class name -> hex, background first


def manifest_line(image_ref: str, mask_ref: str, color_map: dict[str, str], label: str = LABEL) -> dict:
    return {"source-ref": image_ref, f"{label}-ref": mask_ref, f"{label}-ref-metadata": {
        "internal-color-map": {str(i): {"class-name": name, "hex-color": color, "confidence": 0.0}
                               for i, (name, color) in enumerate(color_map.items())},
        "type": "groundtruth/semantic-segmentation", "human-annotated": "no",
        "creation-date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f"),
        "job-name": f"labeling-job/{label}-synthetic"}}


def write(folder: Path, image: np.ndarray, mask: np.ndarray, color_map: dict[str, str]) -> Path:
    """image.png, mask.png and output.manifest in ``folder``; returns the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / "image.png")
    Image.fromarray(mask).save(folder / "mask.png")
    manifest = folder / "output.manifest"
    manifest.write_text(json.dumps(manifest_line("image.png", "mask.png", color_map)) + "\n")
    return manifest


def _resolve(manifest: Path, ref: str) -> Path:
    if ref.startswith("s3://"):
        raise LabelError(f"{ref}: download the labelled files next to the manifest and use local paths")
    path = Path(ref)
    return path if path.is_absolute() else manifest.parent / path


def _first_line(manifest: Path) -> dict:
    try:
        line = json.loads(Path(manifest).read_text().splitlines()[0])
    except (OSError, IndexError, ValueError, RecursionError) as error:  # ValueError: JSON and UTF-8 errors
        raise LabelError(f"cannot read a manifest line from {manifest}: {error}") from None
    if not isinstance(line, dict):
        raise LabelError(f"{manifest}: the first line is not a JSON object")
    return line


def _rgb(manifest: Path, ref, what: str) -> np.ndarray:
    if not isinstance(ref, str) or not ref:
        raise LabelError(f"{manifest}: the {what} reference {ref!r} is not a file path")
    try:
        return np.asarray(Image.open(_resolve(manifest, ref)).convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise LabelError(f"{manifest}: the {what} {ref} cannot be read as an image: {error}") from None


def read(manifest: Path) -> Labelled:
    """The photo, colour mask and colour map of a one-line output manifest, checked."""
    line = _first_line(manifest)
    mask_key = next((k for k in line if k.endswith("-ref") and k != "source-ref"), None)
    if "source-ref" not in line or mask_key is None:
        raise LabelError(f"{manifest} needs 'source-ref' and '<label>-ref' entries")
    try:
        colors = read_color_map(manifest)
    except ColorMapError as error:
        raise LabelError(str(error)) from None
    image, mask = _rgb(manifest, line["source-ref"], "image"), _rgb(manifest, line[mask_key], "mask")
    color_map = {name: "#%02x%02x%02x" % rgb for name, rgb in colors.items()}
    check(image, mask, color_map)
    return Labelled(image, mask, color_map)


def check(image: np.ndarray, mask: np.ndarray, color_map: dict[str, str]) -> None:
    if image.shape[:2] != mask.shape[:2]:
        raise LabelError(f"the mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                         f"{image.shape[1]}x{image.shape[0]}")
    underscored = [name for name in color_map if "_" in name]
    if underscored:
        raise LabelError(f"class names may not contain '_' (it separates classes in file names): "
                         f"{', '.join(underscored)}")
    known = {parse_hex(color) for color in color_map.values()}
    present = {tuple(int(c) for c in rgb) for rgb in np.unique(mask.reshape(-1, 3), axis=0)}
    unknown = sorted(present - known)
    if unknown:
        listed = ", ".join("#%02x%02x%02x" % rgb for rgb in unknown[:5])
        raise LabelError(f"the mask has colours that are not in the colour map: {listed}")


def class_masks(labelled: Labelled) -> dict[str, np.ndarray]:
    """One binary (0/255) mask per component class, by colour; the background is not a class."""
    background = next(iter(labelled.color_map))
    return {name: binary_mask(labelled.mask, parse_hex(color))
            for name, color in labelled.color_map.items() if name != background}
