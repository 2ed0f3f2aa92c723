"""Small timing helpers shared by the benchmarks."""
from __future__ import annotations

import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from rich.progress import track

ROOT = Path(__file__).resolve().parent.parent
# The sample board's definition, as the committed repository carries it.
SAMPLE_PRODUCT = ROOT / "model_repository" / "pcb_inspection" / "product.json"


def machine_facts() -> dict:
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count()}


def summarize(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"mean_ms": float(ms.mean()), "p50_ms": float(np.percentile(ms, 50)),
            "p90_ms": float(np.percentile(ms, 90)), "p99_ms": float(np.percentile(ms, 99)), "n": len(ms)}


def time_calls(call, count: int, label: str, warmup: int = 2) -> list[float]:
    """Wall time of ``count`` sequential calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    durations = []
    for _ in track(range(count), description=label, transient=True):
        start = time.perf_counter()
        call()
        durations.append(time.perf_counter() - start)
    return durations
