"""NVIDIA's perf_analyzer, as the reference to cross-check our load generator against.

The current perf-analyzer package is not on this machine's index, but the
``tritonclient==2.40.0`` wheel carries the binary. It is fetched from PyPI once into a
cache folder (not installed: the project uses a newer tritonclient) and run with
``libb64`` (Debian package ``libb64-0d``) and a ``libcudart.so.12`` link to the copy in
``nvidia_pytriton.libs`` on its library path.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from local_server.server import TRITON_LIBS

WHEEL = "tritonclient==2.40.0"
CACHE = Path(sys.prefix) / "var" / "perf_analyzer"
BINARY_IN_WHEEL = "tritonclient-2.40.0.data/data/bin/perf_analyzer"


class PerfAnalyzerError(RuntimeError):
    pass


def binary() -> Path:
    """The perf_analyzer executable, extracted on first use."""
    target = CACHE / "perf_analyzer"
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    download = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d",
                               str(CACHE)], capture_output=True, text=True)
    wheels = list(CACHE.glob("tritonclient-2.40.0-*.whl"))
    if not wheels:
        raise PerfAnalyzerError(f"could not download {WHEEL}: {download.stderr.strip()[-500:]}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        target.write_bytes(wheel.read(BINARY_IN_WHEEL))
    target.chmod(0o755)
    return target


def _library_dir() -> Path:
    libs = CACHE / "lib"
    libs.mkdir(parents=True, exist_ok=True)
    link = libs / "libcudart.so.12"
    if not link.exists():
        link.symlink_to(next(TRITON_LIBS.glob("libcudart-*.so.12*")))
    return libs


def run(http_url: str, model: str, input_name: str, encoded: bytes, concurrency: int, workdir: Path,
        measurement_ms: int = 3000, timeout_s: float = 300, stability_percent: int = 10) -> dict:
    """One concurrency step over HTTP (binary tensors); returns throughput and latency percentiles (ms).

    perf_analyzer reports once three windows in a row agree within ``stability_percent``."""
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "input.json"
    data.write_text(json.dumps({"data": [{input_name: {"content": np.frombuffer(encoded, np.uint8).tolist(),
                                                       "shape": [len(encoded)]}}]}))
    report = workdir / f"perf_analyzer_c{concurrency}.csv"
    command = [str(binary()), "-m", model, "-u", http_url, "-i", "http", "-b", "1",
               f"--concurrency-range={concurrency}", f"--input-data={data}", f"--shape={input_name}:{len(encoded)}",
               f"--measurement-interval={measurement_ms}", f"--stability-percentage={stability_percent}",
               "--max-trials=8", "--percentile=50", "-f", str(report)]
    env = {"LD_LIBRARY_PATH": f"{_library_dir()}:{TRITON_LIBS}", "PATH": "/usr/bin:/bin"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise PerfAnalyzerError(f"perf_analyzer did not finish within {timeout_s:.0f} s") from None
    if done.returncode != 0 or not report.exists():
        raise PerfAnalyzerError(f"perf_analyzer failed ({done.returncode}): {(done.stderr or done.stdout)[-800:]}")
    return parse_report(report)


def parse_report(path: Path) -> dict:
    with open(path, newline="") as handle:
        row = next(csv.DictReader(handle))
    return {"concurrency": int(row["Concurrency"]), "throughput": float(row["Inferences/Second"]),
            **{f"p{q}_ms": float(row[f"p{q} latency"]) / 1000 for q in (50, 90, 95, 99)}}
