"""The suite's results as Markdown tables, PNG plots and JSON."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt  # noqa: E402


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return lines + [""]


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def sweeps_section(results: dict) -> list[str]:
    lines = ["## Sweeps", "", "Latency in ms; throughput in requests (one image each) per second; "
             "each row from the last 3 windows of its step.", ""]
    header = ["target", "mode", "load", "throughput", "mean", "p50", "p90", "p95", "p99", "errors", "stable"]
    rows = []
    for key, steps in results["sweeps"].items():
        name, mode = key.rsplit("/", 1)
        rows += [[name, mode, s["load"], s["throughput"], s["mean_ms"], s["p50_ms"], s["p90_ms"], s["p95_ms"],
                  s["p99_ms"], s["errors"], "yes" if s["stable"] else "no"] for s in steps]
    return lines + _table(header, rows)


def breakdown_section(title: str, rows: list[dict]) -> list[str]:
    header = ["model", "requests", "executions", "mean batch", "queue us", "compute input us",
              "compute infer us", "compute output us"]
    return [f"### {title}", ""] + _table(header, [[r["model"], r["inference_count"], r["execution_count"],
                                                  r["mean_batch"], r["queue_us"], r["compute_input_us"],
                                                  r["compute_infer_us"], r["compute_output_us"]] for r in rows])


def comparisons_section(results: dict) -> list[str]:
    comparisons = results["comparisons"]
    lines = ["## Comparisons (side by side, this run)", ""]
    if "binary_vs_json" in comparisons:
        c = comparisons["binary_vs_json"]
        lines += _table(["payload", "request bytes", "p50 ms at concurrency 1"],
                        [["binary+json", c["binary+json"], c["p50_ms_binary"]], ["JSON", c["json"], c["p50_ms_json"]],
                         ["ratio binary/JSON", c["bytes_ratio"], c["p50_ratio"]]])
    rows = [[c["first"], c["second"], c["throughput_first"], c["throughput_second"], c["throughput_ratio"],
             c["p50_ms_first_lowest_load"], c["p50_ms_second_lowest_load"]]
            for key, c in comparisons.items() if key != "binary_vs_json"]
    lines += _table(["A", "B", "best throughput A", "best throughput B", "A / B", "p50 ms A (lowest load)",
                     "p50 ms B (lowest load)"], rows)
    if "dynamic_batching" in comparisons:
        lines += [f"Dynamic batching configuration: {comparisons['dynamic_batching']['configuration']}.", ""]
        lines += breakdown_section("Server-side breakdown, dynamic batching off",
                                   comparisons["dynamic_batching"]["breakdown_off"])
    return lines


def perf_analyzer_section(rows: list[dict]) -> list[str]:
    lines = ["## Cross-check with perf_analyzer (same server, same model, HTTP binary)", "",
             "At each concurrency our step and perf_analyzer's run back to back. Goal: throughput within 10%, "
             "p50 within 15%.", ""]
    return lines + _table(["concurrency", "throughput ours", "throughput perf_analyzer", "ratio", "p50 ms ours",
                           "p50 ms perf_analyzer", "ratio"],
                          [[r["concurrency"], r["throughput_ours"], r["throughput_perf_analyzer"],
                            r["throughput_ratio"], r["p50_ms_ours"], r["p50_ms_perf_analyzer"], r["p50_ratio"]]
                           for r in rows])


def cost_section(cost: dict) -> list[str]:
    prices = cost["prices"]
    lines = ["## Cost per million inferences", "",
             f"From the best measured ensemble throughput, {cost['throughput']:.1f} requests/s on THIS machine; "
             "an instance's own throughput differs, so measure it there (--endpoint-name) before trusting these. "
             f"Prices: {prices['currency']} {prices['unit']}, {prices['region']}, {prices['source']}, "
             f"{prices['as_of']}.", ""]
    return lines + _table(["instance", f"{prices['currency']} per million"],
                          [[name, value] for name, value in cost["per_million"].items()])


def plot(results: dict, out: Path) -> list[Path]:
    concurrency = {key.rsplit("/", 1)[0]: steps for key, steps in results["sweeps"].items()
                   if key.endswith("/concurrency")}
    paths = []
    figure, axes = plt.subplots(figsize=(8, 5))
    for name, steps in concurrency.items():
        axes.plot([s["load"] for s in steps], [s["throughput"] for s in steps], marker="o", label=name)
    axes.set(xlabel="concurrency", ylabel="requests / s", title="Throughput vs concurrency")
    axes.legend(fontsize=7)
    paths.append(out / "throughput.png")
    figure.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(figure)
    figure, axes = plt.subplots(figsize=(8, 5))
    for (name, steps), color in zip(concurrency.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3):
        loads = [s["load"] for s in steps]
        axes.plot(loads, [s["p50_ms"] for s in steps], marker="o", color=color, label=f"{name} p50")
        axes.plot(loads, [s["p99_ms"] for s in steps], linestyle="--", color=color, label=f"{name} p99")
    axes.set(xlabel="concurrency", ylabel="latency ms", title="Latency percentiles vs concurrency")
    axes.legend(fontsize=6, ncol=2)
    paths.append(out / "latency.png")
    figure.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(figure)
    return paths


def write_report(results: dict, out: Path) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2))
    lines = ["# Benchmark report", "",
             f"{results['date']}, {results['machine']}, {results['cpus']} CPUs, image {results['image']}, "
             f"classifier weights: {results['weights']}. Settings: {results['settings']}.", ""]
    if results.get("failure"):
        lines += [f"**Stopped early:** {results['failure']}", ""]
    lines += sweeps_section(results)
    if "breakdown" in results:
        lines += breakdown_section("Server-side breakdown, HTTP binary sweep (Triton statistics API)",
                                   results["breakdown"])
    lines += comparisons_section(results)
    if results.get("perf_analyzer"):
        lines += perf_analyzer_section(results["perf_analyzer"])
    if "cost" in results:
        lines += cost_section(results["cost"])
    if results["sweeps"]:
        lines += ["## Plots", ""] + [f"![{path.stem}]({path.name})" for path in plot(results, out)] + [""]
    (out / "report.md").write_text("\n".join(lines))
