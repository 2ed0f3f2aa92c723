"""GPU smoke test for users: the ``gpu`` repository in NVIDIA's tritonserver image, end to end.

    make gpu-smoke                                   # needs Docker, an NVIDIA GPU and its container toolkit
    python -m benchmarks.gpu_smoke --dry-run         # print the commands, run nothing

Builds the ``gpu`` repository, starts ``nvcr.io/nvidia/tritonserver:<version>-py3`` on it
(the version ``deploy`` uses by default, ``sagemaker_deploy.deploy.DEFAULT_TRITON_VERSION``,
so what passes here is what the endpoint loads), waits until every model is ready, then
runs the clients over every protocol of the server (HTTP JSON and binary, gRPC, the
SageMaker frontend), one perf_analyzer concurrency sweep (from the matching ``-py3-sdk``
image) and the LaMa and defect-inspection pipelines. Prints a pass/fail table; the
server's log tail when a step fails. The container is removed in every case.
"""
from __future__ import annotations

import argparse
import io
import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTAINER = "visual-inspection-gpu-smoke"
PORTS = {"http": 8000, "grpc": 8001, "sagemaker": 8080}
READY_TIMEOUT_S = 900  # TensorRT engines and big-lama's TorchScript load take minutes on a first start
SAMPLE_PHOTO = ROOT / "samples" / "chelsea.jpg"
SAMPLE_PRODUCT = ROOT / "model_repository" / "pcb_inspection" / "product.json"
INPAINT_PHOTO = ROOT / "samples" / "coffee.jpg"


@dataclass(frozen=True)
class Step:
    name: str
    command: list[str]
    required: bool = False  # a failed required step skips the rest (nothing after it can pass)


def triton_version() -> str:
    from sagemaker_deploy.deploy import DEFAULT_TRITON_VERSION

    return DEFAULT_TRITON_VERSION


def image(version: str, sdk: bool = False) -> str:
    return f"nvcr.io/nvidia/tritonserver:{version}-py3{'-sdk' if sdk else ''}"


def client_url(protocol: str) -> str:
    if protocol.startswith("sagemaker"):
        return f"http://127.0.0.1:{PORTS['sagemaker']}"
    return f"127.0.0.1:{PORTS['grpc' if protocol == 'grpc' else 'http']}"


def server_command(repository: Path, version: str) -> list[str]:
    from builders import ensemble_dali_inception

    published = [argument for port in PORTS.values() for argument in ("-p", f"127.0.0.1:{port}:{port}")]
    return ["docker", "run", "-d", "--name", CONTAINER, "--gpus", "all", "--shm-size", "1g", *published,
            "-e", f"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME={ensemble_dali_inception.NAME}",
            "-v", f"{repository.resolve()}:/models:ro", image(version),
            "tritonserver", "--model-repository=/models", "--exit-on-error=true",
            "--allow-sagemaker=true", f"--sagemaker-port={PORTS['sagemaker']}"]


def perf_analyzer_command(work: Path, version: str, encoded_length: int) -> list[str]:
    from builders import ensemble_dali_inception as ensemble

    return ["docker", "run", "--rm", "--net", "host", "-v", f"{work.resolve()}:/smoke", image(version, sdk=True),
            "perf_analyzer", "-m", ensemble.NAME, "-u", client_url("http-binary"), "-i", "http",
            "--input-data=/smoke/perf_input.json", f"--shape={ensemble.INPUT.name}:{encoded_length}",
            "--concurrency-range=1:8:1", "--measurement-interval=3000", "-f", "/smoke/perf_analyzer.csv"]


def steps(work: Path, repository: Path, version: str, build: bool) -> list[Step]:
    from clients.protocols import SERVER_PROTOCOLS

    python = [sys.executable, "-m"]
    planned = []
    if build:
        planned.append(Step("build the gpu repository", [*python, "builders", "--target", "gpu", "--out",
                                                          str(repository), "--product", str(SAMPLE_PRODUCT)],
                            required=True))
    planned += [
        Step(f"start tritonserver {version}", server_command(repository, version), required=True),
        Step("all models ready", ["curl", "-sf", "--retry", str(READY_TIMEOUT_S // 5), "--retry-delay", "5",
                                  "--retry-all-errors", f"http://{client_url('http-binary')}/v2/health/ready"],
             required=True),
    ]
    planned += [Step(f"classify over {protocol}", [*python, "clients.classify", str(SAMPLE_PHOTO), "--protocol",
                                                   protocol, "--url", client_url(protocol)])
                for protocol in SERVER_PROTOCOLS]
    planned += [
        Step("perf_analyzer sweep, concurrency 1..8",
             perf_analyzer_command(work, version, SAMPLE_PHOTO.stat().st_size)),
        Step("LaMa pipeline (ensemble_lama)", [*python, "clients.inpaint", str(INPAINT_PHOTO), str(work / "mask.png"),
                                               "-o", str(work / "inpainted.png"), "--protocol", "grpc",
                                               "--url", client_url("grpc")]),
        Step("defect pipeline (pcb_inspection)", [*python, "clients.inspect", str(work / "board.png"),
                                                  "--product", "pcb", "--protocol", "http-binary",
                                                  "--url", client_url("http-binary")]),
    ]
    return planned


def write_inputs(work: Path) -> None:
    """The files the steps read: a hole mask for the photo, a sample board, perf_analyzer's input."""
    import numpy as np
    from PIL import Image

    from builders import ensemble_dali_inception as ensemble
    from defect_data.pcb import render

    work.mkdir(parents=True, exist_ok=True)
    width, height = Image.open(INPAINT_PHOTO).size
    mask = np.zeros((height, width), np.uint8)
    mask[height // 3: height // 2, width // 3: width // 2] = 255
    Image.fromarray(mask).save(work / "mask.png")
    buffer = io.BytesIO()
    Image.fromarray(render(seed=0).image).save(buffer, format="PNG")
    (work / "board.png").write_bytes(buffer.getvalue())
    encoded = np.frombuffer(SAMPLE_PHOTO.read_bytes(), np.uint8)
    (work / "perf_input.json").write_text(json.dumps(
        {"data": [{ensemble.INPUT.name: {"content": encoded.tolist(), "shape": [len(encoded)]}}]}))


def run_step(step: Step) -> tuple[bool, float, str]:
    start = time.monotonic()
    done = subprocess.run(step.command, capture_output=True, text=True, cwd=ROOT)
    output = (done.stdout + done.stderr).strip()
    return done.returncode == 0, time.monotonic() - start, output


def server_log_tail() -> str:
    done = subprocess.run(["docker", "logs", "--tail", "40", CONTAINER], capture_output=True, text=True)
    return (done.stdout + done.stderr).strip()


def remove_container() -> list[str]:
    """Kept after it exits (no --rm) so that its log explains a failed load; removed before and after."""
    return ["docker", "rm", "-f", CONTAINER]


def run_all(planned: list[Step]) -> list[tuple[str, str, float]]:
    results, blocked = [], False
    subprocess.run(remove_container(), capture_output=True)  # a container left by an interrupted run
    try:
        for step in planned:
            if blocked:
                results.append((step.name, "skipped", 0.0))
                continue
            passed, seconds, output = run_step(step)
            results.append((step.name, "pass" if passed else "FAIL", seconds))
            if not passed:
                print(f"--- {step.name} failed:\n{output[-2000:]}\n--- server log:\n{server_log_tail()}\n")
                blocked = step.required
    finally:
        subprocess.run(remove_container(), capture_output=True)
    return results


def table(results: list[tuple[str, str, float]], version: str) -> str:
    lines = [f"GPU smoke test, {image(version)}", "", "| step | result | seconds |", "| --- | --- | --- |"]
    lines += [f"| {name} | {result} | {seconds:.1f} |" for name, result, seconds in results]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_smoke", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "gpu_smoke",
                        help="folder for the inputs and outputs")
    parser.add_argument("--repository", type=Path,
                        help="an already built gpu repository (default: build one in --work)")
    parser.add_argument("--triton-version", default=None, help="tritonserver image version (default: deploy's)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    version = args.triton_version or triton_version()
    repository = args.repository or args.work / "repository"
    planned = steps(args.work, repository, version, build=args.repository is None)
    if args.dry_run:
        print(f"# writes mask.png, board.png and perf_input.json into {args.work}, then runs:")
        for step in planned:
            print(f"# {step.name}\n{shlex.join(step.command)}")
        print(f"# always, before and after\n{shlex.join(remove_container())}")
        return 0
    missing = [tool for tool in ("docker", "curl") if shutil.which(tool) is None]
    if missing:
        parser.error(f"{' and '.join(missing)} not found: this smoke test needs Docker with an NVIDIA GPU "
                     "(--dry-run prints what it would run)")
    write_inputs(args.work)
    results = run_all(planned)
    print(table(results, version))
    return 0 if all(result == "pass" for _, result, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
