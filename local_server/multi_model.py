"""SageMaker's part of a multi-model endpoint, played in front of a Triton container.

On a multi-model endpoint each request names an archive (``TargetModel``). SageMaker
loads an archive on its first request: it fetches it from the model's S3 prefix,
extracts it under ``/opt/ml/models/<hash>/model`` and asks the container to load it
(``POST /models`` with ``model_name`` = the hash and ``url`` = that folder); then it
invokes ``POST /models/<hash>/invoke``; under memory pressure it unloads the least
recently used archive (``DELETE /models/<hash>``). The header
``X-Amzn-SageMaker-Target-Model`` goes with all three (Triton's ``sagemaker_server.cc``
names the ensemble after it). ``MultiModelHost`` does the same against a local
container, keeping at most ``max_loaded`` archives, and checks each archive before
loading it so that a bad one gets a clear 4xx answer and leaves nothing behind.

A cold load that takes longer than ``ready_wait_s`` (SageMaker: 60 s) is answered as SageMaker
answers it, ``429 ModelNotReadyException``, while the load goes on; the client retries
(``sagemaker_deploy.runtime.invoke_until_ready``) and is served once the archive is loaded.
"""
from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import threading
import time
import zlib
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import requests

from local_server.endpoint_route import EndpointRoute
from local_server.invocation import TARGET_HEADER, Answer, InvocationError
from local_server.server import TritonServer
from sagemaker_deploy.multi_model import check_extracted, check_target_name
from sagemaker_deploy.package import PackageError

LOAD_TIMEOUT_S = 360  # the container's own limit on a load or an unload (Triton's sagemaker_server.cc)
# InvokeEndpoint, Errors: ModelNotReadyException (HTTP 429) "Either a serverless endpoint variant's resources
# are still being provisioned, or a multi-model endpoint is still downloading or loading the target model.
# Wait and try your request again." A request waits this long for a cold load before that answer.
READY_WAIT_S = 60.0
NOT_READY = "ModelNotReadyException"


@dataclass
class LoadedArchive:
    target: str
    name_hash: str
    folder: Path  # .../<hash>: removed when the archive is unloaded
    models: dict[str, str]  # model name -> digest of its folder
    in_flight: int = 0
    load_seconds: float = 0.0


@dataclass
class MultiModelHost:
    """Loads archives into a multi-model container on first use and unloads the least recently used.

    ``fetch(target) -> bytes`` returns an archive, or raises KeyError when there is none.
    """

    container_url: str
    fetch: Callable[[str], bytes]
    workdir: Path
    max_loaded: int = 2
    ready_wait_s: float = READY_WAIT_S  # then 429 ModelNotReadyException, the load going on
    events: list[str] = field(default_factory=list)  # "load X", "unload X": what happened, in order
    _loaded: "OrderedDict[str, LoadedArchive]" = field(default_factory=OrderedDict, init=False)
    _state: threading.Condition = field(default_factory=threading.Condition, init=False)
    _loading: threading.Lock = field(default_factory=threading.Lock, init=False)
    _pending: dict[str, Future] = field(default_factory=dict, init=False)  # target -> its load under way
    _loader: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "archive-load"), init=False)

    def __post_init__(self) -> None:
        if self.max_loaded < 1:
            raise ValueError(f"max_loaded must be at least 1, not {self.max_loaded}")
        self.workdir = Path(self.workdir)

    # -- what a caller uses ------------------------------------------------------------
    def loaded(self) -> list[str]:
        """The loaded archives, least recently used first."""
        with self._state:
            return list(self._loaded)

    def invoke(self, target: str, body: bytes, content_type: str) -> Answer:
        """Load ``target`` if needed, then run one request on it."""
        try:
            check_target_name(target)
        except PackageError as error:
            raise InvocationError(400, "ValidationError", str(error)) from None
        archive = self._acquire(target)
        try:
            response = requests.post(f"{self.container_url}/models/{archive.name_hash}/invoke", data=body,
                                     headers={"Content-Type": content_type, TARGET_HEADER: target},
                                     timeout=LOAD_TIMEOUT_S)
        finally:
            self._release(archive)
        if response.status_code != 200:
            raise InvocationError(424, "ModelError", f"Received client error ({response.status_code}) from "
                                  f"primary with message \"{response.text}\" for TargetModel {target}.")
        return Answer(200, response.headers.get("Content-Type", ""), response.content)

    def unload_all(self) -> None:
        with self._loading:
            for target in self.loaded():
                self._unload(self._loaded[target])

    # -- loading and eviction ------------------------------------------------------------
    def _acquire(self, target: str) -> LoadedArchive:
        """The loaded archive, in use; a cold one is loaded (one load at a time) for up to ``ready_wait_s``."""
        while True:
            with self._state:
                if target in self._loaded:
                    return self._use(target)
                loading = self._pending.get(target)
                if loading is None:
                    loading = self._pending[target] = self._loader.submit(self._load_and_keep, target)
            try:
                loading.result(timeout=self.ready_wait_s)  # a failed load raises its InvocationError here
            except FutureTimeout:
                raise InvocationError(429, NOT_READY, f"TargetModel {target} is still loading (over "
                                      f"{self.ready_wait_s:g} s so far); wait and try the request again") from None

    def _load_and_keep(self, target: str) -> None:
        try:
            with self._loading:
                archive = self._load(target)
            with self._state:
                self._loaded[target] = archive
        finally:
            with self._state:
                self._pending.pop(target, None)

    def _use(self, target: str) -> LoadedArchive:
        archive = self._loaded[target]
        self._loaded.move_to_end(target)
        archive.in_flight += 1
        return archive

    def _release(self, archive: LoadedArchive) -> None:
        with self._state:
            archive.in_flight -= 1
            self._state.notify_all()

    def _load(self, target: str) -> LoadedArchive:
        started = time.monotonic()
        name_hash = hashlib.sha256(target.encode()).hexdigest()[:32]
        folder = self.workdir / "models" / name_hash
        try:
            models = self._extract(target, folder / "model")
            self._make_room()
            self._post_load(target, name_hash, folder / "model")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self.events.append(f"load {target}")
        return LoadedArchive(target, name_hash, folder, models, load_seconds=time.monotonic() - started)

    def _extract(self, target: str, model_dir: Path) -> dict[str, str]:
        try:
            data = self.fetch(target)
        except KeyError:
            raise InvocationError(400, "ValidationError", f"TargetModel {target} does not exist under this "
                                  "endpoint's model data prefix") from None
        shutil.rmtree(model_dir.parent, ignore_errors=True)
        model_dir.mkdir(parents=True)
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
                archive.extractall(model_dir, filter="data")  # refuses absolute paths and ../ members
            _, models = check_extracted(model_dir, target)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
            raise InvocationError(400, "ValidationError", f"TargetModel {target} is not a readable .tar.gz "
                                  f"archive (corrupt or truncated): {error}") from None
        except PackageError as error:
            raise InvocationError(400, "ValidationError", str(error)) from None
        self._refuse_conflicts(target, models)
        return models

    def _refuse_conflicts(self, target: str, models: dict[str, str]) -> None:
        """Plain model names address BLS calls: two different definitions behind one name are ambiguous."""
        with self._state:
            for other in self._loaded.values():
                clashes = sorted(name for name, digest in models.items()
                                 if name in other.models and other.models[name] != digest)
                if clashes:
                    raise InvocationError(409, "ValidationError", f"TargetModel {target} defines "
                                          f"{', '.join(clashes)} differently from the loaded {other.target}; "
                                          "give the models of different pipelines different names")

    def _make_room(self) -> None:
        """Unload least recently used archives that serve no request until one more fits."""
        while True:
            with self._state:
                if len(self._loaded) < self.max_loaded:
                    return
                idle = [archive for archive in self._loaded.values() if archive.in_flight == 0]
                if not idle:
                    self._state.wait(timeout=1.0)
                    continue
                victim = idle[0]
                del self._loaded[victim.target]
            self._unload(victim)

    def _post_load(self, target: str, name_hash: str, model_dir: Path) -> None:
        response = requests.post(f"{self.container_url}/models", json={"model_name": name_hash, "url": str(model_dir)},
                                 headers={TARGET_HEADER: target}, timeout=LOAD_TIMEOUT_S)
        if response.status_code != 200:
            status = 507 if response.status_code == 507 else 424
            raise InvocationError(status, "ModelError", f"loading TargetModel {target} failed: the container "
                                  f"answered {response.status_code}: {_container_message(response)}")

    def _unload(self, archive: LoadedArchive) -> None:
        requests.delete(f"{self.container_url}/models/{archive.name_hash}", headers={TARGET_HEADER: archive.target},
                        timeout=LOAD_TIMEOUT_S)
        with self._state:
            self._loaded.pop(archive.target, None)
        shutil.rmtree(archive.folder, ignore_errors=True)
        self.events.append(f"unload {archive.target}")


def _container_message(response: requests.Response) -> str:
    try:
        return response.json().get("error", response.text)
    except ValueError:
        return response.text or "(no message)"


def folder_archives(folder: Path) -> Callable[[str], bytes]:
    """``fetch`` for archives in a local folder (the stand-in for the endpoint's S3 prefix)."""
    folder = Path(folder)

    def fetch(target: str) -> bytes:
        path = folder / target
        if not path.is_file():
            raise KeyError(target)
        return path.read_bytes()

    return fetch


class MultiModelEndpoint:
    """A local multi-model endpoint: a container started as SageMaker starts it with
    ``SAGEMAKER_MULTI_MODEL=true``, this host in front of it, and the runtime route
    ``/endpoints/<name>/invocations`` that boto3's ``invoke_endpoint(TargetModel=...)`` reaches.
    """

    def __init__(self, archives: Path, workdir: Path, name: str = "local", max_loaded: int = 2,
                 container_env: dict[str, str] | None = None, log_path: Path | None = None,
                 ready_wait_s: float = READY_WAIT_S):
        self.name, self.workdir = name, Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.container = TritonServer(self.workdir, sagemaker_mode=True, log_path=log_path,
                                      sagemaker_env={"SAGEMAKER_MULTI_MODEL": "true", **(container_env or {})})
        self.archives, self.max_loaded, self.ready_wait_s = Path(archives), max_loaded, ready_wait_s
        self.host: MultiModelHost | None = None
        self.route = EndpointRoute({})

    @property
    def url(self) -> str:
        return self.route.url

    def start(self) -> "MultiModelEndpoint":
        self.container.start()
        self.host = MultiModelHost(self.container.sagemaker_url, folder_archives(self.archives), self.workdir,
                                   self.max_loaded, ready_wait_s=self.ready_wait_s)
        self.route.endpoints[self.name] = self.host
        self.route.start()
        return self

    def stop(self) -> None:
        self.route.stop()
        self.container.stop()

    def __enter__(self) -> "MultiModelEndpoint":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
