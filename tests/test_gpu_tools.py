"""The GPU tools stay runnable without a GPU: the bench's quick CPU mode, the smoke test's dry run."""
from __future__ import annotations

import json
import shlex

import pytest

from benchmarks import gpu_bench, gpu_smoke
from clients.protocols import SERVER_PROTOCOLS
from sagemaker_deploy.deploy import DEFAULT_TRITON_VERSION

pytestmark = pytest.mark.quick


def test_gpu_bench_quick_cpu_mode_times_both_lama_routes_and_the_defect_cnns_and_passes_its_checks(tmp_path):
    assert gpu_bench.main(["--device", "cpu", "--quick", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_bench.json").read_text())
    timed = {(row["model"], row["variant"]) for row in report["timings"]}
    assert {("lama TorchScript", "fft (exported)"), ("lama TorchScript", "matrix"),
            ("pcb_parent", "PyTorch eager"), ("pcb_child", "PyTorch eager")} <= timed  # the sample board's
    assert all(row["p50_ms"] > 0 for row in report["timings"])
    checks = {row["check"]: row["result"] for row in report["checks"]}
    assert len(checks) == 6 and set(checks.values()) == {"pass"}
    assert report["facts"]["torch"] and "| check | result | detail |" in (tmp_path / "gpu_bench.md").read_text()


def test_gpu_bench_table_marks_timings_skipped_by_the_time_budget():
    report = gpu_bench.Report("cuda", {"device": "H100", "torch": "2.11", "cuda": "13.0", "onnxruntime": "1.23",
                                       "date": "2026-11-28", "timed_with": "cudnn.allow_tf32=True"})
    report.time("lama TorchScript", "fft (exported)", "512x512", 8, None)
    report.check("a parity check", False, "max gap 1e-2")
    text = gpu_bench.markdown(report, "full")
    assert "| 512x512 | 8 | skipped (time budget) |" in text and "| a parity check | FAIL |" in text
    assert not report.passed


def dry_run_commands(capsys, *arguments) -> list[list[str]]:
    assert gpu_smoke.main(["--dry-run", *arguments]) == 0
    return [shlex.split(line) for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]


def test_gpu_smoke_dry_run_prints_the_server_every_route_perf_analyzer_and_both_pipelines(tmp_path, capsys):
    commands = dry_run_commands(capsys, "--work", str(tmp_path / "smoke"))
    assert not (tmp_path / "smoke").exists()  # a dry run writes nothing
    joined = [" ".join(command) for command in commands]
    server = next(command for command in commands if command[:3] == ["docker", "run", "-d"])
    assert f"nvcr.io/nvidia/tritonserver:{DEFAULT_TRITON_VERSION}-py3" in server and "--gpus" in server
    assert f"{(tmp_path / 'smoke' / 'repository').resolve()}:/models:ro" in server
    assert any(line.startswith(f"{gpu_smoke.sys.executable} -m builders --target gpu") for line in joined)
    for protocol in SERVER_PROTOCOLS:
        assert any("clients.classify" in line and f"--protocol {protocol}" in line for line in joined), protocol
    assert any(f"tritonserver:{DEFAULT_TRITON_VERSION}-py3-sdk perf_analyzer" in line for line in joined)
    assert any("clients.inpaint" in line for line in joined) and any("clients.inspect" in line for line in joined)
    assert commands[-1] == ["docker", "rm", "-f", gpu_smoke.CONTAINER]


def test_gpu_smoke_dry_run_on_a_built_repository_skips_the_build_and_takes_the_version_asked(tmp_path, capsys):
    commands = dry_run_commands(capsys, "--repository", str(tmp_path / "gpu"), "--triton-version", "24.09")
    assert not [command for command in commands if "builders" in command]
    assert any("nvcr.io/nvidia/tritonserver:24.09-py3" in command for command in commands)
