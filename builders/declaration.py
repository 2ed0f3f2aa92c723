"""What a model in the repository is: its name, tensors, and how each target serves it.

Every builder module declares one ``ModelDeclaration``; ``builders.config`` turns it into
a ``config.pbtxt`` through Triton's model-config protobuf schema.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from builders.load_shedding import DEFAULT_CAPACITY_RPS, DEFAULT_LATENCY_BUDGET_S, QueuePolicy

TARGETS = ("gpu", "cpu")
# LaMa's export format per target, when --lama-format is not given. gpu: TorchScript with
# torch.fft Fourier units, measured on an H100 (PyTorch 2.11, big-lama, 512x512) at 15.4 ms
# (batch 1) and 57.3 ms (batch 8) against 30.9 and 70.7 ms for the matrix DFT that ONNX
# needs (onnxruntime's CUDA provider has no DFT kernel). cpu: ONNX, which the python-backend
# runner and the tests serve. Both formats keep the same model name, tensors and ensembles.
DEFAULT_LAMA_FORMAT = {"gpu": "torchscript", "cpu": "onnx"}


class WeightsError(ValueError):
    """A weights file given to a builder is missing or does not fit the model."""


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str  # a tritonclient ``DataType`` name, e.g. "TYPE_FP32"
    dims: tuple[int, ...]
    format: str = ""  # e.g. "FORMAT_NHWC"
    label_filename: str = ""
    allow_ragged_batch: bool = False


@dataclass(frozen=True)
class Serving:
    """How one target serves the model: a native backend, or a python-backend runner."""

    backend: str = ""
    platform: str = ""
    instance_kind: str = ""  # "" for ensembles, which have no instances
    instance_count: int = 1
    max_batch_size: int | None = None  # overrides the model's on this target (e.g. DALI on a GPU)
    parameters: dict[str, str] = field(default_factory=dict)
    gpu_accelerators: tuple["Accelerator", ...] = ()  # optimization.execution_accelerators
    runner: str = ""  # module in builders/runners copied to model.py (python backend)
    helpers: tuple[str, ...] = ("batching",)  # modules in builders/runners copied beside it


@dataclass(frozen=True)
class Accelerator:
    """A GPU execution accelerator of a native backend, e.g. ONNX Runtime's TensorRT provider."""

    name: str
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Warmup:
    name: str
    batch_size: int
    inputs: dict[str, "WarmupInput"]


@dataclass(frozen=True)
class WarmupInput:
    data_type: str
    dims: tuple[int, ...]
    zero_data: bool = False
    input_data_file: str = ""  # a file in the model's warmup/ folder


@dataclass(frozen=True)
class EnsembleStep:
    model_name: str
    input_map: dict[str, str]  # step tensor -> ensemble tensor
    output_map: dict[str, str]


@dataclass
class BuildOptions:
    """User choices for one repository build."""

    target: str = "cpu"
    inception_format: str = "onnx"  # or "graphdef" (older Triton images only)
    inception_weights: Path | None = None
    inception_tensorrt: bool = False  # gpu: ONNX Runtime's TensorRT provider, FP16 (opt-in)
    lama_format: str = ""  # "onnx" or "torchscript"; empty: the target's DEFAULT_LAMA_FORMAT
    lama_weights: Path | None = None
    seed: int = 0
    configs_only: bool = False
    models: tuple[str, ...] = ()  # build only these (and nothing else); empty: all
    # Products whose inspection pipelines to build (products.Product), besides those the
    # repository being rebuilt already serves.
    products: tuple = ()
    # Load shedding (builders/load_shedding.py): every queue sized from this budget and capacity.
    latency_budget_s: float = DEFAULT_LATENCY_BUDGET_S
    capacity_rps: float = DEFAULT_CAPACITY_RPS
    admission_gate: bool = False  # the guards admit at most capacity_rps (runners/admission.py)
    instances: dict[str, int] = field(default_factory=dict)  # model -> instance_group count
    # gpu: the SageMaker Triton image the repository is for (its Triton decides ensemble
    # backpressure); empty: the deploy default. The cpu target runs the local tritonserver.
    triton_image: str = ""

    def __post_init__(self):
        self.lama_format = self.lama_format or DEFAULT_LAMA_FORMAT.get(self.target, "onnx")


@dataclass
class ModelDeclaration:
    name: str
    inputs: list[Tensor]
    outputs: list[Tensor]
    max_batch_size: int
    serving: dict[str, Serving]  # target -> Serving
    artifact: str = ""  # file name inside the version folder, e.g. "model.onnx"
    dynamic_batching_delay_us: int | None = None
    warmups: list[Warmup] = field(default_factory=list)
    steps: list[EnsembleStep] = field(default_factory=list)
    parameters: dict[str, str] = field(default_factory=dict)
    # Models trained here serve one version by ``version_policy``; training runs add more
    # version folders, which a rebuild keeps (see ``model_versions.local``).
    served_version: int | None = None
    # Writes the artifact into a version folder; returns extra files for the model folder.
    export: Callable[[Path, BuildOptions], dict[str, bytes]] | None = None
    model_files: dict[str, bytes] = field(default_factory=dict)  # label files, warmup inputs
    # Set by ``builders.repository.declarations`` from the build options, not by builder modules.
    queue_policy: QueuePolicy | None = None
    ensemble_max_inflight: int = 0  # ensembles: ModelEnsembling.max_inflight_requests (0: not written)
