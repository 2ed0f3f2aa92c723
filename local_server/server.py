"""Run the tritonserver binary shipped in the nvidia-pytriton wheel, without Docker.

The wheel carries the server, its shared libraries and one python-backend stub per
Python version; the server expects the stub inside ``<backend-directory>/python/``,
so a backend directory is assembled once per virtual environment. Every listener binds
to one address, 127.0.0.1 unless the caller chooses another.
"""
from __future__ import annotations

import ipaddress
import os
import secrets
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

from local_server.bind_shim import ADDRESS_VARIABLE, bind_shim
from local_server.errors import ServerError
from local_server.sagemaker_container import sagemaker_arguments

PYTRITON_DIR = Path(pytriton.__file__).parent
TRITON_BINARY = PYTRITON_DIR / "tritonserver" / "bin" / "tritonserver"
TRITON_LIBS = PYTRITON_DIR.parent / "nvidia_pytriton.libs"
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
BACKEND_DIR = Path(sys.prefix) / "var" / "triton-backends"

DEFAULT_READY_TIMEOUT_S = 180.0
LOOPBACK = "127.0.0.1"
MODEL_CONTROL_MODES = ("none", "poll", "explicit")
# The header Triton checks on the model-repository API when it is restricted (HTTP); gRPC
# clients send it as metadata with Triton's "triton-grpc-protocol-" prefix.
MODEL_CONTROL_HEADER = "triton-model-control-key"
GRPC_MODEL_CONTROL_HEADER = f"triton-grpc-protocol-{MODEL_CONTROL_HEADER}"
MODEL_CONTROL_KEY_VARIABLE = "TRITON_MODEL_CONTROL_KEY"


def model_control_headers() -> dict[str, str]:
    """Headers for load/unload requests: the server's key if $TRITON_MODEL_CONTROL_KEY holds one."""
    key = os.environ.get(MODEL_CONTROL_KEY_VARIABLE)
    return {MODEL_CONTROL_HEADER: key} if key else {}


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


def free_port(address: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def check_port_free(port: int, purpose: str, address: str = LOOPBACK) -> None:
    """Refuse a port another socket holds; a TIME_WAIT left by a server that just died is free.

    With SO_REUSEADDR (tritonserver's listeners bind over a TIME_WAIT too) the bind passes
    over connections in TIME_WAIT but still fails on a listening socket.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            raise ServerError(f"{purpose} port {port} is already in use on {address} ({exc.strerror}); "
                              f"choose another port or stop the process holding it") from None


def checked_address(address: str) -> ipaddress.IPv4Address:
    """The listeners' address: an IPv4 literal, as Triton's --*-address flags take it."""
    try:
        return ipaddress.IPv4Address(address)
    except ValueError:
        raise ServerError(f"address {address!r} is not an IPv4 address (e.g. 127.0.0.1, or 0.0.0.0 for "
                          "every interface)") from None


def last_flag_value(command: list[str], flag: str) -> str | None:
    """The value tritonserver uses for ``flag``: the last one given wins."""
    values = [arg.split("=", 1)[1] for arg in command if arg.startswith(f"{flag}=")]
    return values[-1] if values else None


@dataclass
class TritonServer:
    """One tritonserver process on a model repository.

    Every listener binds to ``address`` (loopback unless the caller chooses another);
    ports left as None are picked free there. ``sagemaker_mode`` starts the server the way
    SageMaker's Triton container does (SageMaker frontend only, explicit model control);
    otherwise HTTP, gRPC and metrics are served, plus the SageMaker routes when
    ``sagemaker_default_model`` is given. ``model_control_mode`` None keeps Triton's default
    ("none"); "explicit" loads every model at start-up, and then load/unload requests work.
    Explicit model control off loopback needs ``allow_remote_model_control``, and then the
    model-repository API asks for ``model_control_key`` (random per run unless given).
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
    address: str = LOOPBACK
    model_control_mode: str | None = None
    allow_remote_model_control: bool = False
    model_control_key: str | None = None
    process: subprocess.Popen | None = field(default=None, init=False)
    stopped_on_purpose: bool = field(default=False, init=False)  # by stop(): a supervisor leaves it down
    starts: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.repository = Path(self.repository).resolve()
        self._ip = checked_address(self.address)
        if self.model_control_mode not in (None, *MODEL_CONTROL_MODES):
            raise ServerError(f"model control mode {self.model_control_mode!r} is not one of "
                              f"{', '.join(MODEL_CONTROL_MODES)}")
        if self.sagemaker_mode and self.model_control_mode not in (None, "explicit"):
            raise ServerError("SageMaker's container always uses explicit model control; "
                              f"model control mode {self.model_control_mode!r} does not apply")
        self._check_model_control_exposure()
        if self.log_path is None:
            self.log_path = Path(tempfile.mkdtemp(prefix="tritonserver-")) / "server.log"

    # -- addresses -------------------------------------------------------------------
    @property
    def host(self) -> str:
        """Where clients reach the server: the bound address, or loopback for 0.0.0.0."""
        return LOOPBACK if self._ip.is_unspecified else self.address

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def sagemaker_url(self) -> str:
        return f"http://{self.host}:{self.sagemaker_port}"

    # -- life cycle ------------------------------------------------------------------
    def command(self) -> list[str]:
        base = [str(TRITON_BINARY), f"--backend-directory={backend_directory()}", "--exit-timeout-secs=10",
                f"--http-address={self.address}", f"--grpc-address={self.address}",
                f"--metrics-address={self.address}"]
        if self.sagemaker_mode:
            args = sagemaker_arguments(self.repository, self._environment())
        else:
            args = [f"--model-repository={self.repository}", f"--http-port={self.http_port}",
                    f"--grpc-port={self.grpc_port}", f"--metrics-port={self.metrics_port}"]
            if self.sagemaker_default_model:
                args += ["--allow-sagemaker=true", f"--sagemaker-port={self.sagemaker_port}"]
            if self.model_control_mode:
                args.append(f"--model-control-mode={self.model_control_mode}")
            if self.model_control_mode == "explicit":
                args.append("--load-model=*")  # the same models as without model control
        return base + args + self.extra_args + self._restricted_api_flags()

    def _extra_arg_sets(self, flag: str, value: str) -> bool:
        return last_flag_value(self.extra_args, flag) == value

    def _check_model_control_exposure(self) -> None:
        """Loading a python-backend model runs its code: off loopback that needs a second yes."""
        explicit = (self.sagemaker_mode or self.model_control_mode == "explicit"
                    or self._extra_arg_sets("--model-control-mode", "explicit"))
        if self._ip.is_loopback or not explicit:
            return
        if self.sagemaker_mode or self.sagemaker_default_model or self._extra_arg_sets("--allow-sagemaker", "true"):
            raise ServerError(f"explicit model control with the SageMaker routes on {self.address}: Triton's "
                              "SageMaker frontend loads any folder on POST /models and cannot ask for a key; "
                              f"serve it on {LOOPBACK}")
        if not self.allow_remote_model_control:
            raise ServerError(f"explicit model control on {self.address} would let anyone who reaches it load "
                              "a python-backend model, i.e. run code on this machine; serve on "
                              f"{LOOPBACK}, or pass --allow-remote-model-control to protect the "
                              "model-repository API with a per-run key")
        if self.model_control_key is None:
            self.model_control_key = secrets.token_hex(16)

    def _restricted_api_flags(self) -> list[str]:
        if self.model_control_key is None:
            return []
        setting = f"model-repository:{MODEL_CONTROL_HEADER}={self.model_control_key}"
        return [f"--http-restricted-api={setting}", f"--grpc-restricted-protocol={setting}"]

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

    def _bind_shim_environment(self, command: list[str]) -> dict[str, str]:
        """LD_PRELOAD the bind() shim where the SageMaker frontend (no address option) would bind 0.0.0.0."""
        if self._ip.is_unspecified or last_flag_value(command, "--allow-sagemaker") != "true":
            return {}
        preload = " ".join(filter(None, [str(bind_shim()), os.environ.get("LD_PRELOAD")]))
        return {"LD_PRELOAD": preload, ADDRESS_VARIABLE: self.address}

    def _listeners(self) -> dict[str, str]:
        """What the server listens on -> the attribute holding its port."""
        wanted = {"http": "http_port", "grpc": "grpc_port", "metrics": "metrics_port", "SageMaker": "sagemaker_port"}
        if self.sagemaker_mode:
            wanted = {"SageMaker": "sagemaker_port"}
        elif not self.sagemaker_default_model:
            wanted.pop("SageMaker")
        return wanted

    def _assign_ports(self) -> None:
        for purpose, attr in self._listeners().items():
            port = getattr(self, attr)
            if port is None:
                setattr(self, attr, free_port(self.address))
            else:
                check_port_free(port, purpose, self.address)

    def start(self, timeout_s: float = DEFAULT_READY_TIMEOUT_S) -> "TritonServer":
        if not self.repository.is_dir():
            raise ServerError(f"model repository {self.repository} does not exist; build it first")
        self.stopped_on_purpose = False
        return self._launch(timeout_s)

    def start_again(self, timeout_s: float = DEFAULT_READY_TIMEOUT_S) -> "TritonServer":
        """Start a replacement on the same ports, logging to a new file next to the first one.

        Unlike ``start`` it keeps ``stopped_on_purpose``: a stop() during a restart wins.
        """
        first = self.log_path.with_name(self.log_path.name.split(".restart-")[0])
        self.log_path = first.with_name(f"{first.name}.restart-{self.starts}")
        return self._launch(timeout_s)

    def _launch(self, timeout_s: float) -> "TritonServer":
        self._assign_ports()
        command = self.command()
        environment = self._environment() | self._bind_shim_environment(command)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        output = None if self.stream_log else open(self.log_path, "wb")
        # Run beside its log: a crashing python-backend stub writes its core (hundreds of MB) to the
        # working directory, which belongs with the log, not in the caller's checkout.
        self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=environment,
                                        start_new_session=True, cwd=self.log_path.parent)
        if output is not None:
            output.close()
        self.starts += 1
        self._wait_ready(timeout_s)
        return self

    def ready_url(self) -> str:
        if self.sagemaker_mode:
            return f"{self.sagemaker_url}/ping"
        return f"http://{self.http_url}/v2/health/ready"

    def health_url(self) -> str:
        """What a watchdog asks: SageMaker's /ping, else liveness (readiness also fails while a model loads)."""
        if self.sagemaker_mode:
            return f"{self.sagemaker_url}/ping"
        return f"http://{self.http_url}/v2/health/live"

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"tritonserver exited with code {self.process.returncode} before it was "
                                  f"ready{self.load_failures()}; log {self.log_path}:\n{self.log_tail(15)}")
            try:
                with urllib.request.urlopen(self.ready_url(), timeout=2) as response:
                    if response.status == 200 and self._all_listening():
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        self._terminate()
        raise ServerError(f"tritonserver was not ready after {timeout_s:.0f} s; log {self.log_path}:\n{self.log_tail()}")

    def _all_listening(self) -> bool:
        """Triton reports ready over HTTP before its SageMaker and metrics listeners are up."""
        for attr in self._listeners().values():
            try:
                socket.create_connection((self.host, getattr(self, attr)), timeout=2).close()
            except OSError:
                return False
        return True

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the server by process id, then kill its process group if it lingers."""
        self.stopped_on_purpose = True
        self._terminate(timeout_s)

    def _terminate(self, timeout_s: float = 30.0) -> None:
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
