"""Classify images with ``ensemble_dali_inception`` and print the top-k labels.

    python -m clients.classify samples/chelsea.jpg [more.jpg ...] --url 127.0.0.1:8000 --protocol http-binary

Several images go in one request: their encoded bytes are zero-padded to the longest
(JPEG and PNG decoders stop at their end marker). Labels come from the server
(Triton's classification extension reading the model's label file).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from builders import ensemble_dali_inception as ensemble
from clients.protocols import (RequestError, Route, add_route_arguments, exit_status, failure_line, infer,
                              route_from_arguments)


def encoded_batch(images: list[bytes]) -> np.ndarray:
    """[N, longest] UINT8: one encoded image per row, zero-padded."""
    if not images:
        raise ValueError("no images given")
    batch = np.zeros((len(images), max(len(image) for image in images)), dtype=np.uint8)
    for row, image in zip(batch, images):
        row[:len(image)] = np.frombuffer(image, dtype=np.uint8)
    return batch


def classify_scores(route: Route, images: list[bytes]) -> np.ndarray:
    """[N, 1001] FP32 softmax scores, background first."""
    outputs = infer(route, ensemble.NAME, {ensemble.INPUT.name: encoded_batch(images)}, [ensemble.OUTPUT.name])
    return outputs[ensemble.OUTPUT.name]


def classify_top_k(route: Route, images: list[bytes], top_k: int) -> list[list[tuple[float, int, str]]]:
    """Per image, the top-k (score, class index, label) as ranked and labelled by the server."""
    outputs = infer(route, ensemble.NAME, {ensemble.INPUT.name: encoded_batch(images)},
                    [ensemble.OUTPUT.name], class_count=top_k)
    return [[_parse_class(entry) for entry in row] for row in outputs[ensemble.OUTPUT.name]]


def _parse_class(entry: bytes | str) -> tuple[float, int, str]:
    text = entry.decode() if isinstance(entry, bytes) else entry  # JSON responses carry str
    score, index, label = text.split(":", 2)
    return float(score), int(index), label


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients.classify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", type=Path)
    add_route_arguments(parser)
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args(argv)
    missing = [str(path) for path in args.images if not path.is_file()]
    if missing:
        parser.error(f"no such image file: {', '.join(missing)}")
    route = route_from_arguments(parser, args)
    try:
        ranked = classify_top_k(route, [path.read_bytes() for path in args.images], args.top_k)
    except (RequestError, OSError) as error:
        print(failure_line(error), file=sys.stderr)
        return exit_status([error])
    for path, classes in zip(args.images, ranked):
        print(f"{path} ({args.protocol} {route.endpoint_name or route.url}):")
        for score, index, label in classes:
            print(f"  {score:.4f}  {index:4d}  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
