"""Server-side time breakdown from Triton's statistics API, as the difference of two snapshots."""
from __future__ import annotations

import tritonclient.http as httpclient

PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


def snapshot(http_url: str) -> dict[str, dict]:
    """Cumulative statistics of every loaded model, by name."""
    with httpclient.InferenceServerClient(http_url) as client:
        stats = client.get_inference_statistics()
    return {model["name"]: model for model in stats["model_stats"]}


def breakdown(before: dict[str, dict], after: dict[str, dict], models: list[str]) -> list[dict]:
    """Per model: requests, executions (fewer than requests = batching), and mean microseconds per phase."""
    rows = []
    for name in models:
        old, new = before.get(name, {}), after[name]
        row = {"model": name,
               "inference_count": int(new.get("inference_count", 0)) - int(old.get("inference_count", 0)),
               "execution_count": int(new.get("execution_count", 0)) - int(old.get("execution_count", 0))}
        success = _delta(old, new, "success")
        row["requests"] = success[0]
        for phase in PHASES:
            count, ns = _delta(old, new, phase)
            row[f"{phase}_us"] = ns / count / 1000 if count else 0.0
        row["mean_batch"] = row["inference_count"] / row["execution_count"] if row["execution_count"] else 0.0
        rows.append(row)
    return rows


def _delta(old: dict, new: dict, phase: str) -> tuple[int, int]:
    def read(stats: dict) -> tuple[int, int]:
        entry = stats.get("inference_stats", {}).get(phase, {})
        return int(entry.get("count", 0)), int(entry.get("ns", 0))

    (old_count, old_ns), (new_count, new_ns) = read(old), read(new)
    return new_count - old_count, new_ns - old_ns
