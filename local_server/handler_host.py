"""A local host of the SageMaker inference toolkit's handler contract: a framework container, as a process.

SageMaker's framework images (PyTorch, scikit-learn, ...) serve ``code/inference.py`` from the
model archive with the SageMaker inference toolkit (github.com/aws/sagemaker-inference-toolkit,
``transformer.py``). This host keeps the same contract, so the same file runs here:

- ``model_fn(model_dir)`` once, before ``/ping`` answers 200;
- per ``POST /invocations``: ``input_fn(body, content_type)`` -> ``predict_fn(data, model)`` ->
  ``output_fn(prediction, accept)``; a body whose content type is ``application/json`` or
  ``text/csv`` is decoded as UTF-8 first; a missing or ``*/*`` Accept is
  ``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT`` (default ``application/json``); an answer given
  as ``(body, content_type)`` carries that type, a bare body the Accept type;
- an exception with a ``status_code`` (the toolkit's ``BaseInferenceToolkitError``) answers
  that status, any other exception 500; the body is the message, then the traceback;
- the port is ``SAGEMAKER_BIND_TO_PORT`` (SageMaker sets it for a pipeline's containers),
  default 8080, on 127.0.0.1.

    python -m local_server.handler_host MODEL_DIR     # MODEL_DIR/code/inference.py
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import traceback
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from local_server.errors import ServerError
from local_server.server import LOOPBACK, free_port

UTF8_TYPES = ("application/json", "text/csv")  # sagemaker_inference.content_types.UTF8_TYPES
DEFAULT_ACCEPT = "application/json"
DEFAULT_PORT = 8080
START_TIMEOUT_S = 60.0


def load_handlers(model_dir: Path):
    """The user module ``code/<SAGEMAKER_PROGRAM or inference.py>``, importable from its folder."""
    code = model_dir / "code"
    sys.path.insert(0, str(code))
    path = code / os.environ.get("SAGEMAKER_PROGRAM", "inference.py")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def transform(handlers, model, body: bytes, content_type: str, accept: str) -> tuple[int, str, bytes]:
    """(status, content type, body) of one invocation, by the toolkit's rules."""
    try:
        if not accept or accept == "*/*":
            accept = os.environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", DEFAULT_ACCEPT)
        data = body.decode("utf-8") if content_type in UTF8_TYPES else body
        result = handlers.output_fn(handlers.predict_fn(handlers.input_fn(data, content_type), model), accept)
        answer, answer_type = result if isinstance(result, tuple) else (result, accept)
        return 200, answer_type, answer if isinstance(answer, bytes) else str(answer).encode()
    except Exception as error:  # the toolkit answers every failure; only its own errors choose the status
        status = getattr(error, "status_code", 500)
        message = getattr(error, "message", str(error))
        return status, "text/plain", f"{message}\n{traceback.format_exc()}".encode()


def serve(model_dir: Path, port: int) -> None:
    handlers = load_handlers(model_dir)
    model = handlers.model_fn(str(model_dir))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self._reply(200 if self.path == "/ping" else 404, "text/plain", b"")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/invocations":
                return self._reply(404, "text/plain", b"")
            self._reply(*transform(handlers, model, body, self.headers.get("Content-Type", ""),
                                   self.headers.get("Accept", "")))

        def _reply(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    ThreadingHTTPServer((LOOPBACK, port), Handler).serve_forever()


class HandlerContainer:
    """One framework container: ``python -m local_server.handler_host`` with the container's environment."""

    def __init__(self, model_dir: Path, environment: dict[str, str], log_path: Path, port: int | None = None):
        self.model_dir, self.log_path = Path(model_dir), Path(log_path)
        self.port = port or free_port()
        self.environment = {**environment, "SAGEMAKER_BIND_TO_PORT": str(self.port)}
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> "HandlerContainer":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "local_server.handler_host", str(self.model_dir)],
                                            env={**os.environ, **self.environment}, stdout=log,
                                            stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent.parent)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            if self.pings():
                return self
            time.sleep(0.1)
        self.stop()
        raise ServerError(f"the container of {self.model_dir} did not answer /ping; log {self.log_path}:\n"
                          f"{self.log_path.read_text(errors='replace')[-2000:]}")

    def pings(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


if __name__ == "__main__":
    serve(Path(sys.argv[1]), int(os.environ.get("SAGEMAKER_BIND_TO_PORT", DEFAULT_PORT)))
