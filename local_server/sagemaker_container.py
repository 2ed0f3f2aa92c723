"""How SageMaker's Triton container turns its environment into tritonserver arguments.

Kept apart from the process management in ``local_server.server`` so that the rules of
the container's start-up script live in one place. The rules are those of the ``serve``
script in github.com/triton-inference-server/server, ``docker/sagemaker/serve`` at tag
v2.69.0 (release r26.05, the deploy default image; commit 34ca83e780bff7829b33d922fa9d16a0628e050c).
The 24.09 image's script (v2.50.0) is the same less SAGEMAKER_TRITON_INFERENCE_TYPE.
docs/sagemaker-serve-variables.md has the table.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from local_server.errors import ServerError

SAGEMAKER_DEFAULT_PORT = 8080
INFERENCE_TYPES = ("infer", "generate", "generate_stream")  # the script refuses any other value

# variable -> (flag it becomes, the script's default when the variable is unset or empty)
SERVE_FLAGS: dict[str, tuple[str, str | None]] = {
    "SAGEMAKER_TRITON_DISABLE_MODEL_NAMESPACING": ("--model-namespacing={}", "true"),  # the value is passed as is
    "SAGEMAKER_BIND_TO_PORT": ("--sagemaker-port={}", None),
    "SAGEMAKER_SAFE_PORT_RANGE": ("--sagemaker-safe-port-range={}", None),
    "SAGEMAKER_TRITON_ALLOW_GRPC": ("--allow-grpc={}", "false"),
    "SAGEMAKER_TRITON_ALLOW_METRICS": ("--allow-metrics={}", "false"),
    "SAGEMAKER_TRITON_METRICS_PORT": ("--metrics-port={}", None),
    "SAGEMAKER_TRITON_GRPC_PORT": ("--grpc-port={}", None),
    "SAGEMAKER_TRITON_BUFFER_MANAGER_THREAD_COUNT": ("--buffer-manager-thread-count={}", None),
    "SAGEMAKER_TRITON_THREAD_COUNT": ("--sagemaker-thread-count={}", None),
    "SAGEMAKER_TRITON_LOG_VERBOSE": ("--log-verbose={}", "true"),
    "SAGEMAKER_TRITON_LOG_INFO": ("--log-info={}", None),
    "SAGEMAKER_TRITON_LOG_WARNING": ("--log-warning={}", None),
    "SAGEMAKER_TRITON_LOG_ERROR": ("--log-error={}", None),
    "SAGEMAKER_TRITON_SHM_DEFAULT_BYTE_SIZE": ("--backend-config=python,shm-default-byte-size={}", "16777216"),
    "SAGEMAKER_TRITON_SHM_GROWTH_BYTE_SIZE": ("--backend-config=python,shm-growth-byte-size={}", "1048576"),
    "SAGEMAKER_TRITON_TENSORFLOW_VERSION": ("--backend-config=tensorflow,version={}", None),
}


def _set(env: dict[str, str], name: str) -> str:
    """The script tests variables with ``[ -n "$NAME" ]``: empty counts as unset."""
    return env.get(name) or ""


def multi_model(env: dict[str, str]) -> bool:
    return _set(env, "SAGEMAKER_MULTI_MODEL") == "true"


def multi_model_repository() -> Path:
    """The script's placeholder repository in multi-model mode (models arrive through POST /models)."""
    placeholder = Path(tempfile.gettempdir()) / "sagemaker"
    placeholder.mkdir(exist_ok=True)
    return placeholder


def gpu_count() -> int:
    """What ``nvidia-smi -L | wc -l`` counts: 0 where there is no nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return 0
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
    return len(listing.splitlines())


def sagemaker_arguments(model_dir: Path, env: dict[str, str], gpus: int | None = None) -> list[str]:
    """The tritonserver arguments SageMaker's Triton container derives from its environment.

    ``gpus`` stands for the script's ``nvidia-smi -L`` count (None: count them here).
    """
    model_dir = Path(model_dir)
    repository = multi_model_repository() if multi_model(env) else model_dir
    args = ["--allow-sagemaker=true", "--allow-http=false", "--model-control-mode=explicit",
            f"--model-repository={repository}"]
    for name, (flag, default) in SERVE_FLAGS.items():
        value = _set(env, name) or default
        if value:
            args.append(flag.format(value))
    limit = _set(env, "SAGEMAKER_TRITON_MODEL_LOAD_GPU_LIMIT")
    if limit:
        for device in range(gpu_count() if gpus is None else gpus):
            args += ["--model-load-gpu-limit", f"{device}:{limit}"]
    args += _set(env, "SAGEMAKER_TRITON_ADDITIONAL_ARGS").split()
    if not multi_model(env) and (model_dir / "config.pbtxt").exists():
        raise ServerError(f"{model_dir} has a config.pbtxt at its top level: SageMaker needs "
                          "model folders at the archive root, not a single model's folder")
    check_inference_type(env)
    if not multi_model(env):
        args.append(f"--load-model={sagemaker_default_model(model_dir, env)}")
    return args


def check_inference_type(env: dict[str, str]) -> None:
    """SAGEMAKER_TRITON_INFERENCE_TYPE is read by tritonserver (>= 2.56) itself; the script only checks it."""
    inference_type = _set(env, "SAGEMAKER_TRITON_INFERENCE_TYPE")
    if inference_type and inference_type not in INFERENCE_TYPES:
        raise ServerError(f"Invalid SAGEMAKER_TRITON_INFERENCE_TYPE '{inference_type}': must be one of "
                          f"{', '.join(INFERENCE_TYPES)}")


def sagemaker_environment(model_dir: Path, env: dict[str, str]) -> dict[str, str]:
    """The environment tritonserver sees after the script ran (it reads two variables itself).

    The script exports the default model when it picked the only folder. It sets
    SAGEMAKER_TRITON_PING_MODE (OVERRIDE_PING_MODE, else "live" in multi-model mode, else
    "ready") without exporting it: tritonserver sees that value only where the variable was
    already in the container's environment, and otherwise its own default, "ready".
    """
    seen = dict(env)
    if "SAGEMAKER_TRITON_PING_MODE" in env:
        seen["SAGEMAKER_TRITON_PING_MODE"] = (_set(env, "SAGEMAKER_TRITON_OVERRIDE_PING_MODE")
                                              or ("live" if multi_model(env) else "ready"))
    if not multi_model(env):
        seen["SAGEMAKER_TRITON_DEFAULT_MODEL_NAME"] = sagemaker_default_model(Path(model_dir), env)
    return seen


def sagemaker_default_model(model_dir: Path, env: dict[str, str]) -> str:
    name = _set(env, "SAGEMAKER_TRITON_DEFAULT_MODEL_NAME")
    if name:
        if not (model_dir / name).is_dir():
            raise ServerError(f"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME={name} but {model_dir / name} does not exist")
        return name
    folders = sorted(p.name for p in model_dir.iterdir() if p.is_dir())
    if len(folders) != 1:
        raise ServerError(f"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME is not set and {model_dir} holds "
                          f"{len(folders)} model folders ({', '.join(folders) or 'none'}); set it")
    return folders[0]
