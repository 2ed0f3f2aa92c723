"""End to end on this machine: build the cpu repository, serve it, classify a sample, stop.

    python -m clients.demo [--repository build/cpu] [--image samples/chelsea.jpg]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from builders.__main__ import main as build
from builders import ensemble_dali_inception as ensemble
from clients.classify import classify_top_k
from clients.inpaint import inpaint, png_bytes
from clients.protocols import SERVER_PROTOCOLS, server_route
from local_server import ServerError, TritonServer

ROOT = Path(__file__).resolve().parent.parent


def remove_ic(server: TritonServer, out: Path) -> Path:
    """The project's sample board and its Ground Truth labels, then LaMa over the IC's pixels."""
    from PIL import Image

    from defect_data import groundtruth
    from defect_data.pcb import render

    board = render(seed=0)
    manifest = groundtruth.write(out, board.image, board.mask, board.color_map)
    hole = groundtruth.class_masks(groundtruth.read(manifest))["IC"]
    inpainted = inpaint(server_route(server, "http-binary"), png_bytes(board.image), png_bytes(hole))
    Image.fromarray(inpainted).save(out / "board_without_IC.png")
    return out / "board_without_IC.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=ROOT / "build" / "cpu")
    parser.add_argument("--image", type=Path, default=ROOT / "samples" / "chelsea.jpg")
    parser.add_argument("--top-k", type=int, default=3)
    args = parser.parse_args(argv)

    print(f"[1/4] building the cpu repository into {args.repository}", flush=True)
    if build(["--target", "cpu", "--out", str(args.repository)]) != 0:
        return 1
    log = args.repository.parent / "tritonserver.log"
    print(f"[2/4] starting tritonserver on {args.repository} (log: {log})", flush=True)
    try:
        server = TritonServer(args.repository, sagemaker_default_model=ensemble.NAME, log_path=log).start()
    except ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        print(f"[3/4] classifying {args.image} over every route", flush=True)
        for protocol in SERVER_PROTOCOLS:
            ranked = classify_top_k(server_route(server, protocol), [args.image.read_bytes()], args.top_k)[0]
            print(f"  {protocol:17s} " + "; ".join(f"{label} ({score:.5f})" for score, _, label in ranked))
        removed = remove_ic(server, args.repository.parent / "demo")
        print(f"[4/4] removed the IC from the sample board with ensemble_lama: {removed}", flush=True)
    finally:
        server.stop()
        print(f"tritonserver stopped; log kept in {log}")
    print("note: without --inception-weights / --lama-weights the models have random weights: the labels are "
          "meaningless and LaMa fills the hole with noise; the routes agreeing is what this run shows.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
