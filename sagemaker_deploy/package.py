"""Check a built ``gpu`` repository and pack it as SageMaker's Triton container expects.

The archive holds the model folders at its root (the container refuses a top-level
``config.pbtxt``). The container starts Triton with explicit model control and loads
only ``SAGEMAKER_TRITON_DEFAULT_MODEL_NAME`` and the steps of its ensembles; a model
that a python step calls through BLS must be named in a ``bls_models`` config parameter
and is passed to the container with ``SAGEMAKER_TRITON_ADDITIONAL_ARGS``.
"""
from __future__ import annotations

import tarfile
from pathlib import Path

from google.protobuf import text_format

from builders.config import parse
from model_versions.repository import served_version
from sagemaker_deploy import compatibility

ARTIFACTS = {  # platform or backend -> file a version folder must hold
    "onnxruntime_onnx": "model.onnx", "pytorch_libtorch": "model.pt", "tensorflow_graphdef": "model.graphdef",
    "tensorrt_plan": "model.plan", "dali": "model.dali", "python": "model.py",
}
BLS_PARAMETER = "bls_models"


class PackageError(ValueError):
    """The repository cannot be served as asked; the message lists every problem found."""


def read_config(repository: Path, name: str):
    path = repository / name / "config.pbtxt"
    if not path.is_file():
        raise PackageError(f"model {name!r} is needed but {path} does not exist")
    try:
        return parse(path.read_text())
    except (UnicodeDecodeError, text_format.ParseError) as error:  # an archive's config may be anything
        raise PackageError(f"model {name!r}: {path} is not a model configuration: {error}") from None


def _with_steps(repository: Path, name: str) -> list[str]:
    """A model and, for an ensemble, its steps, recursively: what loading it loads."""
    models, pending = [], [name]
    while pending:
        current = pending.pop(0)
        if current not in models:
            models.append(current)
            pending += [step.model_name for step in read_config(repository, current).ensemble_scheduling.step]
    return models


def required_models(repository: Path, default_model: str) -> tuple[list[str], list[str], list[str]]:
    """(every model folder needed, the models the default model loads, BLS-only models to load explicitly)."""
    loaded = _with_steps(repository, default_model)
    needed, bls = list(loaded), []
    pending = [called for name in loaded for called in _bls_models(read_config(repository, name))]
    while pending:
        name = pending.pop(0)
        if name in needed:
            continue
        bls.append(name)
        for model in _with_steps(repository, name):
            if model not in needed:
                needed.append(model)
                pending += _bls_models(read_config(repository, model))
    return needed, loaded, bls


def _bls_models(config) -> list[str]:
    value = config.parameters[BLS_PARAMETER].string_value if BLS_PARAMETER in config.parameters else ""
    return [name.strip() for name in value.split(",") if name.strip()]


def check_repository(repository: Path, default_model: str, triton_version: str | None = None,
                     allow_cpu_target: bool = False) -> tuple[list[str], list[str]]:
    """Everything the default model needs is there, with its artifact; raises PackageError otherwise.

    With ``triton_version``, also every artifact against that image's runtimes, and the
    repository must be the gpu target unless ``allow_cpu_target`` (see compatibility.py).
    """
    repository = Path(repository)
    if triton_version is not None:
        try:
            compatibility.image(triton_version)  # an unknown version fails before anything else
        except compatibility.CompatibilityError as error:
            raise PackageError(str(error)) from None
    if (repository / "config.pbtxt").exists():
        raise PackageError(f"{repository} has a top-level config.pbtxt: point at the repository folder, "
                           "whose sub-folders are the models")
    needed, _, bls = required_models(repository, default_model)
    problems = []
    for name in needed:
        config = read_config(repository, name)
        versions = sorted(p for p in (repository / name).iterdir() if p.is_dir() and p.name.isdigit())
        if not versions:
            problems.append(f"{name}: no version folder (build the repository with python -m builders)")
            continue
        served = served_version(repository / name)  # a version_policy picks it, or the newest serves
        version_dir = versions[-1] if served is None else repository / name / str(served)
        artifacts = [ARTIFACTS.get(config.platform) or ARTIFACTS.get(config.backend)]
        if config.backend == "dali" and (version_dir / compatibility.DALI_AUTOSERIALIZED).is_file():
            artifacts = [compatibility.DALI_AUTOSERIALIZED]  # the backend serializes it at load time
        if "artifact" in config.parameters:  # what a python-backend runner executes
            artifacts.append(config.parameters["artifact"].string_value)
        problems += [f"{name}: {version_dir / artifact} is missing (the version it serves)" for artifact in artifacts
                     if artifact and not (version_dir / artifact).is_file()]
        if triton_version is not None:
            problems += compatibility.artifact_problems(version_dir, [a for a in artifacts if a],
                                                        f"{name}/{version_dir.name}", triton_version)
    if triton_version is not None and not allow_cpu_target:
        problems = _cpu_target_problem(repository, needed) + problems
    if problems:
        image = f" in Triton image {triton_version}" if triton_version else ""
        raise PackageError(f"the repository cannot serve {default_model}{image}:\n  " + "\n  ".join(problems))
    return needed, bls


def _cpu_target_problem(repository: Path, needed: list[str]) -> list[str]:
    runners = [name for name in needed if compatibility.is_cpu_runner(read_config(repository, name))]
    if not runners:
        return []
    return [f"{repository} is a --target cpu build ({', '.join(runners)} run through python runners); SageMaker's "
            "Triton image serves the gpu target: build it with python -m builders --target gpu, or pass "
            "--allow-cpu-target (allow_cpu_target=True) to deploy the python runners on purpose"]


def additional_args(bls_models: list[str]) -> str:
    """SAGEMAKER_TRITON_ADDITIONAL_ARGS that make explicit model control load the BLS-only models."""
    return " ".join(f"--load-model={name}" for name in bls_models)


def make_archive(repository: Path, default_model: str, archive: Path, triton_version: str | None = None,
                 allow_cpu_target: bool = False) -> tuple[list[str], list[str]]:
    """model.tar.gz with the needed model folders at its root; written under a temporary name first.

    Returns (the models packed, the BLS-only models for SAGEMAKER_TRITON_ADDITIONAL_ARGS).
    """
    needed, bls = check_repository(repository, default_model, triton_version, allow_cpu_target)
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(partial, "w:gz", compresslevel=1) as tar:  # weights hardly compress; save the time
        for name in needed:
            tar.add(Path(repository) / name, arcname=name)
    partial.replace(archive)
    return needed, bls
