"""Run the tritonserver binary shipped in the nvidia-pytriton wheel, without Docker.

The wheel carries the server, its shared libraries and one python-backend stub per
Python version; the server expects the stub inside ``<backend-directory>/python/``,
so a backend directory is assembled once per virtual environment.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytriton

PYTRITON_DIR = Path(pytriton.__file__).parent
TRITON_BINARY = PYTRITON_DIR / "tritonserver" / "bin" / "tritonserver"
TRITON_LIBS = PYTRITON_DIR.parent / "nvidia_pytriton.libs"
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
BACKEND_DIR = Path(sys.prefix) / "var" / "triton-backends"

# SageMaker's Triton container: the repository it extracts model.tar.gz into.
SAGEMAKER_DEFAULT_PORT = 8080
DEFAULT_READY_TIMEOUT_S = 180.0


class ServerError(RuntimeError):
    """The server could not be started, or stopped serving."""


def backend_directory() -> Path:
    """The python backend plus this interpreter's stub, laid out as tritonserver expects."""
    stub = PYTRITON_DIR / "tritonserver" / "python_backend_stubs" / PYTHON_VERSION / "triton_python_backend_stub"
    if not stub.exists():
        raise ServerError(f"nvidia-pytriton ships no python backend stub for Python {PYTHON_VERSION}")
    target = BACKEND_DIR / "python"
    if not (target / stub.name).exists():
        shutil.copytree(PYTRITON_DIR / "tritonserver" / "backends" / "python", target, dirs_exist_ok=True)
        shutil.copy2(stub, target / stub.name)
    return BACKEND_DIR


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_port_free(port: int, purpose: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as exc:
            raise ServerError(f"{purpose} port {port} is already in use ({exc.strerror}); "
                              f"choose another port or stop the process holding it") from None


def sagemaker_arguments(model_dir: Path, env: dict[str, str]) -> list[str]:
    """The tritonserver arguments SageMaker's Triton container derives from its environment.

    Mirrors the container's start-up rules for a single-model endpoint: explicit model
    control, only the default model loaded, SageMaker frontend only.
    """
    if (model_dir / "config.pbtxt").exists():
        raise ServerError(f"{model_dir} has a config.pbtxt at its top level: SageMaker needs "
                          "model folders at the archive root, not a single model's folder")
    args = ["--allow-sagemaker=true", "--allow-grpc=false", "--allow-http=false",
            "--allow-metrics=false", "--model-control-mode=explicit",
            f"--model-repository={model_dir}",
            f"--model-namespacing={env.get('SAGEMAKER_TRITON_DISABLE_MODEL_NAMESPACING', 'true')}"]
    optional = {
        "SAGEMAKER_BIND_TO_PORT": "--sagemaker-port",
        "SAGEMAKER_SAFE_PORT_RANGE": "--sagemaker-safe-port-range",
        "SAGEMAKER_TRITON_BUFFER_MANAGER_THREAD_COUNT": "--buffer-manager-thread-count",
        "SAGEMAKER_TRITON_THREAD_COUNT": "--sagemaker-thread-count",
        "SAGEMAKER_TRITON_LOG_INFO": "--log-info",
        "SAGEMAKER_TRITON_LOG_WARNING": "--log-warning",
        "SAGEMAKER_TRITON_LOG_ERROR": "--log-error",
    }
    args += [f"{flag}={env[name]}" for name, flag in optional.items() if env.get(name)]
    args.append(f"--log-verbose={env.get('SAGEMAKER_TRITON_LOG_VERBOSE', 'true')}")
    shm_default = env.get("SAGEMAKER_TRITON_SHM_DEFAULT_BYTE_SIZE", "16777216")
    shm_growth = env.get("SAGEMAKER_TRITON_SHM_GROWTH_BYTE_SIZE", "1048576")
    args += [f"--backend-config=python,shm-default-byte-size={shm_default}",
             f"--backend-config=python,shm-growth-byte-size={shm_growth}"]
    args.append(f"--load-model={sagemaker_default_model(model_dir, env)}")
    args += env.get("SAGEMAKER_TRITON_ADDITIONAL_ARGS", "").split()
    return args


def sagemaker_default_model(model_dir: Path, env: dict[str, str]) -> str:
    name = env.get("SAGEMAKER_TRITON_DEFAULT_MODEL_NAME")
    if name:
        if not (model_dir / name).is_dir():
            raise ServerError(f"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME={name} but {model_dir / name} does not exist")
        return name
    folders = sorted(p.name for p in model_dir.iterdir() if p.is_dir())
    if len(folders) != 1:
        raise ServerError(f"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME is not set and {model_dir} holds "
                          f"{len(folders)} model folders ({', '.join(folders) or 'none'}); set it")
    return folders[0]


@dataclass
class TritonServer:
    """One tritonserver process on a model repository.

    Ports left as None are picked free on loopback. ``sagemaker_mode`` starts the server
    the way SageMaker's Triton container does (SageMaker frontend only, explicit model
    control); otherwise HTTP, gRPC and metrics are served, plus the SageMaker routes when
    ``sagemaker_default_model`` is given.
    """

    repository: Path
    http_port: int | None = None
    grpc_port: int | None = None
    metrics_port: int | None = None
    sagemaker_port: int | None = None
    sagemaker_default_model: str | None = None
    sagemaker_mode: bool = False
    sagemaker_env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    stream_log: bool = False
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.repository = Path(self.repository).resolve()
        if self.log_path is None:
            self.log_path = Path(tempfile.mkdtemp(prefix="tritonserver-")) / "server.log"

    # -- addresses -------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def sagemaker_url(self) -> str:
        return f"http://127.0.0.1:{self.sagemaker_port}"

    # -- life cycle ------------------------------------------------------------------
    def command(self) -> list[str]:
        base = [str(TRITON_BINARY), f"--backend-directory={backend_directory()}", "--exit-timeout-secs=10"]
        if self.sagemaker_mode:
            return base + sagemaker_arguments(self.repository, self._environment()) + self.extra_args
        args = [f"--model-repository={self.repository}", f"--http-port={self.http_port}",
                f"--grpc-port={self.grpc_port}", f"--metrics-port={self.metrics_port}"]
        if self.sagemaker_default_model:
            args += ["--allow-sagemaker=true", f"--sagemaker-port={self.sagemaker_port}"]
        return base + args + self.extra_args

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # The python backend imports packages from the environment first on PATH.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["LD_LIBRARY_PATH"] = f"{TRITON_LIBS}{os.pathsep}{env.get('LD_LIBRARY_PATH', '')}"
        env.update(self.sagemaker_env)
        if self.sagemaker_default_model:
            env["SAGEMAKER_TRITON_DEFAULT_MODEL_NAME"] = self.sagemaker_default_model
        if self.sagemaker_mode:
            env["SAGEMAKER_BIND_TO_PORT"] = str(self.sagemaker_port)
        return env

    def _assign_ports(self) -> None:
        wanted = {"http": "http_port", "grpc": "grpc_port", "metrics": "metrics_port", "SageMaker": "sagemaker_port"}
        if self.sagemaker_mode:
            wanted = {"SageMaker": "sagemaker_port"}
        elif not self.sagemaker_default_model:
            wanted.pop("SageMaker")
        for purpose, attr in wanted.items():
            port = getattr(self, attr)
            if port is None:
                setattr(self, attr, free_port())
            else:
                check_port_free(port, purpose)

    def start(self, timeout_s: float = DEFAULT_READY_TIMEOUT_S) -> "TritonServer":
        if not self.repository.is_dir():
            raise ServerError(f"model repository {self.repository} does not exist; build it first")
        self._assign_ports()
        command = self.command()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        output = None if self.stream_log else open(self.log_path, "wb")
        self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                        env=self._environment(), start_new_session=True)
        if output is not None:
            output.close()
        self._wait_ready(timeout_s)
        return self

    def _ready_url(self) -> str:
        if self.sagemaker_mode:
            return f"{self.sagemaker_url}/ping"
        return f"http://{self.http_url}/v2/health/ready"

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"tritonserver exited with code {self.process.returncode} before it was "
                                  f"ready{self.load_failures()}; log {self.log_path}:\n{self.log_tail(15)}")
            try:
                with urllib.request.urlopen(self._ready_url(), timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        self.stop()
        raise ServerError(f"tritonserver was not ready after {timeout_s:.0f} s; log {self.log_path}:\n{self.log_tail()}")

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the server by process id, then kill its process group if it lingers."""
        if not self.is_running():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def load_failures(self) -> str:
        """The server's own "failed to load" errors, which a log tail may have scrolled past."""
        if self.stream_log or not self.log_path.exists():
            return ""
        failures = [line.split('] "', 1)[-1].rstrip('"') for line in self.log_path.read_text(errors="replace")
                    .splitlines() if line.startswith("E") and "failed to load '" in line]
        return "".join(f"\n  {failure}" for failure in failures)

    def log_tail(self, lines: int = 40) -> str:
        if self.stream_log or not self.log_path.exists():
            return "(log streamed to the console)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
