"""A deterministic renderer of printed-circuit-board photos, with their Ground Truth labels.

    python -m defect_data.pcb --out build/pcb-labels [--seed 0]

The sample product: its labels come from here the way a user's come from a labelling
job (an ``output.manifest`` with the photo, its colour mask and colour map), and
``python -m products define --name pcb --labels build/pcb-labels/output.manifest`` makes
it a product like any other. Nothing else in the project imports this module.

The AWS post starts from one labelled PCB photo (FICS-PCB), which cannot be downloaded
here, so the project ships this sample product: a board texture, copper traces, pads,
silkscreen, an IC, resistors and capacitors, with seedable lighting and placement
jitter. Every component is also painted, in its class colour, into a colour-map mask:
the SageMaker Ground Truth semantic-segmentation format (see ``groundtruth.py``).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

BOARD_SIZE = (320, 240)  # width, height
BACKGROUND = ("BACKGROUND", "#ffffff")


@dataclass(frozen=True)
class Component:
    name: str  # Ground Truth class name: no "_" (it separates classes in file names)
    kind: str  # "ic", "resistor" or "capacitor"
    box: tuple[int, int, int, int]  # nominal left, top, right, bottom before jitter
    color: str  # hex colour of the class in the mask


COMPONENTS = (
    Component("IC", "ic", (40, 60, 130, 140), "#2ca02c"),
    Component("resistor1", "resistor", (170, 50, 230, 72), "#1f77b4"),
    Component("resistor2", "resistor", (170, 110, 230, 132), "#ff7f0e"),
    Component("capacitor1", "capacitor", (250, 60, 290, 100), "#d62728"),
    Component("capacitor2", "capacitor", (250, 150, 290, 190), "#9467bd"),
)


@dataclass
class Board:
    image: np.ndarray  # uint8 HxWx3
    mask: np.ndarray  # uint8 HxWx3, class colours on white
    color_map: dict[str, str]  # class name -> hex colour, BACKGROUND first


def _hex(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))


def _texture(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Solder-mask green with woven-glass grain and a lighting gradient."""
    base = np.array([28, 92, 48], np.float32) + rng.normal(0, 3, 3)
    grain = rng.normal(0, 6, (height, width, 1)).astype(np.float32)
    weave = 4 * np.sin(np.arange(width)[None, :, None] / 3.0) * np.sin(np.arange(height)[:, None, None] / 3.0)
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width]
    light = 1 + rng.uniform(0.1, 0.3) * ((xs / width - 0.5) * np.cos(angle) + (ys / height - 0.5) * np.sin(angle))
    board = (base + grain + weave) * light[..., None] * rng.uniform(0.85, 1.15)
    return Image.fromarray(np.clip(board, 0, 255).astype(np.uint8))


def _shifted(box: tuple[int, int, int, int], dx: int, dy: int) -> tuple[int, int, int, int]:
    left, top, right, bottom = box
    return left + dx, top + dy, right + dx, bottom + dy


def _draw_ic(draw: ImageDraw.ImageDraw, box, rng) -> None:
    left, top, right, bottom = box
    for x in range(left + 6, right - 4, 9):  # pins above and below the body
        draw.rectangle((x, top - 6, x + 4, top), fill=(190, 190, 185))
        draw.rectangle((x, bottom, x + 4, bottom + 6), fill=(190, 190, 185))
    shade = int(rng.integers(20, 40))
    draw.rectangle(box, fill=(shade, shade, shade + 4))
    draw.ellipse((left + 5, top + 5, left + 11, top + 11), fill=(70, 70, 74))
    draw.text((left + 20, (top + bottom) // 2 - 5), "U1", fill=(150, 150, 150))


def _draw_resistor(draw: ImageDraw.ImageDraw, box, rng) -> None:
    left, top, right, bottom = box
    draw.rectangle((left, top + 4, left + 8, bottom - 4), fill=(200, 200, 195))  # end caps
    draw.rectangle((right - 8, top + 4, right, bottom - 4), fill=(200, 200, 195))
    draw.rounded_rectangle((left + 6, top, right - 6, bottom), radius=5, fill=(214, 188, 140))
    for i, band in enumerate(rng.choice([(120, 60, 20), (200, 30, 30), (240, 140, 0), (20, 20, 20)], 3)):
        x = left + 16 + 9 * i
        draw.rectangle((x, top, x + 4, bottom), fill=tuple(int(c) for c in band))


def _draw_capacitor(draw: ImageDraw.ImageDraw, box, rng) -> None:
    left, top, right, bottom = box
    tone = int(rng.integers(20, 60))
    draw.ellipse(box, fill=(tone, tone + 30, 120 + tone))
    draw.ellipse((left + 6, top + 6, right - 6, bottom - 6), fill=(170, 175, 185))
    draw.pieslice(box, 200, 250, fill=(220, 220, 225))


DRAW = {"ic": _draw_ic, "resistor": _draw_resistor, "capacitor": _draw_capacitor}
SILKSCREEN = {"ic": "U", "resistor": "R", "capacitor": "C"}  # reference designators


def _pcb_details(draw: ImageDraw.ImageDraw, rng, placed: dict[str, tuple]) -> None:
    """Traces between the components' pads, vias, and silkscreen outlines and labels."""
    copper = (176, 141, 87)
    anchors = [((b[0] + b[2]) // 2, (b[1] + b[3]) // 2) for b in placed.values()]
    for (x0, y0), (x1, y1) in zip(anchors, anchors[1:] + anchors[:1]):
        elbow = (x1, y0) if rng.random() < 0.5 else (x0, y1)
        draw.line([(x0, y0), elbow, (x1, y1)], fill=copper, width=3)
    for _ in range(12):
        x, y = (int(v) for v in rng.integers((8, 8), (BOARD_SIZE[0] - 8, BOARD_SIZE[1] - 8)))
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=copper)
        draw.ellipse((x - 1, y - 1, x + 1, y + 1), fill=(20, 40, 25))
    for component in COMPONENTS:
        box = placed[component.name]
        draw.rectangle((box[0] - 4, box[1] - 9, box[2] + 4, box[3] + 9), outline=(225, 225, 215))
        designator = SILKSCREEN[component.kind] + (component.name[-1] if component.name[-1].isdigit() else "1")
        draw.text((box[0], max(box[1] - 20, 0)), designator, fill=(225, 225, 215))


def render(seed: int = 0, jitter: int = 4, components: bool = True) -> Board:
    """One board photo and its colour-map mask; the same seed gives the same pixels.

    ``components=False`` leaves the parts off (traces, vias and silkscreen stay): the
    bare board that a LaMa is trained to fill holes with.
    """
    rng = np.random.default_rng(seed)
    width, height = BOARD_SIZE
    image = _texture(rng, width, height)
    mask = Image.new("RGB", (width, height), _hex(BACKGROUND[1]))
    placed = {c.name: _shifted(c.box, *(int(v) for v in rng.integers(-jitter, jitter + 1, 2))) for c in COMPONENTS}
    draw = ImageDraw.Draw(image)
    _pcb_details(draw, rng, placed)
    mask_draw = ImageDraw.Draw(mask)
    for component in COMPONENTS if components else ():
        box = placed[component.name]
        DRAW[component.kind](draw, box, rng)
        pad = 7 if component.kind == "ic" else 1  # the IC's pins belong to it
        mask_draw.rectangle((box[0] - 1, box[1] - pad, box[2] + 1, box[3] + pad), fill=_hex(component.color))
    image = image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.3, 0.7)))  # lens softness
    color_map = {BACKGROUND[0]: BACKGROUND[1], **{c.name: c.color for c in COMPONENTS}}
    return Board(np.asarray(image).copy(), np.asarray(mask).copy(), color_map)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m defect_data.pcb", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("build/pcb-labels"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from defect_data import groundtruth

    board = render(args.seed)
    manifest = groundtruth.write(args.out, board.image, board.mask, board.color_map)
    print(f"sample board {args.seed} and its Ground Truth labels written to {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
