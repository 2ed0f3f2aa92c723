"""One cpu repository and one real tritonserver per test session."""
from __future__ import annotations

from pathlib import Path

import pytest

from builders.declaration import BuildOptions
from builders.repository import build_repository
from builders.ensemble_dali_inception import NAME as ENSEMBLE
from local_server import TritonServer

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


@pytest.fixture(scope="session")
def cpu_repository(tmp_path_factory) -> Path:
    repository = tmp_path_factory.mktemp("repository") / "cpu"
    build_repository(repository, BuildOptions(target="cpu"))
    return repository


@pytest.fixture(scope="session")
def server(cpu_repository, tmp_path_factory):
    """The real server on free ports, with HTTP, gRPC and the SageMaker routes."""
    log = tmp_path_factory.mktemp("server-log") / "tritonserver.log"
    triton = TritonServer(cpu_repository, sagemaker_default_model=ENSEMBLE, log_path=log).start()
    yield triton
    triton.stop()
    assert not triton.is_running()


@pytest.fixture(scope="session")
def photos() -> dict[str, bytes]:
    """Real photographs shipped with scikit-image, JPEG-encoded at their native sizes."""
    import io

    import skimage.data
    from PIL import Image

    encoded = {}
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        buffer = io.BytesIO()
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(buffer, format="JPEG", quality=92)
        encoded[name] = buffer.getvalue()
    return encoded
