"""Latency of one 512x512 LaMa inpaint on the local CPU server, against in-process PyTorch.

    python -m benchmarks.lama_latency [--requests 5] [--size 512]

Both sides run in this one process's run, one after the other: the served path (PNG
bytes -> ensemble_lama over HTTP binary -> uint8 image) and the in-process path (the
same pre/post-processing around the eager PyTorch generator, same weights). Reports
p50 / mean and the served / in-process ratio; results go to benchmarks/results/.
"""
from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from benchmarks.timing import ROOT, machine_facts, summarize, time_calls
from builders import ensemble_lama
from builders.declaration import BuildOptions
from builders.in_process import InProcessLama
from builders.repository import build_repository
from clients.inpaint import inpaint, png_bytes
from clients.protocols import Route
from local_server import TritonServer

GOAL_RATIO = 1.25


def sample(size: int) -> tuple[np.ndarray, np.ndarray]:
    """A size x size crop of the bundled photo, and a centred rectangular hole over a fifth of it."""
    image = np.asarray(Image.open(ROOT / "samples" / "coffee.jpg").convert("RGB").resize((size, size)))
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4: size // 4 + size * 2 // 5, size // 3: size // 3 + size // 2] = 255
    return np.ascontiguousarray(image), mask


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lama_latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repository", type=Path, default=ROOT / "build" / "cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if not (args.repository / ensemble_lama.NAME).is_dir():
        build_repository(args.repository, BuildOptions(target="cpu"))
    image, mask = sample(args.size)
    encoded_image, encoded_mask = png_bytes(image), png_bytes(mask)
    results = {**machine_facts(), "size": args.size}
    with TritonServer(args.repository) as server:
        route = Route("http-binary", server.http_url)
        results["served"] = summarize(time_calls(lambda: inpaint(route, encoded_image, encoded_mask),
                                                 args.requests, "served (ONNX Runtime in Triton)"))
    reference = InProcessLama()
    results["in_process"] = summarize(time_calls(lambda: reference.inpaint(image, mask), args.requests,
                                                 "in-process PyTorch"))
    results["ratio_p50"] = results["served"]["p50_ms"] / results["in_process"]["p50_ms"]
    report(results)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"lama-latency-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"results written to {path}")
    return 0 if results["ratio_p50"] <= GOAL_RATIO else 1


def report(results: dict) -> None:
    table = Table(title=f"one {results['size']}x{results['size']} inpaint, {results['cpus']} CPUs")
    for column in ("path", "mean ms", "p50 ms", "p90 ms"):
        table.add_column(column)
    for name in ("served", "in_process"):
        stats = results[name]
        table.add_row(name, *(f"{stats[k]:.0f}" for k in ("mean_ms", "p50_ms", "p90_ms")))
    Console().print(table)
    verdict = "within" if results["ratio_p50"] <= GOAL_RATIO else "OVER"
    print(f"served / in-process (p50): {results['ratio_p50']:.2f}x, {verdict} the {GOAL_RATIO}x goal")


if __name__ == "__main__":
    raise SystemExit(main())
