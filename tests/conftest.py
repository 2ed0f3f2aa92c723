"""One cpu repository and one real tritonserver per test session."""
from __future__ import annotations

from pathlib import Path

import pytest

from builders.declaration import BuildOptions
from builders.repository import build_repository
from builders.ensemble_dali_inception import NAME as ENSEMBLE
from local_server import TritonServer
from products import Product, find

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
SAMPLE_PRODUCT = "pcb"


def define_sample_board(folder: Path) -> Path:
    """The sample board as a user defines a product: labels from its renderer, then ``products define``;
    returns the product store."""
    from defect_data.pcb import main as label_board
    from products.__main__ import main as products_main

    assert label_board(["--out", str(folder / "pcb-labels")]) == 0
    store = folder / "products"
    assert products_main(["--store", str(store), "define", "--name", SAMPLE_PRODUCT,
                          "--labels", str(folder / "pcb-labels" / "output.manifest")]) == 0
    return store


@pytest.fixture(scope="session")
def product_store(tmp_path_factory) -> Path:
    return define_sample_board(tmp_path_factory.mktemp("sample-product"))


@pytest.fixture(scope="session")
def board(product_store) -> Product:
    """The sample board's product definition."""
    return find(SAMPLE_PRODUCT, product_store)


@pytest.fixture(scope="session")
def cpu_repository(tmp_path_factory, board) -> Path:
    repository = tmp_path_factory.mktemp("repository") / "cpu"
    # Queues for the most a real-time request may take (just under SageMaker's 60 s): these tests
    # send bursts on a loaded 2-core machine to prove batching and bad input, not shedding
    # (tests/test_load_shedding.py builds its own repositories for that).
    build_repository(repository, BuildOptions(target="cpu", products=(board,), latency_budget_s=55.0))
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


def make_defect_datasets(server, store: Path, root: Path, per_class: int, normals: int) -> dict[str, Path]:
    """A defect dataset of the sample board (seed 0) and a test dataset made with seed 1, half the
    anomalies, both through the served LaMa; the test set keeps Lookout's minimum of 10 normals."""
    from defect_data.pipeline import main as dataset_main

    train, test = root / "train", root / "unseen"
    product = ["--product", SAMPLE_PRODUCT, "--products-store", str(store), "--url", server.http_url]
    assert dataset_main(["--out", str(train), "--per-class", str(per_class), "--normals-per-kind", str(normals),
                         *product]) == 0
    assert dataset_main(["--out", str(test), "--seed", "1", "--per-class", str(max(1, per_class // 2)),
                         "--normals-per-kind", str(max(3, normals // 2)), *product]) == 0
    return {"train": train, "test": test}


@pytest.fixture(scope="session")
def datasets(server, product_store, tmp_path_factory) -> dict[str, Path]:
    """The defect datasets the classifier and release tests train and test on, made once per session."""
    return make_defect_datasets(server, product_store, tmp_path_factory.mktemp("defect-datasets"), per_class=4,
                                normals=4)
