"""One script for a lent GPU machine: LaMa's TorchScript routes and the defect CNNs, timed and checked.

    python -m benchmarks.gpu_bench [--out DIR]            # on a CUDA machine: big-lama, a few minutes
    python -m benchmarks.gpu_bench --device cpu --quick   # the same steps on a small generator (the test's)

Needs only PyTorch, NumPy, ONNX and ONNX Runtime (CPU): no Triton, no DALI. Every model is
built here from the repository's code with seeded random weights (nothing big travels):

- LaMa as ``--lama-format torchscript`` exports it: the 'fft' route traced on the CPU, saved,
  loaded onto the device; against it the 'matrix' route (the DFT that ONNX needs), traced on
  the device itself, since a CPU trace of it pins the CPU (the guard in ``lama.traced``).
  Both timed at 512x512 batch 1, 4, 8 and 1024x1024 batch 1; parity checked on the device.
- The ONNX export (matrix route) checked in ONNX Runtime: loads, no DFT node, equals PyTorch.
- The defect CNNs (``builders.defect_architecture``): timed on the device at batch 1 and 16;
  their ONNX exports checked in ONNX Runtime.

Timing: synchronize, warm-up calls, then the median (p50) of timed calls. A time budget
(``--budget-s``) skips the remaining timings rather than overrun a lease. Prints Markdown
tables (device, versions, date) and writes them with a JSON copy to ``--out``.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from builders import defect_architecture as arch
from builders import lama
from builders.declaration import BuildOptions
from builders.lama_architecture import BIG_LAMA, FFCResNetGenerator, GeneratorSize, set_fourier_route

# The sample board's definition, as the committed repository carries it: the CNNs' input size.
SAMPLE_PRODUCT = Path(__file__).resolve().parent.parent / "model_repository" / "pcb_inspection" / "product.json"

SMALL_LAMA = GeneratorSize(ngf=16, n_blocks=2)
PARITY_TOLERANCE = 1e-4  # the H100 run saw 4e-6 between the routes


@dataclass(frozen=True)
class Plan:
    generator: GeneratorSize
    lama_cases: tuple[tuple[int, int, int], ...]  # (height, width, batch)
    unseen_size: tuple[int, int]  # a size no call used before: first-call cost of the profiling executor
    defect_batches: tuple[int, ...]
    warmup: int
    repeats: int


FULL = Plan(BIG_LAMA, ((512, 512, 1), (512, 512, 4), (512, 512, 8), (1024, 1024, 1)), (480, 640),
            (1, arch.MAX_BATCH_SIZE), warmup=3, repeats=10)
QUICK = Plan(SMALL_LAMA, ((64, 64, 2),), (48, 72), (2,), warmup=1, repeats=1)


@dataclass
class Report:
    device: str
    facts: dict
    timings: list[dict] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)

    def time(self, model: str, variant: str, shape: str, batch: int, p50_ms: float | None):
        per_second = None if p50_ms is None else round(batch * 1000 / p50_ms, 1)
        self.timings.append({"model": model, "variant": variant, "shape": shape, "batch": batch,
                             "p50_ms": None if p50_ms is None else round(p50_ms, 2), "images_per_s": per_second})

    def check(self, name: str, passed: bool, detail: str):
        self.checks.append({"check": name, "result": "pass" if passed else "FAIL", "detail": detail})

    @property
    def passed(self) -> bool:
        return all(check["result"] == "pass" for check in self.checks)


class Clock:
    """Synchronized wall time of device calls, within an overall budget."""

    def __init__(self, device: torch.device, plan: Plan, budget_s: float):
        self.device, self.plan, self.deadline = device, plan, time.monotonic() + budget_s

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def once_ms(self, call) -> float:
        self.sync()
        start = time.perf_counter()
        call()
        self.sync()
        return (time.perf_counter() - start) * 1000

    def p50_ms(self, call) -> float | None:
        """Median of the timed calls after the warm-up; None once the budget is spent."""
        if time.monotonic() > self.deadline:
            return None
        for _ in range(self.plan.warmup):
            call()
        return statistics.median(self.once_ms(call) for _ in range(self.plan.repeats))


def inputs(height: int, width: int, batch: int, device: torch.device):
    return tuple(tensor.to(device) for tensor in lama.example_inputs(height, width, batch))


def lama_options(plan: Plan, workdir: Path, lama_format: str) -> BuildOptions:
    """Build options for LaMa at the plan's size; a smaller generator travels as a weights file."""
    if plan.generator == BIG_LAMA:
        return BuildOptions(lama_format=lama_format)
    weights = workdir / "generator.pt"
    if not weights.is_file():
        torch.manual_seed(0)
        torch.save({"generator_size": asdict(plan.generator),
                    "state_dict": FFCResNetGenerator(plan.generator).state_dict()}, weights)
    return BuildOptions(lama_format=lama_format, lama_weights=weights)


def calibrate_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """BatchNorm statistics measured on one batch: random weights with the default statistics
    leave the Fourier branch's share of the output too small for a parity check to see."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average: one batch sets the statistics
    with torch.no_grad():
        model.train()(*lama.example_inputs(64, 96, batch=2))
    return model.eval()


def lama_models(plan: Plan, workdir: Path) -> dict[str, torch.nn.Module]:
    """route -> the ``lama`` module on the CPU; one set of weights, the Fourier route the only difference."""
    fft = calibrate_batchnorm(lama.inpainter(lama_options(plan, workdir, "torchscript")))
    return {"fft": fft, "matrix": set_fourier_route(copy.deepcopy(fft), "matrix")}


def exported_fft_module(model: torch.nn.Module, workdir: Path, device: torch.device, report: Report):
    """The TorchScript file as the build writes it (traced on the CPU), loaded onto ``device``."""
    path = workdir / "model.pt"
    lama.traced(model).save(str(path))
    loaded = torch.jit.load(str(path), map_location=device).eval()
    report.check("fft export holds no device constant", lama.baked_devices(loaded) == [],
                 f"devices in the graph: {lama.baked_devices(loaded) or 'none'}")
    return loaded


def traced_on(model: torch.nn.Module, device: torch.device):
    """The matrix route traced on ``device`` itself (a CPU trace pins the CPU: see below)."""
    with torch.no_grad():
        return torch.jit.trace(model, inputs(*lama.TRACE_SIZE, 1, device), check_trace=False)


def check_cpu_trace_of_matrix_route(model: torch.nn.Module, device: torch.device, report: Report):
    """The bug the issue met on an H100: the matrix route traced on the CPU pins the CPU, so the
    export refuses it, and on a GPU it fails at the first call."""
    with torch.no_grad():
        cpu_trace = torch.jit.trace(model, lama.example_inputs(), check_trace=False)
    devices = lama.baked_devices(cpu_trace)
    report.check("matrix route traced on the CPU pins the CPU (export guard refuses it)", devices == ["cpu"],
                 f"devices in the graph: {devices or 'none'}")
    if device.type != "cuda":
        return
    try:
        with torch.no_grad():
            cpu_trace.to(device)(*inputs(*lama.TRACE_SIZE, 1, device))
        report.check("that CPU trace fails on cuda (the old bug)", False, "it ran")
    except RuntimeError as error:
        report.check("that CPU trace fails on cuda (the old bug)", True, str(error).strip().splitlines()[-1][:90])


@contextmanager
def strict_fp32():
    """cuDNN convolutions run in TF32 by default on Ampere and later GPUs; parity is judged in full fp32.

    Eager modules only: a trace records the flag in each convolution when it is traced."""
    saved = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved[0]
        torch.set_float32_matmul_precision(saved[1])


def max_gap(first: torch.Tensor, second: torch.Tensor) -> float:
    return (first - second).abs().max().item()


def bench_lama(models: dict[str, torch.nn.Module], workdir: Path, clock: Clock, report: Report):
    device, plan = clock.device, clock.plan
    fft = exported_fft_module(models["fft"], workdir, device, report)
    check_cpu_trace_of_matrix_route(models["matrix"], device, report)
    eager_fft, matrix_eager = (copy.deepcopy(models[route]).to(device) for route in ("fft", "matrix"))
    matrix = traced_on(matrix_eager, device)
    with torch.no_grad():
        for height, width, batch in plan.lama_cases:
            case = inputs(height, width, batch, device)
            shape = f"{height}x{width}"
            with strict_fp32():
                route_gap = max_gap(eager_fft(*case), matrix_eager(*case))
            traced_gap = max_gap(fft(*case), eager_fft(*case))
            report.check(f"LaMa {shape} batch {batch}: fft route = matrix route (eager, strict fp32)",
                         route_gap < PARITY_TOLERANCE,
                         f"max abs {route_gap:.1e}; exported fft vs eager (the trace keeps TF32 convolutions) "
                         f"{traced_gap:.1e}")
            report.time("lama TorchScript", "fft (exported)", shape, batch, clock.p50_ms(lambda: fft(*case)))
            report.time("lama TorchScript", "matrix", shape, batch, clock.p50_ms(lambda: matrix(*case)))
        height, width, batch = plan.lama_cases[0]
        case = inputs(height, width, batch, device)
        with torch.jit.optimized_execution(False):  # what DISABLE_OPTIMIZED_EXECUTION does in Triton
            report.time("lama TorchScript", "fft, optimized execution off", f"{height}x{width}", batch,
                        clock.p50_ms(lambda: fft(*case)))
        unseen = inputs(*plan.unseen_size, 1, device)
        report.time("lama TorchScript", "fft, first call at an unseen size", "x".join(map(str, plan.unseen_size)),
                    1, clock.once_ms(lambda: fft(*unseen)))
        for variant, eager in (("fft", eager_fft), ("matrix", matrix_eager)):
            report.time("lama eager", variant, f"{height}x{width}", batch, clock.p50_ms(lambda: eager(*case)))


def check_lama_onnx(model: torch.nn.Module, workdir: Path, report: Report):
    """The ONNX export (matrix route) loads in ONNX Runtime, holds no DFT node, equals PyTorch."""
    import onnx
    import onnxruntime as ort

    model = model.cpu()  # bench_lama moved it to the device; the export traces CPU inputs
    path = workdir / "model.onnx"
    lama.export_onnx(model, path)
    graph = onnx.load(str(path), load_external_data=False).graph
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image, mask = lama.example_inputs(72, 104, batch=2)
    with torch.no_grad():
        expected = model(image, mask).numpy()
    served = session.run(None, {"image": image.numpy(), "mask": mask.numpy()})[0]
    gap = float(np.abs(served - expected).max())
    no_dft = "DFT" not in {node.op_type for node in graph.node}
    report.check(f"LaMa ONNX in onnxruntime {ort.__version__} (CPU), 72x104 batch 2", gap < PARITY_TOLERANCE and no_dft,
                 f"max abs(onnx - torch) {gap:.1e}; DFT nodes: {'none' if no_dft else 'present'}")


def defect_modules(product) -> dict[str, tuple]:
    """name -> (module, output names), untrained, as version 1 of the repository holds them."""
    from builders import defect_child, defect_parent

    torch.manual_seed(0)
    return {defect_parent.name(product): (defect_parent.module(product), [t.name for t in defect_parent.OUTPUTS]),
            defect_child.name(product): (defect_child.module(product), [defect_child.SCORES_NAME])}


def bench_defect(plan: Plan, workdir: Path, clock: Clock, report: Report):
    import onnxruntime as ort

    from products import load

    product = load(SAMPLE_PRODUCT)
    tensor = arch.image_tensor(product)
    for name, (module, output_names) in defect_modules(product).items():
        path = arch.export_onnx(module, workdir / f"{name}.onnx", tensor, output_names)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        image = torch.rand(3, *tensor.dims) * 2 - 1
        with torch.no_grad():
            outputs = module(image)
        expected = [tensor.numpy() for tensor in (outputs if isinstance(outputs, tuple) else (outputs,))]
        served = session.run(output_names, {tensor.name: image.numpy()})
        gap = max(float(np.abs(a - b).max()) for a, b in zip(served, expected))
        report.check(f"{name} ONNX in onnxruntime (CPU) = PyTorch", gap < PARITY_TOLERANCE, f"max gap {gap:.1e}")
        on_device = module.to(clock.device)
        with torch.no_grad():
            for batch in plan.defect_batches:
                batch_input = (torch.rand(batch, *tensor.dims) * 2 - 1).to(clock.device)
                report.time(name, "PyTorch eager", "x".join(map(str, tensor.dims[1:])), batch,
                            clock.p50_ms(lambda: on_device(batch_input)))


def machine_facts(device: torch.device) -> dict:
    import onnx
    import onnxruntime as ort

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or
                                                                              platform.machine())
    return {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda or "none",
            "onnx": onnx.__version__, "onnxruntime": ort.__version__,
            "timed_with": f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
                          f"matmul precision {torch.get_float32_matmul_precision()}",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def markdown(report: Report, plan_name: str) -> str:
    facts = report.facts
    lines = [f"### GPU bench ({plan_name}): {facts['device']}, torch {facts['torch']} (CUDA {facts['cuda']}), "
             f"onnxruntime {facts['onnxruntime']}, {facts['date']}; timed with {facts['timed_with']}", "",
             "| model | variant | H x W | batch | p50 ms | images/s |", "| --- | --- | --- | --- | --- | --- |"]
    for row in report.timings:
        p50 = "skipped (time budget)" if row["p50_ms"] is None else row["p50_ms"]
        lines.append(f"| {row['model']} | {row['variant']} | {row['shape']} | {row['batch']} | {p50} | "
                     f"{row['images_per_s'] or ''} |")
    lines += ["", "| check | result | detail |", "| --- | --- | --- |"]
    lines += [f"| {row['check']} | {row['result']} | {row['detail']} |" for row in report.checks]
    return "\n".join(lines) + "\n"


def run(device_name: str, quick: bool, budget_s: float, out: Path | None) -> Report:
    device = torch.device(device_name)
    plan = QUICK if quick else FULL
    report = Report(device_name, machine_facts(device))
    clock = Clock(device, plan, budget_s)
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        models = lama_models(plan, workdir)
        bench_lama(models, workdir, clock, report)
        bench_defect(plan, workdir, clock, report)
        check_lama_onnx(models["matrix"], workdir, report)
    text = markdown(report, "quick" if quick else "full")
    print(text)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_bench.md").write_text(text)
        (out / "gpu_bench.json").write_text(json.dumps(asdict(report), indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="torch device (default cuda)")
    parser.add_argument("--quick", action="store_true", help="small generator, small sizes: a CPU check of the script")
    parser.add_argument("--budget-s", type=float, default=360.0,
                        help="skip the remaining timings after this many seconds (default 360)")
    parser.add_argument("--out", type=Path, help="folder for gpu_bench.md and gpu_bench.json")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here: run with --device cpu --quick")
    report = run(args.device, args.quick, args.budget_s, args.out)
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
