"""The benchmark suite: sweeps, server-side breakdown, side-by-side comparisons, cost, cross-check.

    python -m benchmarks [--quick] [--out DIR] [--endpoint-name NAME --region R] [--product pcb --product-image P]

Everything runs in one process, one comparison after the other on the same machine,
against real tritonservers started here (the cpu repository; a copy of it with dynamic
batching switched off for that comparison). Writes report.md, results.json and PNG
plots to the output folder. Exits non-zero if a server died or stalled during a step;
what was measured until then is still reported.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from benchmarks import defect_speed, overload, perf_analyzer, server_stats, targets
from benchmarks.timing import ROOT, machine_facts
from benchmarks.load import StepFailed, StepResult, StepSettings, run_concurrency, run_rate
from benchmarks.report import write_report
from builders import dali, ensemble_dali_inception
from builders.config import parse, render
from builders.declaration import BuildOptions
from builders.repository import build_repository
from clients.protocols import Route, server_route
from local_server import TritonServer
from products.store import repository_product

CONSOLE = Console()
SWEEP_PROTOCOLS = ("http-binary", "http-json", "grpc", "sagemaker-binary", "sagemaker-json")
BATCHED_MODELS = (dali.NAME, "inception_onnx")


@dataclass
class Suite:
    settings: StepSettings
    concurrencies: list[int]
    rates: list[float]
    progress: Progress
    results: dict = field(default_factory=lambda: {"sweeps": {}, "comparisons": {}})

    def sweep(self, name: str, send, mode: str = "concurrency") -> list[dict]:
        loads = self.concurrencies if mode == "concurrency" else self.rates
        task = self.progress.add_task(f"{name} ({mode})", total=len(loads))
        steps = self.results["sweeps"].setdefault(f"{name}/{mode}", [])
        for load in loads:
            self.progress.update(task, description=f"{name}: {mode} {load}")
            step: StepResult = (run_concurrency(send, int(load), self.settings) if mode == "concurrency"
                                else run_rate(send, float(load), self.settings))
            steps.append(step.as_dict())
            self.progress.advance(task)
            if step.failure:
                raise StepFailed(f"{name} at {mode} {load}: {step.failure}; first error: {step.first_error}")
        return steps


def best_throughput(steps: list[dict]) -> float:
    return max((step["throughput"] for step in steps), default=0.0)


def at_load(steps: list[dict], load: float) -> dict:
    return next(step for step in steps if step["load"] == load)


def without_dynamic_batching(repository: Path, target: Path) -> Path:
    """A copy of the repository whose composing models execute every request on its own."""
    shutil.copytree(repository, target, symlinks=True)
    for name in BATCHED_MODELS:
        path = target / name / "config.pbtxt"
        config = parse(path.read_text())
        config.ClearField("dynamic_batching")
        path.write_text(render(config))
    return target


def compare_payloads(suite: Suite, image: bytes) -> None:
    sizes = targets.request_bytes(image)
    binary, json_ = (at_load(suite.results["sweeps"][f"http-{kind}/concurrency"], 1) for kind in ("binary", "json"))
    suite.results["comparisons"]["binary_vs_json"] = {
        **sizes, "bytes_ratio": sizes["binary+json"] / sizes["json"],
        "p50_ms_binary": binary["p50_ms"], "p50_ms_json": json_["p50_ms"],
        "p50_ratio": binary["p50_ms"] / json_["p50_ms"]}


def run_sweeps(suite: Suite, server: TritonServer, image: bytes, repository: Path) -> None:
    before = server_stats.snapshot(server.http_url)
    suite.sweep("http-binary", targets.ensemble_request(server_route(server, "http-binary"), image))
    suite.results["breakdown"] = server_stats.breakdown(before, server_stats.snapshot(server.http_url),
                                                        [ensemble_dali_inception.NAME, *BATCHED_MODELS])
    for protocol in SWEEP_PROTOCOLS[1:]:
        suite.sweep(protocol, targets.ensemble_request(server_route(server, protocol), image))
    suite.sweep("http-binary", targets.ensemble_request(server_route(server, "http-binary"), image), mode="rate")
    compare_payloads(suite, image)

    route = server_route(server, "http-binary")
    client_side = suite.sweep("client-side DALI + classifier", targets.client_preprocessing_request(route, image, repository))
    served = suite.results["sweeps"]["http-binary/concurrency"]
    in_process = suite.sweep("in-process DALI + ONNX Runtime", targets.in_process_ensemble(repository, image))
    classifier = suite.sweep("served classifier alone", targets.classifier_request(route, repository, image))
    in_process_ort = suite.sweep("in-process ONNX Runtime", targets.in_process_classifier(repository, image))
    comparisons = suite.results["comparisons"]
    comparisons["server_vs_client_preprocessing"] = _ratio(served, client_side, "server-side DALI", "client-side DALI")
    comparisons["ensemble_vs_in_process"] = _ratio(served, in_process, "Triton ensemble", "in-process DALI + ORT")
    comparisons["served_vs_in_process_onnx"] = _ratio(classifier, in_process_ort, "served ONNX model",
                                                      "in-process ONNX Runtime")


def _ratio(first: list[dict], second: list[dict], first_name: str, second_name: str) -> dict:
    return {"first": first_name, "second": second_name, "throughput_first": best_throughput(first),
            "throughput_second": best_throughput(second),
            "throughput_ratio": best_throughput(first) / best_throughput(second) if best_throughput(second) else 0.0,
            "p50_ms_first_lowest_load": first[0]["p50_ms"], "p50_ms_second_lowest_load": second[0]["p50_ms"]}


def compare_batching(suite: Suite, repository: Path, image: bytes, workdir: Path) -> None:
    unbatched_repository = without_dynamic_batching(repository, workdir / "no-batching")
    with TritonServer(unbatched_repository) as unbatched:
        before = server_stats.snapshot(unbatched.http_url)
        off = suite.sweep("http-binary, dynamic batching off",
                          targets.ensemble_request(server_route(unbatched, "http-binary"), image))
        breakdown = server_stats.breakdown(before, server_stats.snapshot(unbatched.http_url), list(BATCHED_MODELS))
    on = suite.results["sweeps"]["http-binary/concurrency"]
    suite.results["comparisons"]["dynamic_batching"] = {
        **_ratio(on, off, "batching on", "batching off"),
        "configuration": "max_queue_delay_microseconds 500, max_batch_size 64, one CPU instance per model",
        "breakdown_off": breakdown}


def cross_check(suite: Suite, server: TritonServer, image: bytes, workdir: Path) -> None:
    """Our step and perf_analyzer's back to back at each concurrency, so both see the same machine state."""
    send = targets.ensemble_request(server_route(server, "http-binary"), image)
    rows = []
    for concurrency in suite.concurrencies:
        ours = run_concurrency(send, concurrency, suite.settings)
        if ours.failure:
            raise StepFailed(f"cross-check at concurrency {concurrency}: {ours.failure}")
        theirs = perf_analyzer.run(server.http_url, ensemble_dali_inception.NAME, ensemble_dali_inception.INPUT.name,
                                   image, concurrency, workdir / "perf_analyzer",
                                   measurement_ms=int(suite.settings.window_s * 1000))
        rows.append({"concurrency": concurrency, "throughput_ours": ours.throughput,
                     "throughput_perf_analyzer": theirs["throughput"],
                     "throughput_ratio": ours.throughput / theirs["throughput"],
                     "p50_ms_ours": ours.p50_ms, "p50_ms_perf_analyzer": theirs["p50_ms"],
                     "p50_ratio": ours.p50_ms / theirs["p50_ms"]})
    suite.results["perf_analyzer"] = rows


def cost_per_million(suite: Suite, prices_path: Path) -> None:
    prices = json.loads(prices_path.read_text())
    throughput = best_throughput(suite.results["sweeps"]["http-binary/concurrency"])
    suite.results["cost"] = {
        "prices": {key: prices[key] for key in ("currency", "unit", "region", "source", "as_of")},
        "throughput": throughput,
        "per_million": {instance: hourly / (throughput * 3600) * 1e6 if throughput else None
                        for instance, hourly in prices["instances"].items()}}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=ROOT / "build" / "cpu")
    parser.add_argument("--image", type=Path, default=ROOT / "samples" / "chelsea.jpg")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/<timestamp>")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--rates", type=float, nargs="+", default=[4, 8, 12])
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--window-s", type=float, default=3.0)
    parser.add_argument("--max-windows", type=int, default=8)
    parser.add_argument("--request-timeout-s", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="short windows and fewer steps (a smoke run)")
    parser.add_argument("--prices", type=Path, default=ROOT / "benchmarks" / "prices.json")
    parser.add_argument("--skip-perf-analyzer", action="store_true")
    parser.add_argument("--endpoint-name", help="also measure a deployed SageMaker endpoint through boto3")
    parser.add_argument("--region")
    parser.add_argument("--endpoint-url", default="", help="a local /endpoints/<name>/invocations route")
    parser.add_argument("--overload-duration-s", type=float, default=60.0,
                        help="overload at 10x capacity for this long, then the soak (0: skip; benchmarks/overload.py)")
    parser.add_argument("--soak-requests", type=int, default=3000)
    parser.add_argument("--product", help="also measure this product's pipeline served vs in-process "
                                          "(benchmarks/defect_speed.py); the repository must serve it")
    parser.add_argument("--product-image", type=Path, help="the photo of the product to send (with --product)")
    args = parser.parse_args(argv)
    if args.product and not args.product_image:
        parser.error("--product needs --product-image, a photo of the product")
    if args.quick:
        args.concurrency, args.rates = [1, 2], [4]
        args.warmup_s, args.window_s, args.max_windows = 1.0, 1.5, 4
        args.overload_duration_s, args.soak_requests = min(args.overload_duration_s, 5.0), 300
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or ROOT / "benchmarks" / "results" / f"{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    if not (args.repository / ensemble_dali_inception.NAME).is_dir():
        build_repository(args.repository, BuildOptions(target="cpu"))
    image = args.image.read_bytes()
    settings = StepSettings(args.warmup_s, args.window_s, args.max_windows, args.request_timeout_s)
    failure = ""
    with Progress(console=CONSOLE) as progress, tempfile.TemporaryDirectory() as scratch:
        suite = Suite(settings, args.concurrency, args.rates, progress)
        suite.results.update(machine_facts(), image=args.image.name, settings=vars(settings),
                             weights=parse((args.repository / "inception_onnx" / "config.pbtxt").read_text())
                             .parameters["weights"].string_value)
        try:
            with TritonServer(args.repository, sagemaker_default_model=ensemble_dali_inception.NAME,
                              log_path=out / "tritonserver.log") as server:
                run_sweeps(suite, server, image, args.repository)
                if not args.skip_perf_analyzer:
                    cross_check(suite, server, image, Path(scratch))
            compare_batching(suite, args.repository, image, Path(scratch))
            if args.product:
                suite.results["defect_pipeline"] = defect_speed.measure(
                    args.repository, repository_product(args.repository, args.product), args.product_image.read_bytes(),
                    suite.concurrencies, settings, out / "tritonserver-defect.log", not args.skip_perf_analyzer)
            if args.overload_duration_s > 0:
                run = {"factor": overload.DEFAULT_FACTOR, "duration_s": args.overload_duration_s,
                       "workers": overload.DEFAULT_WORKERS, "soak_requests": args.soak_requests, "client_cpus": set()}
                suite.results["overload"] = overload.measure(
                    args.repository, image, overload.configured_budget_s(args.repository), run, logs=out)
            if args.endpoint_name:
                endpoint = Route("sagemaker-endpoint", args.endpoint_url, endpoint_name=args.endpoint_name,
                                 region=args.region)
                suite.sweep(f"endpoint {args.endpoint_name}", targets.ensemble_request(endpoint, image))
        except (StepFailed, perf_analyzer.PerfAnalyzerError, overload.NoQueuePolicy) as error:
            failure = str(error)
        if "http-binary/concurrency" in suite.results["sweeps"]:
            cost_per_million(suite, args.prices)
    suite.results["failure"] = failure
    write_report(suite.results, out)
    if "defect_pipeline" in suite.results:  # its own section, after the suite's
        with (out / "report.md").open("a") as report:
            report.write("\n" + "\n".join(defect_speed.markdown(suite.results["defect_pipeline"])) + "\n")
    if "overload" in suite.results:  # its own section, after the suite's
        with (out / "report.md").open("a") as report:
            report.write("\n" + "\n".join(overload.markdown(suite.results["overload"])) + "\n")
    CONSOLE.print(f"report: {out / 'report.md'}\nresults: {out / 'results.json'}\nplots: {out}/*.png")
    if failure:
        CONSOLE.print(f"[red]benchmark stopped early: {failure}[/red]")
        return 1
    return 0
