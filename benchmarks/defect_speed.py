"""A product's inspection pipeline served vs in-process, masks and Lookout's answer included.

    python -m benchmarks.defect_speed --repository build/cpu --product pcb [--out DIR] [--quick]

One process, one machine, back to back at each concurrency: the served pipeline
(http-binary, every output asked for), ``InProcessInspection`` (the same DALI model, ONNX
files and decision code), then perf_analyzer on the same server as a cross-check of the
served figures. Ratios: throughput at saturation (the best of the sweep) and p50 at
concurrency 1; the targets are >= 0.8x and <= 1.5x (issue #20). Writes defect-speed.json
and defect-speed.md.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks import perf_analyzer, targets
from benchmarks.load import StepFailed, StepSettings, run_concurrency
from benchmarks.timing import ROOT, machine_facts
from builders import defect_inspection
from clients.protocols import server_route
from local_server import TritonServer
from products.store import repository_product

THROUGHPUT_TARGET = 0.8
P50_TARGET = 1.5


def step(send, concurrency: int, settings: StepSettings) -> dict:
    result = run_concurrency(send, concurrency, settings)
    if result.failure:
        raise StepFailed(f"concurrency {concurrency}: {result.failure}; first error: {result.first_error}")
    return result.as_dict()


def ratios(served: list[dict], in_process: list[dict]) -> dict:
    best = {name: max(step["throughput"] for step in steps) for name, steps in (("served", served),
                                                                                ("in_process", in_process))}
    throughput, p50 = best["served"] / best["in_process"], served[0]["p50_ms"] / in_process[0]["p50_ms"]
    return {"throughput_served": best["served"], "throughput_in_process": best["in_process"],
            "throughput_ratio": throughput, "throughput_target_met": throughput >= THROUGHPUT_TARGET,
            "p50_ms_served_c1": served[0]["p50_ms"], "p50_ms_in_process_c1": in_process[0]["p50_ms"],
            "p50_ratio": p50, "p50_target_met": p50 <= P50_TARGET}


def perf_analyzer_step(server: TritonServer, product, image: bytes, concurrency: int, workdir: Path,
                       settings: StepSettings, stability_percent: int) -> dict:
    """perf_analyzer at one concurrency; on a busy machine it may find no stable windows: that is recorded."""
    try:
        return perf_analyzer.run(server.http_url, defect_inspection.name(product), defect_inspection.INPUT.name,
                                 image, concurrency, workdir, measurement_ms=int(settings.window_s * 1000),
                                 stability_percent=stability_percent)
    except perf_analyzer.PerfAnalyzerError as error:
        return {"concurrency": concurrency, "error": str(error)}


def measure(repository: Path, product, image: bytes, concurrencies: list[int], settings: StepSettings,
            log_path: Path, cross_check: bool = True, stability_percent: int = 10) -> dict:
    """Served and in-process sweeps of one product's pipeline, and perf_analyzer on the served one."""
    served, in_process, checked = [], [], []
    with TritonServer(repository, log_path=log_path) as server, tempfile.TemporaryDirectory() as scratch:
        send_served = targets.inspection_request(server_route(server, "http-binary"), product, image)
        send_in_process = targets.in_process_inspection(repository, product, image)
        for concurrency in concurrencies:  # back to back at each concurrency: both see the same machine state
            served.append(step(send_served, concurrency, settings))
            in_process.append(step(send_in_process, concurrency, settings))
            if cross_check:
                checked.append(perf_analyzer_step(server, product, image, concurrency, Path(scratch), settings,
                                                  stability_percent))
    return {"product": product.name, "image_bytes": len(image), "served": served, "in_process": in_process,
            "perf_analyzer": checked, "perf_analyzer_stability_percent": stability_percent,
            **ratios(served, in_process)}


def markdown(results: dict) -> list[str]:
    lines = [f"## Defect pipeline {results['product']}_inspection: served vs in-process", "",
             "| concurrency | served req/s | served p50 ms | in-process req/s | in-process p50 ms |"
             + (" perf_analyzer req/s | perf_analyzer p50 ms |" if results["perf_analyzer"] else ""),
             "| --- | --- | --- | --- | --- |" + (" --- | --- |" if results["perf_analyzer"] else "")]
    checked = results["perf_analyzer"] or [None] * len(results["served"])
    for served, in_process, theirs in zip(results["served"], results["in_process"], checked):
        row = (f"| {served['load']:g} | {served['throughput']:.1f} | {served['p50_ms']:.1f} | "
               f"{in_process['throughput']:.1f} | {in_process['p50_ms']:.1f} |")
        lines.append(row + (cross_checked(theirs) if theirs else ""))
    lines += ["", f"Throughput at saturation: served {results['throughput_served']:.1f} req/s, in-process "
              f"{results['throughput_in_process']:.1f} req/s: {results['throughput_ratio']:.2f}x (target >= "
              f"{THROUGHPUT_TARGET}x: {'met' if results['throughput_target_met'] else 'NOT met'}).",
              f"p50 at concurrency 1: served {results['p50_ms_served_c1']:.1f} ms, in-process "
              f"{results['p50_ms_in_process_c1']:.1f} ms: {results['p50_ratio']:.2f}x (target <= {P50_TARGET}x: "
              f"{'met' if results['p50_target_met'] else 'NOT met'}).", ""]
    return lines


def cross_checked(theirs: dict) -> str:
    if "error" in theirs:
        return " no stable measurement | - |"
    return f" {theirs['throughput']:.1f} | {theirs['p50_ms']:.1f} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.defect_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=ROOT / "build" / "cpu")
    parser.add_argument("--product", default="pcb")
    parser.add_argument("--image", type=Path, required=True, help="a photo of the product")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "defect-speed")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--window-s", type=float, default=3.0)
    parser.add_argument("--max-windows", type=int, default=8)
    parser.add_argument("--skip-perf-analyzer", action="store_true")
    parser.add_argument("--perf-analyzer-stability", type=int, default=10, metavar="PERCENT",
                        help="perf_analyzer's --stability-percentage (a shared machine may need more)")
    args = parser.parse_args(argv)
    product = repository_product(args.repository, args.product)
    args.out.mkdir(parents=True, exist_ok=True)
    settings = StepSettings(args.warmup_s, args.window_s, args.max_windows)
    results = {**machine_facts(), "image": args.image.name, "settings": vars(settings),
               **measure(args.repository, product, args.image.read_bytes(), args.concurrency, settings,
                         args.out / "tritonserver.log", not args.skip_perf_analyzer, args.perf_analyzer_stability)}
    (args.out / "defect-speed.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [f"# Defect pipeline speed, {results['date'][:10]}", "",
             f"{results['machine']}, {results['cpus']} CPUs; image {args.image.name}.", "", *markdown(results)]
    (args.out / "defect-speed.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if results["throughput_target_met"] and results["p50_target_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
