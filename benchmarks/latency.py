"""Latency of one classification request on the local CPU server, per route.

    python -m benchmarks.latency [--requests 50] [--repository build/cpu]

Sequential requests (concurrency 1) of one JPEG after a warm-up; reports mean and
percentiles per route, plus the in-process DALI + ONNX Runtime time for the same image
measured in the same run. Results go to benchmarks/results/latency-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from builders import ensemble_dali_inception as ensemble
from builders.declaration import BuildOptions
from builders.in_process import InProcessEnsemble
from builders.repository import build_repository
from clients.classify import classify_scores
from clients.protocols import SERVER_PROTOCOLS, server_route
from local_server import TritonServer

ROOT = Path(__file__).resolve().parent.parent


def summarize(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"mean_ms": float(ms.mean()), "p50_ms": float(np.percentile(ms, 50)),
            "p90_ms": float(np.percentile(ms, 90)), "p99_ms": float(np.percentile(ms, 99)), "n": len(ms)}


def machine_facts() -> dict:
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count()}


def time_calls(call, count: int, label: str, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        call()
    durations = []
    for _ in track(range(count), description=label, transient=True):
        start = time.perf_counter()
        call()
        durations.append(time.perf_counter() - start)
    return durations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--repository", type=Path, default=ROOT / "build" / "cpu")
    parser.add_argument("--image", type=Path, default=ROOT / "samples" / "chelsea.jpg")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if not (args.repository / ensemble.NAME).is_dir():
        build_repository(args.repository, BuildOptions(target="cpu"))
    image = args.image.read_bytes()
    results = {**machine_facts(), "image": args.image.name, "image_bytes": len(image), "routes": {}}
    with TritonServer(args.repository, sagemaker_default_model=ensemble.NAME) as server:
        for protocol in SERVER_PROTOCOLS:
            route = server_route(server, protocol)
            durations = time_calls(lambda: classify_scores(route, [image]), args.requests, protocol)
            results["routes"][protocol] = summarize(durations)
    reference = InProcessEnsemble(args.repository)
    results["in_process"] = summarize(time_calls(lambda: reference.classify([image]), args.requests, "in-process"))
    print_table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"latency-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"results written to {path}")
    return 0


def print_table(results: dict) -> None:
    table = Table(title=f"one {results['image']} ({results['image_bytes']} bytes), concurrency 1, "
                        f"{results['cpus']} CPUs")
    for column in ("route", "mean ms", "p50 ms", "p90 ms", "p99 ms", "vs in-process (p50)"):
        table.add_column(column)
    base = results["in_process"]["p50_ms"]
    rows = {**results["routes"], "in-process DALI + ORT": results["in_process"]}
    for name, stats in rows.items():
        table.add_row(name, *(f"{stats[k]:.1f}" for k in ("mean_ms", "p50_ms", "p90_ms", "p99_ms")),
                      f"{stats['p50_ms'] / base:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    raise SystemExit(main())
