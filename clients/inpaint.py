"""Remove what a mask covers from an image with ``ensemble_lama``.

    python -m clients.inpaint IMAGE MASK -o OUT.png [--protocol http-binary] [--url 127.0.0.1:8000]
    python -m clients.inpaint IMAGE COLOUR_MASK --manifest output.manifest --class IC -o OUT.png
    python -m clients.inpaint IMAGE COLOUR_MASK --color '#2ca02c' -o OUT.png

A plain mask is sent as it is (any non-black pixel is a hole). With ``--class`` (and the
Ground Truth manifest holding the colour map) or ``--color``, the pixels of that colour
in a colour mask become the hole.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from builders import ensemble_lama
from clients.classify import encoded_batch
from clients.colormap import ColorMapError, binary_mask, class_color, parse_hex, read_color_map
from clients.protocols import (RequestError, Route, add_route_arguments, exit_status, failure_line, infer,
                              route_from_arguments)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def inpaint(route: Route, image: bytes, mask: bytes) -> np.ndarray:
    """The inpainted image, uint8 HxWx3, at the input's size."""
    inputs = {ensemble_lama.IMAGE.name: encoded_batch([image]), ensemble_lama.MASK.name: encoded_batch([mask])}
    return infer(route, ensemble_lama.NAME, inputs, [ensemble_lama.INPAINTED.name])[ensemble_lama.INPAINTED.name][0]


def mask_for(mask_path: Path, class_name: str | None, manifest: Path | None, color: str | None) -> bytes:
    """The mask to send: the file itself, or a binary PNG of one colour of a colour mask."""
    if class_name is None and color is None:
        return mask_path.read_bytes()
    rgb = parse_hex(color) if color else class_color(read_color_map(manifest), class_name)
    color_mask = np.asarray(Image.open(mask_path).convert("RGB"))
    return png_bytes(binary_mask(color_mask, rgb))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients.inpaint", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", type=Path)
    parser.add_argument("mask", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    add_route_arguments(parser)
    parser.add_argument("--class", dest="class_name", help="class of a Ground Truth colour mask to remove")
    parser.add_argument("--manifest", type=Path, help="Ground Truth output manifest holding the colour map")
    parser.add_argument("--color", help="colour (#rrggbb) of a colour mask to remove")
    args = parser.parse_args(argv)
    if args.class_name and not args.manifest:
        parser.error("--class needs --manifest (the colour map lives there)")
    missing = [str(p) for p in (args.image, args.mask, args.manifest) if p is not None and not p.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    route = route_from_arguments(parser, args)
    try:
        result = inpaint(route, args.image.read_bytes(), mask_for(args.mask, args.class_name, args.manifest,
                                                                  args.color))
    except (ColorMapError, RequestError) as error:
        print(failure_line(error), file=sys.stderr)
        return exit_status([error])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(result).save(args.output)
    print(f"inpainted {args.image} ({result.shape[1]}x{result.shape[0]}) over {args.protocol} -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
