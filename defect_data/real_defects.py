"""Defects as they happen on a production line, drawn on real photographs.

Each kind takes an RGB uint8 HxWx3 image and a numpy ``Generator`` and returns the
defected image (same size and dtype) and a binary uint8 0/255 HxW mask of the pixels
the defect covers. All randomness comes from the generator, so a seed gives one
defect. Sizes are relative to the image's short side, so a defect looks the same on
a crop and on a full photo.

Thin features (cracks, scratches) are drawn on a canvas ``SUPERSAMPLE`` times larger
and shrunk by area averaging: that gives anti-aliased, sub-pixel widths that OpenCV's
own ``LINE_AA`` cannot (it only draws whole-pixel widths).
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

SUPERSAMPLE = 4
MASK_LEVEL = 0.12  # coverage above which a pixel belongs to the defect's mask

Defect = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def _check(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 HxWx3 image, got {image.dtype} {image.shape}")


def _short_side(image: np.ndarray) -> int:
    return min(image.shape[:2])


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _mask_of(coverage: np.ndarray) -> np.ndarray:
    return np.where(coverage > MASK_LEVEL, 255, 0).astype(np.uint8)


def _point_inside(shape: tuple[int, ...], rng: np.random.Generator, margin: float) -> np.ndarray:
    """An (x, y) point at least ``margin`` (a fraction of each side) from the borders."""
    height, width = shape[:2]
    return np.array([rng.uniform(margin, 1 - margin) * width, rng.uniform(margin, 1 - margin) * height])


def _random_walk(start: np.ndarray, heading: float, length: float, step: float,
                 jitter: float, rng: np.random.Generator) -> np.ndarray:
    """Points of a meandering path; the heading is pulled back to its start so the path keeps a direction."""
    points, angle = [start], heading
    for _ in range(max(2, int(length / step))):
        angle += rng.normal(0, jitter) + 0.2 * (heading - angle)
        stride = step * rng.uniform(0.5, 1.5)  # uneven strides keep the kinks from looking regular
        points.append(points[-1] + stride * np.array([np.cos(angle), np.sin(angle)]))
    path = np.array(points)
    # sideways kinks make the path jagged, as a brittle fracture is, rather than a smooth hair
    across = np.array([-np.sin(heading), np.cos(heading)])
    path[1:] += rng.normal(0, 0.2 * step, (len(path) - 1, 1)) * across
    return path


def _draw_polyline(canvas: np.ndarray, points: np.ndarray, widths: np.ndarray) -> None:
    """Segments of a path on a supersampled uint8 canvas, each with its own width (tapering)."""
    scaled = np.rint(points * SUPERSAMPLE).astype(np.int32)
    for (a, b), width in zip(zip(scaled[:-1], scaled[1:]), widths):
        thickness = max(1, int(round(width * SUPERSAMPLE)))
        cv2.line(canvas, tuple(int(v) for v in a), tuple(int(v) for v in b), 255, thickness, cv2.LINE_8)


def _supersampled_canvas(shape: tuple[int, ...]) -> np.ndarray:
    return np.zeros((shape[0] * SUPERSAMPLE, shape[1] * SUPERSAMPLE), np.uint8)


def _coverage(canvas: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Float 0..1 per image pixel: how much of it the supersampled drawing covers."""
    return cv2.resize(canvas, (shape[1], shape[0]), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def crack(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A thin dark branching line with a faint light edge where the broken rim catches light."""
    _check(image)
    short = _short_side(image)
    length = rng.uniform(0.15, 0.40) * short
    width = rng.uniform(1.0, 3.0)
    start = _point_inside(image.shape, rng, 0.2)
    middle = np.array([image.shape[1], image.shape[0]]) / 2
    heading = np.arctan2(*(middle - start)[::-1]) + rng.uniform(-1.0, 1.0)  # runs across, not off the picture
    main = _random_walk(start, heading, length, step=max(1.5, short / 50), jitter=0.3, rng=rng)
    canvas = _supersampled_canvas(image.shape)
    _draw_polyline(canvas, main, np.linspace(width, 0.6 * width, len(main) - 1))  # cracks thin towards the tip
    for _ in range(int(rng.integers(1, 4))):
        fork = main[int(rng.integers(len(main) // 4, len(main) - 1))]
        heading = np.arctan2(*(main[-1] - main[0])[::-1]) + rng.choice([-1, 1]) * rng.uniform(0.4, 1.1)
        branch = _random_walk(fork, heading, rng.uniform(0.25, 0.6) * length, max(1.5, short / 50), 0.35, rng)
        _draw_polyline(canvas, branch, np.linspace(0.7 * width, 0.4 * width, len(branch) - 1))
    core = _coverage(canvas, image.shape)
    rim = np.clip(cv2.GaussianBlur(core, (0, 0), 1.2) * 1.6 - core, 0, 1)  # a halo just outside the crack
    pixels = image.astype(np.float32)
    darkened = pixels * (1 - rng.uniform(0.65, 0.85) * core[..., None])
    lit = darkened + rim[..., None] * (255 - pixels) * 0.18
    return _to_uint8(lit), _mask_of(np.maximum(core, rim))


def _bent_line(start: np.ndarray, end: np.ndarray, bend: float, count: int) -> np.ndarray:
    """A nearly straight path from ``start`` to ``end``, bowed by ``bend`` pixels at its middle."""
    t = np.linspace(0, 1, count)[:, None]
    direction = end - start
    normal = np.array([-direction[1], direction[0]]) / (np.linalg.norm(direction) + 1e-9)
    return start + t * direction + (4 * t * (1 - t)) * bend * normal


def scratch(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A long thin nearly straight line, light (bare metal) or dark (dragged dirt), fading along its length."""
    _check(image)
    short = _short_side(image)
    length = rng.uniform(0.45, 0.85) * short
    centre = _point_inside(image.shape, rng, 0.3)
    angle = rng.uniform(0, np.pi)
    half = 0.5 * length * np.array([np.cos(angle), np.sin(angle)])
    path = _bent_line(centre - half, centre + half, rng.uniform(-0.04, 0.04) * length, 48)
    canvas = _supersampled_canvas(image.shape)
    _draw_polyline(canvas, path, np.full(len(path) - 1, rng.uniform(0.7, 1.6)))
    # depth varies along a scratch: strongest in the middle, shallow where the tool touched and left
    along = np.sin(np.linspace(0, np.pi, len(path))) ** 0.5
    strength = _coverage(canvas, image.shape) * _along_path_profile(image.shape, path, along)
    pixels = image.astype(np.float32)
    under = pixels[strength > MASK_LEVEL].mean() if (strength > MASK_LEVEL).any() else 128.0
    # either can happen, but a light scratch cannot show on white, nor a dark one on black
    light = rng.random() < 0.6 if 70 < under < 185 else under <= 70
    if light:
        changed = pixels + strength[..., None] * (255 - pixels) * rng.uniform(0.55, 0.8)
    else:
        changed = pixels * (1 - strength[..., None] * rng.uniform(0.5, 0.7))
    return _to_uint8(changed), _mask_of(strength)


def _along_path_profile(shape: tuple[int, ...], path: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per pixel, the value of the nearest path point (so a profile along a line becomes an image)."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]]
    direction = path[-1] - path[0]
    t = ((xs - path[0][0]) * direction[0] + (ys - path[0][1]) * direction[1]) / (direction @ direction + 1e-9)
    index = np.clip(np.rint(t * (len(values) - 1)), 0, len(values) - 1).astype(int)
    return values[index].astype(np.float32)


def _ellipse_field(shape: tuple[int, ...], centre: np.ndarray, radii: np.ndarray, angle: float) -> np.ndarray:
    """Squared normalised distance from the centre of a rotated ellipse (1 on its outline)."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    dx, dy = xs - centre[0], ys - centre[1]
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    return (u / radii[0]) ** 2 + (v / radii[1]) ** 2


def _pressed_in(image: np.ndarray, gx: np.ndarray, gy: np.ndarray, strength: float) -> np.ndarray:
    """The surface texture bent along the dent's walls, as lines on a pressed-in surface bend."""
    ys, xs = np.mgrid[0:image.shape[0], 0:image.shape[1]].astype(np.float32)
    scale = strength / (np.hypot(gx, gy).max() + 1e-9)
    warped = cv2.remap(image, xs + gx.astype(np.float32) * scale, ys + gy.astype(np.float32) * scale,
                       cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return warped.astype(np.float32)


def dent(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A soft elliptical depression: one slope faces the light and brightens, the other falls into shade."""
    _check(image)
    short = _short_side(image)
    radii = np.array([rng.uniform(0.10, 0.18), rng.uniform(0.07, 0.13)]) * short
    distance = _ellipse_field(image.shape, _point_inside(image.shape, rng, 0.25), radii, rng.uniform(0, np.pi))
    depth = np.clip(1 - distance, 0, 1) ** 2  # a smooth bowl, deepest at the centre, flat at its rim
    gy, gx = np.gradient(depth)
    # light from above (image y points down): the upper wall falls into shade, so it reads as a dent, not a bump
    light = rng.uniform(1.15 * np.pi, 1.85 * np.pi)
    slope = gx * np.cos(light) + gy * np.sin(light)
    slope /= np.abs(slope).max() + 1e-9  # the wall facing the light is +1, the one turned away -1
    pixels = _pressed_in(image, gx, gy, min(radii) * 0.25)
    # the lit wall shows a highlight (towards white), the other wall a shadow, the bottom is a bit occluded
    highlight = np.clip(slope, 0, 1) ** 1.5 * rng.uniform(0.45, 0.65)
    shadow = np.clip(-slope, 0, 1) * rng.uniform(0.30, 0.45) + 0.08 * depth
    changed = pixels * (1 - shadow[..., None]) + (255 - pixels) * highlight[..., None]
    return _to_uint8(changed), _mask_of((distance < 1.0).astype(np.float32))


def _irregular_blob(shape: tuple[int, ...], centre: np.ndarray, radius: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Float 0/1 map of a lumpy blob: a few round droplets that ran together (metaballs)."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    field = np.zeros(shape[:2], np.float32)
    for index in range(int(rng.integers(6, 11))):
        spot = centre + (rng.normal(0, 0.6 * radius, 2) if index else 0)  # one on the centre: never empty
        size = radius * rng.uniform(0.2, 0.45)
        field += np.exp(-((xs - spot[0]) ** 2 + (ys - spot[1]) ** 2) / (2 * size ** 2))
    return (field > 0.5).astype(np.float32)


def _smooth_noise(shape: tuple[int, ...], cells: int, rng: np.random.Generator) -> np.ndarray:
    """Float 0..1 noise with about ``cells`` blobs across: a coarse random grid, upscaled smoothly."""
    coarse = rng.random((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC).clip(0, 1)


STAIN_TINTS = {  # multiplicative tint per channel: what the liquid absorbs
    "rust": (0.78, 0.48, 0.26),
    "oil": (0.42, 0.40, 0.36),
    "coolant": (0.50, 0.66, 0.38),
}


def stain(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An irregular tinted, semi-transparent blob (oil, rust, coolant) with a soft edge and mottled inside."""
    _check(image)
    short = _short_side(image)
    radius = rng.uniform(0.08, 0.17) * short
    blob = _irregular_blob(image.shape, _point_inside(image.shape, rng, 0.25), radius, rng)
    blurred = cv2.GaussianBlur(blob, (0, 0), max(1.0, radius * 0.15))
    soft = np.clip((blurred - 0.05) / 0.95, 0, 1)  # the soft edge fades out inside the mask, not beyond it
    mottled = soft * (0.65 + 0.35 * _smooth_noise(image.shape, 9, rng))
    opacity = mottled * rng.uniform(0.75, 0.95)
    tint = np.array(STAIN_TINTS[rng.choice(list(STAIN_TINTS))], np.float32)
    pixels = image.astype(np.float32)
    # mostly what the liquid absorbs, a little its own colour: a stain shows on dark surfaces too
    stained = 0.75 * pixels * tint + 0.25 * 200 * tint
    changed = pixels * (1 - opacity[..., None]) + stained * opacity[..., None]
    return _to_uint8(changed), np.where(soft > 0, 255, 0).astype(np.uint8)


def _chip_centre(shape: tuple[int, ...], radius: float, rng: np.random.Generator) -> np.ndarray:
    """Half the chips break off an edge (centre on a border), the rest out of the surface."""
    if rng.random() >= 0.5:
        return _point_inside(shape, rng, 0.2)
    height, width = shape[:2]
    side = int(rng.integers(4))
    along = rng.uniform(0.2, 0.8)
    inset = radius * rng.uniform(0.2, 0.5)  # keeps enough of the chip inside the picture
    return np.array([[along * width, inset], [along * width, height - inset],
                     [inset, along * height], [width - inset, along * height]][side])


def chip(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A missing piece: a jagged polygon of rough, darker fracture surface with a lit and a shaded rim."""
    _check(image)
    short = _short_side(image)
    radius = rng.uniform(0.09, 0.15) * short
    count = int(rng.integers(6, 10))
    # corners all round the centre, unevenly spaced, so the piece is jagged but never a sliver
    angles = (np.arange(count) + rng.uniform(-0.35, 0.35, count)) * (2 * np.pi / count) + rng.uniform(0, 2 * np.pi)
    outline = _chip_centre(image.shape, radius, rng) + (radius * rng.uniform(0.5, 1.0, count))[:, None] \
        * np.stack([np.cos(angles), np.sin(angles)], 1)
    hole = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(hole, [np.rint(outline).astype(np.int32)], 255)
    inside = hole.astype(np.float32) / 255
    pixels = image.astype(np.float32)
    fracture = _fracture_surface(pixels, inside, rng)
    # a broken edge has walls: the wall facing the light is bright, the opposite one casts a shadow
    light = rng.uniform(0, 2 * np.pi)
    offset = rng.uniform(1.5, 2.5) * np.array([np.cos(light), np.sin(light)])
    lit_wall = inside * (1 - _shifted(inside, offset))
    shaded_wall = inside * (1 - _shifted(inside, -2 * offset))
    changed = pixels * (1 - inside[..., None]) + fracture * inside[..., None]
    changed = changed * (1 - 0.5 * shaded_wall[..., None]) + lit_wall[..., None] * (255 - changed) * 0.45
    return _to_uint8(changed), _mask_of(inside)


def _shifted(values: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """The map moved by (dx, dy) pixels; borders repeat so nothing wraps around."""
    move = np.float32([[1, 0, offset[0]], [0, 1, offset[1]]])
    return cv2.warpAffine(values, move, (values.shape[1], values.shape[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def _fracture_surface(pixels: np.ndarray, inside: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The exposed body under the surface: flat, grainy and unlike the surface around it."""
    around = pixels[inside > 0].mean(axis=0) if inside.any() else pixels.reshape(-1, 3).mean(axis=0)
    keep = rng.uniform(0.4, 0.6)
    base = around * keep + (1 - keep) * 60  # a grey body: darker than a light coat, lighter than a black one
    grain = cv2.GaussianBlur(rng.normal(0, 1, pixels.shape[:2]).astype(np.float32), (0, 0), 0.8)
    return base + grain[..., None] * 14


KINDS: dict[str, Defect] = {"crack": crack, "scratch": scratch, "dent": dent, "stain": stain, "chip": chip}


def apply(image: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One defect of ``kind`` on the image: (defected image, 0/255 mask)."""
    if kind not in KINDS:
        raise ValueError(f"unknown defect kind {kind!r}; the kinds are {', '.join(KINDS)}")
    return KINDS[kind](image, rng)
