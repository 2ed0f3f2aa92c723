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


@pytest.fixture(scope="module")
def local_sagemaker(request, tmp_path_factory):
    """A local SageMaker (moto's server + real tritonserver containers) for one test module,
    with the module's ``BUCKET`` created."""
    from tests.aws_emulator import LocalSageMaker

    emulator = LocalSageMaker(tmp_path_factory.mktemp("sagemaker")).start()
    emulator.s3().create_bucket(Bucket=request.module.BUCKET)
    yield emulator
    emulator.stop()


@pytest.fixture()
def aws(local_sagemaker, monkeypatch):
    """The deploy scripts' AWS access, pointed at the module's local SageMaker, quiet."""
    from sagemaker_deploy.aws import Aws
    from tests.aws_emulator import apply_environment

    apply_environment(monkeypatch, local_sagemaker)
    return Aws("us-east-1", say=lambda line: None)


def make_defect_datasets(server, root: Path, per_class: int, normals: int) -> dict[str, Path]:
    """A defect dataset (seed 0) and a test dataset of the same board made with seed 1, half the size,
    both through the served LaMa."""
    from defect_data.pipeline import main as dataset_main

    train, test = root / "train", root / "unseen"
    assert dataset_main(["--out", str(train), "--per-class", str(per_class), "--normals-per-kind", str(normals),
                         "--url", server.http_url]) == 0
    assert dataset_main(["--out", str(test), "--labels", str(train / "source" / "output.manifest"), "--seed", "1",
                         "--per-class", str(max(1, per_class // 2)), "--normals-per-kind", str(max(1, normals // 2)),
                         "--url", server.http_url]) == 0
    return {"train": train, "test": test}


@pytest.fixture(scope="session")
def datasets(server, tmp_path_factory) -> dict[str, Path]:
    """The defect datasets the classifier and release tests train and test on, made once per session."""
    return make_defect_datasets(server, tmp_path_factory.mktemp("defect-datasets"), per_class=4, normals=4)
