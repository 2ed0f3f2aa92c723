"""What each SageMaker Triton image reads, and a check of the repository's artifacts against it.

The artifacts are written here by the pinned DALI, torch and onnx, and read on the endpoint
by the runtimes inside the image; a file newer than its reader fails at load time, after a
10-minute deploy. ``check_artifacts`` finds that before anything is uploaded.

Facts and their sources (only what was found; nothing is guessed):

* image -> Triton, ONNX Runtime: ``build.py`` at the Triton release tag (``TRITON_VERSION_MAP``:
  ORT version, upstream container), github.com/triton-inference-server/server; from 24.04 on
  also ``docs/introduction/compatibility.md`` (ONNX Runtime table).
* image -> DALI: ``DALI_VERSION`` on the dali_backend release branch ``rYY.MM``, which the
  backend's CMake pins (github.com/triton-inference-server/dali_backend).
* image -> PyTorch: the pytorch backend copies libtorch from ``nvcr.io/nvidia/pytorch:<upstream>-py3``
  (build.py); that container's PyTorch version was not found in the sources searched: unknown.
* image -> Python: the base image's Ubuntu in build.py (22.04: 3.10, 24.04: 3.12), as the
  vllm/trtllm tables of compatibility.md list for the same releases.
* ONNX Runtime -> newest ONNX IR version and opset it reads: ONNX Runtime's
  ``docs/reference/compatibility.md``; it lists up to 1.20 and promises that newer releases run
  every model older ones ran, so a newer ORT is credited with 1.20's limits, no more.
* TorchScript: the archive's ``version`` record is its file format version; every libtorch since
  the 2022-02-11 bump (``caffe2/serialize/versions.h``: kMaxSupportedFileFormatVersion 10, still
  10 in torch 2.13) reads up to 10; all images here are from 2023-12 on.
* DALI: a serialized ``model.dali`` (``dali_proto.PipelineDef``) records no DALI version, so its
  writer is taken as this environment's DALI, and only readers measured to read that writer's
  pipelines pass (``make compat``, README). A pipeline the backend serializes itself at load
  time (autoserialization: ``dali.py`` instead of ``model.dali``) always fits its image.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

TRITON_SERVER = "github.com/triton-inference-server/server"
DALI_BACKEND = "github.com/triton-inference-server/dali_backend"


@dataclass(frozen=True)
class Image:
    """The runtimes one SageMaker Triton image version ships; None: not found in the sources."""

    triton: str
    dali: str
    onnxruntime: str
    pytorch: str | None
    python: str
    sources: str


def _image(triton: str, release: str, dali: str, onnxruntime: str, python: str) -> Image:
    return Image(triton, dali, onnxruntime, None, python,
                 f"{TRITON_SERVER} v{triton} build.py; {DALI_BACKEND} branch r{release} DALI_VERSION; "
                 f"PyTorch: libtorch of nvcr.io/nvidia/pytorch (version not found)")


# Every version the SageMaker SDK's sagemaker-tritonserver lookup knows (sagemaker-core 2.27.0).
IMAGES = {
    "23.12": _image("2.41.0", "23.12", "1.31.0", "1.16.3", "3.10"),
    "24.01": _image("2.42.0", "24.01", "1.31.0", "1.16.3", "3.10"),
    "24.03": _image("2.44.0", "24.03", "1.31.0", "1.17.2", "3.10"),
    "24.05": _image("2.46.0", "24.05", "1.36.0", "1.18.0", "3.10"),
    "24.09": _image("2.50.0", "24.09", "1.39.0", "1.19.2", "3.10"),
    "25.04": _image("2.57.0", "25.04", "1.47.0", "1.21.0", "3.12"),
    "25.09": _image("2.61.0", "25.09", "1.51.2", "1.23.0", "3.12"),
    "26.05": _image("2.69.0", "26.05", "2.1.0", "1.24.4", "3.12"),
}

# ONNX Runtime minor -> (newest IR version, newest ai.onnx opset, newest ai.onnx.ml opset) it reads.
ONNX_RUNTIME_READS = {
    "1.16": (9, 19, 3), "1.17": (9, 20, 4), "1.18": (10, 21, 4), "1.19": (10, 21, 4), "1.20": (10, 21, 4),
}
NEWEST_DOCUMENTED_ONNX_RUNTIME = "1.20"

TORCHSCRIPT_MAX_FILE_FORMAT = 10

# DALI that serialized a pipeline -> DALI versions measured here to read this project's pipelines
# it wrote: make compat (2026-11-28) deserializes and builds the cpu pipelines with 1.31.0 and 2.1.0
# (1.53.0: issue 12). The gpu ones differ only in the decoder's device ("mixed"), which needs
# libcuda even to deserialize, so they were not loaded here.
DALI_MEASURED_READERS = {"2.4.0": ("1.31.0", "1.53.0", "2.1.0")}

DALI_AUTOSERIALIZED = "dali.py"


# Triton 2.68 (server PR #8686) applies --http-restricted-api and --http-max-input-size to the SageMaker
# port too; older releases apply them to the HTTP port only (2.51, the local binary, has no
# --http-max-input-size at all), so their SageMaker frontend loads any folder on POST /models and takes
# bodies of any size.
SAGEMAKER_PORT_HTTP_LIMITS_SINCE = (2, 68)


def sagemaker_port_takes_http_limits(version: str) -> bool:
    """Whether the image's tritonserver applies --http-max-input-size / --http-restricted-api to port 8080."""
    return major_minor(image(version).triton) >= SAGEMAKER_PORT_HTTP_LIMITS_SINCE


class CompatibilityError(ValueError):
    """An image version the table does not know, or artifacts its runtimes cannot read."""


def image(version: str) -> Image:
    if version not in IMAGES:
        raise CompatibilityError(f"Triton image version {version!r} is not in the compatibility table "
                                 f"(sagemaker_deploy/compatibility.py): use one of {', '.join(IMAGES)}")
    return IMAGES[version]


def major_minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def onnx_runtime_reads(onnxruntime: str) -> tuple[int, int, int]:
    """(IR version, opset, ML opset) this ONNX Runtime is documented to read."""
    minor = ".".join(onnxruntime.split(".")[:2])
    if minor in ONNX_RUNTIME_READS:
        return ONNX_RUNTIME_READS[minor]
    if major_minor(onnxruntime) > major_minor(NEWEST_DOCUMENTED_ONNX_RUNTIME):  # backwards compatible
        return ONNX_RUNTIME_READS[NEWEST_DOCUMENTED_ONNX_RUNTIME]
    return (0, 0, 0)  # older than the documented ones: nothing proven


def onnx_problems(path: Path, label: str, version: str) -> list[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    runtime = image(version).onnxruntime
    ir_max, opset_max, ml_max = onnx_runtime_reads(runtime)
    problems = []
    if model.ir_version > ir_max:
        problems.append(f"{label}: ONNX IR version {model.ir_version}, image {version} (ONNX Runtime {runtime}) "
                        f"reads IR <= {ir_max}: export with an older onnx or choose a newer image")
    limits = {"": ("opset", opset_max), "ai.onnx": ("opset", opset_max), "ai.onnx.ml": ("ai.onnx.ml opset", ml_max)}
    for entry in model.opset_import:
        name, newest = limits.get(entry.domain, (None, None))
        if name and entry.version > newest:
            problems.append(f"{label}: ONNX {name} {entry.version}, image {version} (ONNX Runtime {runtime}) "
                            f"reads {name} <= {newest}: export with opset <= {newest} or choose a newer image")
    return problems


def torchscript_file_format(path: Path) -> int | None:
    """The ``version`` record of a TorchScript zip archive (``<root>/version`` or ``<root>/.data/version``)."""
    with zipfile.ZipFile(path) as archive:
        records = [name for name in archive.namelist() if name.count("/") <= 2 and
                   (name.endswith("/version") or name.endswith("/.data/version"))]
        return int(archive.read(min(records, key=len)).decode().strip()) if records else None


def torchscript_problems(path: Path, label: str, version: str) -> list[str]:
    found = torchscript_file_format(path) if zipfile.is_zipfile(path) else None
    if found is None:
        return [f"{label}: not a TorchScript archive (no version record): export it with torch.jit.save"]
    if found > TORCHSCRIPT_MAX_FILE_FORMAT:
        return [f"{label}: TorchScript file format {found}, image {version}'s libtorch reads <= "
                f"{TORCHSCRIPT_MAX_FILE_FORMAT}: export with an older torch"]
    return []


def installed_dali() -> str:
    """The DALI that serialized this environment's pipelines (``model.dali`` records none itself)."""
    from nvidia.dali import __version__

    return __version__


def dali_problems(path: Path, label: str, version: str) -> list[str]:
    writer = installed_dali()
    readable_in = [name for name, candidate in IMAGES.items() if _reads_dali(candidate.dali, writer)]
    if version in readable_in:
        return []
    return [f"{label}: serialized by DALI {writer} (this environment's; the file records none), image {version} "
            f"ships DALI {image(version).dali}, not measured to read it: choose --triton-version "
            f"{' or '.join(readable_in) or '(none measured)'}"]


def _reads_dali(reader: str, writer: str) -> bool:
    return reader == writer or reader in DALI_MEASURED_READERS.get(writer, ())


PROBLEMS_BY_FILE = {"model.onnx": onnx_problems, "model.pt": torchscript_problems, "model.dali": dali_problems}


def artifact_problems(version_dir: Path, artifacts: list[str], label: str, version: str) -> list[str]:
    """One line per artifact of one model version that the image's runtimes cannot read."""
    problems = []
    for artifact in artifacts:
        check = PROBLEMS_BY_FILE.get(artifact)
        if check and (version_dir / artifact).is_file():
            problems += check(version_dir / artifact, f"{label}/{artifact}", version)
    return problems


def is_cpu_runner(config) -> bool:
    """The cpu target: a python-backend runner executes a native backend's artifact."""
    return config.backend == "python" and "artifact" in config.parameters
