"""Sample products and datasets for the tests and the README figures, none of them the circuit board.

* ``coins_labels``: a real photograph (scikit-image's ``coins``) with three coins labelled
  in a Ground Truth semantic-segmentation result.
* ``panel_labels``: a rendered control panel (knobs, toggle switches, lamps on brushed
  metal), other size, class names and colours than the board, background ``background``.
* ``lookout_dataset``: a Lookout for Vision dataset of crops of a real photograph
  (scikit-image's ``brick``) whose anomalies are line defects (``defect_data.real_defects``),
  train and test crops taken from disjoint parts of the photo.
* ``defect_pictures``: the pictures above, for people to look at.

Every crop box of a Lookout dataset is recorded in ``crops.json`` (image path -> [x, y, w, h]
in the photo) so tests can prove that test photos were never seen in training.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import skimage.data
from PIL import Image
from scipy import ndimage
from skimage import filters, measure, morphology

from clients.colormap import parse_hex
from defect_data import groundtruth, real_defects
from defect_data.lookout import write_manifest_line

COIN_COLORS = {"BACKGROUND": "#ffffff", "coinA": "#e6194b", "coinB": "#3cb44b", "coinC": "#4363d8"}
PANEL_COLORS = {"background": "#000000", "knob": "#ff9900", "switch": "#00ccff", "lamp": "#ff33cc"}
PANEL_SIZE = (280, 400)  # height, width: not the board's 240x320
DEFECT_COLORS = {"BACKGROUND": "#ffffff", "crack": "#e6194b", "scratch": "#3cb44b", "dent": "#4363d8",
                 "stain": "#f58231", "chip": "#911eb4"}
CROP = 160  # side of every Lookout image (Lookout needs 64..4096 and one size per dataset)
TRAIN_PART = 0.6  # train crops lie in the photo's left 60 %, test crops in the right 40 %


# --- coins: a real photograph, labelled ---------------------------------------------------------

def _coin_regions(gray: np.ndarray) -> list:
    """Round, solid bright regions that do not touch the border: single coins."""
    bright = gray > filters.threshold_otsu(gray)
    solid = ndimage.binary_fill_holes(morphology.closing(morphology.opening(bright, morphology.disk(2)),
                                                         morphology.disk(3)))
    height, width = gray.shape
    return [region for region in measure.regionprops(measure.label(solid))
            if region.solidity > 0.9 and region.eccentricity < 0.6 and region.area > 500
            and region.bbox[0] > 0 and region.bbox[1] > 0 and region.bbox[2] < height and region.bbox[3] < width]


def _three_apart(regions: list, min_distance: float = 100) -> list:
    """The largest regions, each at least ``min_distance`` pixels from those already taken."""
    chosen = []
    for region in sorted(regions, key=lambda r: (-r.area, r.label)):  # label breaks ties: deterministic
        if all(np.hypot(*np.subtract(region.centroid, other.centroid)) >= min_distance for other in chosen):
            chosen.append(region)
        if len(chosen) == 3:
            return chosen
    raise AssertionError("fewer than three well-separated coins found")


def _coin_mask(shape: tuple[int, int], regions: list) -> np.ndarray:
    """Colour mask: each coin's convex hull, grown 3 px so dark rims are covered too."""
    mask = np.empty((*shape, 3), np.uint8)
    mask[:] = parse_hex(COIN_COLORS["BACKGROUND"])
    for region, name in zip(regions, ["coinA", "coinB", "coinC"]):
        hull = np.zeros(shape, bool)
        top, left, bottom, right = region.bbox
        hull[top:bottom, left:right] = region.image_convex
        mask[morphology.dilation(hull, morphology.disk(3))] = parse_hex(COIN_COLORS[name])
    return mask


def coins_labels(folder: Path) -> Path:
    """scikit-image's coins photo with three coins labelled; returns the output manifest."""
    gray = skimage.data.coins()
    mask = _coin_mask(gray.shape, _three_apart(_coin_regions(gray)))
    return groundtruth.write(Path(folder), np.dstack([gray] * 3), mask, COIN_COLORS)


# --- panel: a rendered product -------------------------------------------------------------------

@lru_cache(maxsize=1)
def _grid() -> tuple[np.ndarray, np.ndarray]:
    """Pixel x and y coordinates of the panel; shared, so callers must not write to them."""
    ys, xs = np.mgrid[0:PANEL_SIZE[0], 0:PANEL_SIZE[1]].astype(np.float32)
    return xs, ys


def _disc(centre, radius: float) -> np.ndarray:
    """Anti-aliased coverage 0..1 of a disc (a distance field with a one-pixel soft edge)."""
    xs, ys = _grid()
    return np.clip(radius - np.hypot(xs - centre[0], ys - centre[1]) + 0.5, 0, 1)


def _stick(start, end, radius: float) -> np.ndarray:
    """Anti-aliased coverage of a segment with round ends (a toggle lever, a pointer)."""
    xs, ys = _grid()
    a, b = np.asarray(start, np.float32), np.asarray(end, np.float32)
    t = np.clip(((xs - a[0]) * (b - a)[0] + (ys - a[1]) * (b - a)[1]) / ((b - a) @ (b - a)), 0, 1)
    return np.clip(radius - np.hypot(xs - a[0] - t * (b - a)[0], ys - a[1] - t * (b - a)[1]) + 0.5, 0, 1)


def _paint(canvas: np.ndarray, coverage: np.ndarray, colour) -> None:
    """Paint a colour (RGB, or an HxWx3 array) over the canvas where the shape covers it."""
    rows, cols = np.flatnonzero(coverage.any(axis=1)), np.flatnonzero(coverage.any(axis=0))
    if rows.size == 0:
        return
    box = np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]  # only the shape's box: ~10x faster
    colour = np.asarray(colour, np.float32)
    paint = colour[box] if colour.ndim == 3 else colour
    alpha = coverage[box][..., None]
    canvas[box] = canvas[box] * (1 - alpha) + paint * alpha


def _lit(centre, radius: float, base, strength: float) -> np.ndarray:
    """A colour field brighter towards the top-left, the panel's light, for round shapes."""
    xs, ys = _grid()
    facing = -((xs - centre[0]) + (ys - centre[1])) / (radius * 2.0)
    return np.clip(np.asarray(base, np.float32) * (1 + strength * facing[..., None]), 0, 255)


def _brushed_metal(rng: np.random.Generator) -> np.ndarray:
    """Grey metal brushed left to right: streaks long along x, a light falling off to the bottom."""
    height, width = PANEL_SIZE
    streaks = cv2.blur(rng.normal(0, 1, (height, width)).astype(np.float32), (61, 1)) * 60
    fine = rng.normal(0, 2.0, (height, width)).astype(np.float32)
    light = np.linspace(1.08, 0.9, height, dtype=np.float32)[:, None]
    grey = (150 + streaks + fine) * light
    return np.dstack([grey * 0.98, grey, grey * 1.03])  # a slightly cool metal


def _shadow(canvas: np.ndarray, silhouette: np.ndarray) -> None:
    """A soft drop shadow down and right of the part, as the panel's light is top-left."""
    moved = np.roll(silhouette, (6, 5), axis=(0, 1))
    _paint(canvas, cv2.GaussianBlur(moved, (0, 0), 4) * 0.55, (20, 20, 22))


def _knob(canvas: np.ndarray, centre, radius: float, angle: float) -> np.ndarray:
    body = _disc(centre, radius)
    _shadow(canvas, body)
    _paint(canvas, body, _lit(centre, radius, (52, 52, 58), 0.6))
    xs, ys = _grid()
    ridges = np.cos(36 * np.arctan2(ys - centre[1], xs - centre[0])) > 0  # knurled grip round the rim
    rim = body - _disc(centre, radius * 0.86)
    _paint(canvas, rim * ridges * 0.6, (20, 20, 24))
    _paint(canvas, _disc(centre, radius * 0.7), _lit(centre, radius * 0.7, (88, 88, 95), 0.7))
    tip = (centre[0] + 0.6 * radius * np.cos(angle), centre[1] + 0.6 * radius * np.sin(angle))
    _paint(canvas, _stick(centre, tip, 1.6), (235, 235, 230))
    return body


def _switch(canvas: np.ndarray, centre, up: bool) -> np.ndarray:
    tip = (centre[0], centre[1] + (-34 if up else 34))
    nut, lever = _disc(centre, 14), _stick(centre, tip, 4.5)
    silhouette = np.maximum(nut, np.maximum(lever, _disc(tip, 6)))
    _shadow(canvas, silhouette)
    _paint(canvas, nut, _lit(centre, 14, (175, 175, 180), 0.5))
    _paint(canvas, _disc(centre, 9), _lit(centre, 9, (120, 120, 126), 0.6))
    _paint(canvas, lever, (205, 205, 210))
    _paint(canvas, _stick((centre[0] - 1.5, centre[1]), (tip[0] - 1.5, tip[1]), 1.2), (250, 250, 250))  # chrome
    _paint(canvas, _disc(tip, 6), _lit(tip, 6, (215, 215, 220), 0.5))
    return silhouette


LAMP_COLOURS = [(230, 40, 30), (40, 210, 70), (250, 170, 20)]


def _lamp(canvas: np.ndarray, centre, colour, on: bool) -> np.ndarray:
    bezel = _disc(centre, 11)
    if on:  # a lit lamp throws a glow on the panel around it
        _paint(canvas, np.clip(_disc(centre, 22) - bezel, 0, 1) * cv2.GaussianBlur(_disc(centre, 16), (0, 0), 5) * 0.5,
               colour)
    _shadow(canvas, bezel)
    _paint(canvas, bezel, _lit(centre, 11, (190, 190, 195), 0.6))
    dome = np.asarray(colour, np.float32) * (1.0 if on else 0.45)
    _paint(canvas, _disc(centre, 8), _lit(centre, 8, dome, 0.5))
    _paint(canvas, _disc((centre[0] - 3, centre[1] - 3), 2.2), (255, 255, 255))
    return bezel


def _screws(canvas: np.ndarray, rng: np.random.Generator) -> None:
    """Corner screws: parts that are not labelled, so a model cannot take every round thing for a part."""
    height, width = PANEL_SIZE
    for centre in [(16, 16), (width - 16, 16), (16, height - 16), (width - 16, height - 16)]:
        _paint(canvas, _disc(centre, 7), _lit(centre, 7, (170, 170, 172), 0.5))
        angle = rng.uniform(0, np.pi)
        offset = 5 * np.array([np.cos(angle), np.sin(angle)])
        _paint(canvas, _stick(np.subtract(centre, offset), np.add(centre, offset), 1.0), (70, 70, 72))


def _panel_parts(rng: np.random.Generator) -> list[tuple[str, dict]]:
    """Where each part goes, jittered a few pixels per seed; states differ per seed too."""
    def near(x, y):
        return (x + rng.uniform(-6, 6), y + rng.uniform(-6, 6))
    parts = [("knob", {"centre": near(x, 165), "radius": rng.uniform(30, 36), "angle": rng.uniform(0, 2 * np.pi)})
             for x in (85, 190)]
    parts += [("switch", {"centre": near(x, 175), "up": bool(rng.random() < 0.5)}) for x in (280, 345)]
    parts += [("lamp", {"centre": near(x, 62), "colour": LAMP_COLOURS[i], "on": bool(rng.random() < 0.6)})
              for i, x in enumerate((250, 295, 340))]
    return parts


def render_panel(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(RGB image, colour mask) of the control panel."""
    rng = np.random.default_rng(seed)
    canvas = _brushed_metal(rng)
    cv2.rectangle(canvas, (40, 30), (200, 95), (95, 95, 98), 1, cv2.LINE_AA)  # an engraved label field
    _screws(canvas, rng)
    mask = np.empty((*PANEL_SIZE, 3), np.uint8)
    mask[:] = parse_hex(PANEL_COLORS["background"])
    draw = {"knob": _knob, "switch": _switch, "lamp": _lamp}
    for name, settings in _panel_parts(rng):
        silhouette = draw[name](canvas, **settings)
        mask[morphology.dilation(silhouette > 0, morphology.disk(1))] = parse_hex(PANEL_COLORS[name])
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), mask


def panel_labels(folder: Path, seed: int = 0) -> Path:
    """The rendered control panel as a Ground Truth result; returns the output manifest."""
    image, mask = render_panel(seed)
    return groundtruth.write(Path(folder), image, mask, PANEL_COLORS)


# --- Lookout dataset: crops of a real photograph with line defects --------------------------------

@lru_cache(maxsize=1)
def _photo() -> np.ndarray:
    """scikit-image's brick wall, a real photograph (grayscale 512x512), as RGB."""
    return np.dstack([skimage.data.brick()] * 3)


def _crop_box(region: str, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(x, y, w, h) inside the region's part of the photo; the parts do not overlap."""
    height, width = _photo().shape[:2]
    split_x = int(TRAIN_PART * width)
    left, right = {"train": (0, split_x - CROP), "test": (split_x, width - CROP)}[region]
    return int(rng.integers(left, right + 1)), int(rng.integers(0, height - CROP + 1)), CROP, CROP


def _camera_variation(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, white-balance drift and sensor noise, as between shots on a line."""
    pixels = image.astype(np.float32)
    mean = pixels.mean()
    varied = (pixels - mean) * rng.uniform(0.88, 1.12) + mean + rng.normal(0, 8)
    varied *= rng.uniform(0.97, 1.03, 3).astype(np.float32)
    varied += rng.normal(0, rng.uniform(1.5, 3.5), image.shape).astype(np.float32)
    return np.clip(np.rint(varied), 0, 255).astype(np.uint8)


def _defect_mask(binary: np.ndarray, kind: str) -> np.ndarray:
    mask = np.empty((*binary.shape, 3), np.uint8)
    mask[:] = parse_hex(DEFECT_COLORS["BACKGROUND"])
    mask[binary > 0] = parse_hex(DEFECT_COLORS[kind])
    return mask


def _write_region(folder: Path, region: str, normals: int, anomalies: int, with_masks: bool,
                  rng: np.random.Generator, crops: dict) -> list[dict]:
    """The region's images, masks and manifest lines; file names start with the region."""
    lines, kinds = [], list(real_defects.KINDS)
    for index in range(normals + anomalies):
        box = _crop_box(region, rng)
        x, y, w, h = box
        crop = np.ascontiguousarray(_photo()[y:y + h, x:x + w])
        anomalous = index >= normals
        kind = kinds[(index - normals) % len(kinds)] if anomalous else None
        if anomalous:
            crop, binary = real_defects.apply(crop, kind, rng)
        name = f"{region}-{index:03d}" + (f"-{kind}" if anomalous else "")
        image_ref = f"{'anomaly' if anomalous else 'normal'}/{name}.jpg"
        Image.fromarray(_camera_variation(crop, rng)).save(folder / image_ref, quality=95)
        crops[image_ref] = list(box)
        mask_ref = None
        if anomalous and with_masks:
            mask_ref = f"masks/{name}.png"
            Image.fromarray(_defect_mask(binary, kind)).save(folder / mask_ref)
        color_map = {"BACKGROUND": DEFECT_COLORS["BACKGROUND"], kind: DEFECT_COLORS[kind]} if mask_ref else None
        lines.append(write_manifest_line(image_ref, anomalous, mask_ref, color_map))
    return lines


def _write_manifest(path: Path, lines: list[dict]) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def lookout_dataset(folder: Path, *, with_masks: bool = True, split: bool = False, normals: int = 10,
                    anomalies: int = 10, seed: int = 0, region: str = "train") -> Path:
    """A Lookout dataset of brick-photo crops; returns the folder.

    ``normals`` and ``anomalies`` are per manifest. Without ``split`` one ``dataset.manifest``
    takes its crops from ``region`` ("train": the photo's left 60 %, "test": the right 40 %);
    with ``split``, ``train.manifest`` takes the train region and ``test.manifest`` the test
    region (``region`` is then not used). References are relative to the folder.
    """
    if region not in ("train", "test"):
        raise ValueError(f"unknown region {region!r}: train or test")
    folder = Path(folder)
    for sub in ("normal", "anomaly") + (("masks",) if with_masks else ()):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    rng, crops = np.random.default_rng(seed), {}
    for manifest, part in ([("train", "train"), ("test", "test")] if split else [("dataset", region)]):
        lines = _write_region(folder, part, normals, anomalies, with_masks, rng, crops)
        _write_manifest(folder / f"{manifest}.manifest", lines)
    (folder / "crops.json").write_text(json.dumps(crops, indent=1))
    return folder


# --- pictures for people -------------------------------------------------------------------------

def _overlay(image: np.ndarray, mask: np.ndarray, background) -> np.ndarray:
    """The image with its labelled pixels tinted half-way to their class colour."""
    labelled = np.any(mask != np.array(background, np.uint8), axis=-1)
    shown = image.copy()
    shown[labelled] = (image[labelled].astype(np.uint16) + mask[labelled]) // 2
    return shown


def _anomaly_grid(folder: Path, count: int = 10) -> np.ndarray:
    """Rows of (anomaly | its mask over it), five anomalies across."""
    dataset = lookout_dataset(folder, with_masks=True, normals=0, anomalies=count, seed=1)
    lines = [json.loads(text) for text in (dataset / "dataset.manifest").read_text().splitlines()]
    tiles = []
    for line in lines:
        image = np.asarray(Image.open(dataset / line["source-ref"]).convert("RGB"))
        mask = np.asarray(Image.open(dataset / line["anomaly-mask-ref"]).convert("RGB"))
        gap = np.full((CROP, 4, 3), 255, np.uint8)
        tiles.append(np.hstack([image, gap, _overlay(image, mask, (255, 255, 255)), gap, gap]))
    rows = [np.hstack(tiles[start:start + 5]) for start in range(0, count, 5)]
    return np.vstack([np.vstack([row, np.full((8, row.shape[1], 3), 255, np.uint8)]) for row in rows])


def defect_pictures(out_folder: Path) -> list[Path]:
    """coins, panel (image and mask each) and a 2x5 grid of Lookout anomalies as PNGs; returns them."""
    out_folder = Path(out_folder)
    written = []
    for name, make in (("coins", coins_labels), ("panel", panel_labels)):
        labelled = groundtruth.read(make(out_folder / f"{name}-labels"))
        background = parse_hex(next(iter(labelled.color_map.values())))
        for suffix, picture in (("", labelled.image), ("-mask", labelled.mask),
                                ("-overlay", _overlay(labelled.image, labelled.mask, background))):
            written.append(out_folder / f"{name}{suffix}.png")
            Image.fromarray(picture).save(written[-1])
    written.append(out_folder / "lookout-anomalies.png")
    Image.fromarray(_anomaly_grid(out_folder / "lookout")).save(written[-1])
    return written
