"""What a multi-model endpoint costs: cold, warm and evicting invocations, next to a single-model endpoint.

    python -m benchmarks.multi_model [--repository build/cpu] [--warm 5]

Both endpoints run here, one after the other, as SageMaker's Triton container runs them
(the cpu repository standing in for the gpu one) and are reached the same way, boto3
``invoke_endpoint`` through the local runtime route:

- multi-model (``SAGEMAKER_MULTI_MODEL=true``, a budget of two loaded pipelines): per
  pipeline, the first request (cold: extract the archive, load it with its steps and their
  warm-up, infer), the following ones (warm), and a request to a third pipeline that has to
  evict the least recently used one first;
- single-model: the same request to an endpoint serving only that pipeline (warm).

Results: a Markdown table on the console and JSON in benchmarks/results/.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from benchmarks.timing import ROOT, SAMPLE_PRODUCT, machine_facts, summarize
from builders import defect_inspection, ensemble_dali_inception, ensemble_lama
from builders.declaration import BuildOptions
from builders.repository import build_repository
from clients import inspect as inspect_client
from clients.classify import classify_scores
from clients.inpaint import inpaint, png_bytes
from clients.protocols import Route
from defect_data.pcb import render as render_board
from local_server import TritonServer
from local_server.endpoint_route import EndpointRoute
from local_server.multi_model import MultiModelEndpoint
from products import load
from sagemaker_deploy.multi_model import package_pipelines, target_name

PRODUCT = load(SAMPLE_PRODUCT)
PIPELINES = (ensemble_dali_inception.NAME, defect_inspection.name(PRODUCT), ensemble_lama.NAME)


def requests_by_pipeline() -> dict[str, callable]:
    """One representative request per pipeline: ``call(route)``."""
    photo = (ROOT / "samples" / "chelsea.jpg").read_bytes()
    buffer = io.BytesIO()
    Image.fromarray(render_board(seed=5).image).save(buffer, format="JPEG", quality=92)
    board = buffer.getvalue()
    image = np.asarray(Image.fromarray(render_board(seed=6).image).convert("RGB").resize((128, 96)))
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[30:60, 40:90] = 255
    encoded_image, encoded_mask = png_bytes(np.ascontiguousarray(image)), png_bytes(mask)
    return {ensemble_dali_inception.NAME: lambda route: classify_scores(route, [photo]),
            defect_inspection.name(PRODUCT): lambda route: inspect_client.inspect(route, PRODUCT.name, board),
            ensemble_lama.NAME: lambda route: inpaint(route, encoded_image, encoded_mask)}


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def measure_multi_model(archives: Path, workdir: Path, warm: int) -> dict:
    calls = requests_by_pipeline()
    results = {}
    with MultiModelEndpoint(archives, workdir, max_loaded=2) as endpoint:
        def on(pipeline):
            return Route("sagemaker-endpoint", endpoint.url, endpoint_name=endpoint.name, region="us-east-1",
                         target_model=target_name(pipeline))

        for pipeline in PIPELINES:
            endpoint.host.unload_all()
            cold = timed(lambda: calls[pipeline](on(pipeline)))
            warm_ms = [timed(lambda: calls[pipeline](on(pipeline))) for _ in range(warm)]
            results[pipeline] = {"cold_ms": cold, "warm": summarize(np.array(warm_ms) / 1000)}
        endpoint.host.unload_all()
        first, second, third = PIPELINES
        calls[first](on(first))
        calls[second](on(second))
        results["eviction"] = {"pipeline": third, "evicted": first,
                               "ms": timed(lambda: calls[third](on(third))),
                               "events": endpoint.host.events[-2:]}
    return results


def measure_single_model(repository: Path, workdir: Path, warm: int) -> dict:
    calls = requests_by_pipeline()
    results = {}
    for pipeline in PIPELINES:
        log = workdir / f"{pipeline}.log"
        with TritonServer(repository, sagemaker_mode=True, sagemaker_default_model=pipeline, log_path=log) as server:
            with EndpointRoute({"single": server.sagemaker_url}) as route:
                on = Route("sagemaker-endpoint", route.url, endpoint_name="single", region="us-east-1")
                calls[pipeline](on)  # its first request, like the multi-model warm ones, is not counted
                results[pipeline] = summarize(np.array([timed(lambda: calls[pipeline](on))
                                                        for _ in range(warm)]) / 1000)
    return results


def report(results: dict) -> None:
    table = Table(title=f"multi-model vs single-model endpoint, {results['cpus']} CPUs, {results['date']}")
    for column in ("pipeline", "cold ms (first request)", "warm p50 ms", "single-model p50 ms", "warm / single"):
        table.add_column(column)
    for pipeline in PIPELINES:
        multi, single = results["multi_model"][pipeline], results["single_model"][pipeline]
        table.add_row(pipeline, f"{multi['cold_ms']:.0f}", f"{multi['warm']['p50_ms']:.0f}",
                      f"{single['p50_ms']:.0f}", f"{multi['warm']['p50_ms'] / single['p50_ms']:.2f}x")
    Console().print(table)
    eviction = results["multi_model"]["eviction"]
    print(f"a request to {eviction['pipeline']} with two pipelines loaded (budget 2) unloaded "
          f"{eviction['evicted']} first: {eviction['ms']:.0f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.multi_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=ROOT / "build" / "cpu")
    parser.add_argument("--warm", type=int, default=5, help="warm requests per pipeline")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if not (args.repository / defect_inspection.name(PRODUCT)).is_dir():
        build_repository(args.repository, BuildOptions(target="cpu", products=(PRODUCT,)))
    for name, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}.items():
        os.environ.setdefault(name, value)  # boto3 signs every request; the local route ignores the signature
    results = machine_facts()
    with tempfile.TemporaryDirectory() as scratch:
        archives = Path(scratch) / "archives"
        package_pipelines(args.repository, archives, list(PIPELINES))
        results["multi_model"] = measure_multi_model(archives, Path(scratch) / "container", args.warm)
        results["single_model"] = measure_single_model(args.repository, Path(scratch), args.warm)
    report(results)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"multi-model-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
