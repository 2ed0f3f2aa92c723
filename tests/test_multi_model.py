"""A local multi-model endpoint: three pipelines behind one container, loaded on first use, evicted LRU.

The container is the real tritonserver started as SageMaker's Triton container starts it
with SAGEMAKER_MULTI_MODEL=true; requests go through boto3's ``invoke_endpoint`` with
``TargetModel``. The container's own HTTP API is switched on (loopback, through
SAGEMAKER_TRITON_ADDITIONAL_ARGS) only so that the tests can read Triton's model states
and statistics: what SageMaker itself cannot see.
"""
from __future__ import annotations

import io
import shutil
import tarfile
import time
from dataclasses import replace

import numpy as np
import pytest
import requests
from PIL import Image

from builders import (defect_child, defect_inspection, defect_parent, defect_router, ensemble_dali_inception,
                      ensemble_lama)
from builders.config import parse, render
from clients import inspect as inspect_client
from clients.classify import classify_scores
from clients.inpaint import inpaint, png_bytes
from clients.protocols import RequestError, Route
from defect_data.pcb import render as render_board
from local_server.multi_model import MultiModelEndpoint
from local_server.server import free_port
from sagemaker_deploy.multi_model import package_pipelines, target_name
from tests.conftest import SAMPLE_PRODUCT

# The sample board's models (``Product.model``: ``<product>_<role>``).
DEFECT_PIPELINE, ROUTER, PARENT, CHILD = (f"{SAMPLE_PRODUCT}_{module.ROLE}" for module in (
    defect_inspection, defect_router, defect_parent, defect_child))
CLASSIFY, LAMA, DEFECT = (target_name(p) for p in (ensemble_dali_inception.NAME, ensemble_lama.NAME,
                                                    DEFECT_PIPELINE))


@pytest.fixture(scope="module")
def aws_credentials():
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1"}.items():
            patch.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def archives(cpu_repository, board, tmp_path_factory):
    """The three pipeline archives, plus a defect pipeline whose router calls every image an anomaly."""
    assert {DEFECT_PIPELINE, ROUTER, PARENT, CHILD} <= set(defect_inspection.models(board))
    folder = tmp_path_factory.mktemp("mme-archives")
    package_pipelines(cpu_repository, folder)
    always_anomaly = tmp_path_factory.mktemp("always-anomaly") / "repository"
    shutil.copytree(cpu_repository, always_anomaly)
    config_path = always_anomaly / ROUTER / "config.pbtxt"
    config = parse(config_path.read_text())
    config.parameters["anomaly_threshold"].string_value = "0.0"  # the untrained parent cannot be trusted to
    config_path.write_text(render(config))                     # call anything an anomaly
    anomaly_archive = tmp_path_factory.mktemp("anomaly-archive")
    package_pipelines(always_anomaly, anomaly_archive, [DEFECT_PIPELINE])
    shutil.copy(anomaly_archive / DEFECT, folder / "always_anomaly.tar.gz")
    return folder


@pytest.fixture(scope="module")
def endpoint(archives, aws_credentials, tmp_path_factory):
    http_port = free_port()
    observe = f"--allow-http=true --http-port={http_port} --http-address=127.0.0.1"
    workdir = tmp_path_factory.mktemp("mme-container")
    with MultiModelEndpoint(archives, workdir, max_loaded=2, log_path=workdir / "container.log",
                            container_env={"SAGEMAKER_TRITON_ADDITIONAL_ARGS": observe}) as local:
        local.triton_http = f"http://127.0.0.1:{http_port}"
        yield local


def route(endpoint, target: str) -> Route:
    return Route("sagemaker-endpoint", endpoint.url, endpoint_name=endpoint.name, region="us-east-1",
                 target_model=target)


def ready_models(endpoint) -> set[str]:
    index = requests.post(f"{endpoint.triton_http}/v2/repository/index", json={}, timeout=10).json()
    return {entry["name"] for entry in index if entry.get("state") == "READY"}


def inference_count(endpoint, model: str) -> int:
    stats = requests.get(f"{endpoint.triton_http}/v2/models/{model}/stats", timeout=10).json()
    return sum(entry["inference_count"] for entry in stats["model_stats"])


def board_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(render_board(seed=3).image).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def test_each_target_answers_as_the_same_pipeline_served_alone(endpoint, server, photos):
    alone = Route("http-binary", server.http_url)
    np.testing.assert_allclose(classify_scores(route(endpoint, CLASSIFY), [photos["chelsea"]]),
                               classify_scores(alone, [photos["chelsea"]]), rtol=1e-6)
    image = np.ascontiguousarray(np.asarray(photos_array(photos["coffee"]))[:64, :96])
    mask = np.zeros((64, 96), np.uint8)
    mask[10:40, 20:60] = 255
    assert np.array_equal(inpaint(route(endpoint, LAMA), png_bytes(image), png_bytes(mask)),
                          inpaint(alone, png_bytes(image), png_bytes(mask)))
    board = board_jpeg()
    assert inspect_client.inspect(route(endpoint, DEFECT), SAMPLE_PRODUCT, board) == \
        inspect_client.inspect(alone, SAMPLE_PRODUCT, board)


def photos_array(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))


def test_first_request_loads_the_archive_and_the_next_ones_reuse_it(endpoint, photos):
    endpoint.host.unload_all()
    assert endpoint.host.loaded() == [] and ensemble_dali_inception.NAME not in ready_models(endpoint)
    loads_before = endpoint.host.events.count(f"load {CLASSIFY}")
    classify_scores(route(endpoint, CLASSIFY), [photos["coffee"]])
    assert endpoint.host.loaded() == [CLASSIFY]
    assert {CLASSIFY, "dali", "inception_onnx"} <= ready_models(endpoint)  # the ensemble is named after its archive
    for _ in range(3):
        classify_scores(route(endpoint, CLASSIFY), [photos["coffee"]])
    assert endpoint.host.events.count(f"load {CLASSIFY}") == loads_before + 1


def test_a_third_pipeline_evicts_the_least_recently_used_within_a_budget_of_two(endpoint, photos):
    endpoint.host.unload_all()
    classify_scores(route(endpoint, CLASSIFY), [photos["coffee"]])
    inspect_client.inspect(route(endpoint, DEFECT), SAMPLE_PRODUCT, board_jpeg())
    classify_scores(route(endpoint, CLASSIFY), [photos["coffee"]])  # the defect pipeline is now the least recent
    image = np.full((32, 32, 3), 120, np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:16, 8:16] = 255
    for _ in range(2):
        inpaint(route(endpoint, LAMA), png_bytes(image), png_bytes(mask))
    assert endpoint.host.loaded() == [CLASSIFY, LAMA]
    assert endpoint.host.events[-2:] == [f"unload {DEFECT}", f"load {LAMA}"]
    assert not {DEFECT, ROUTER, PARENT} & ready_models(endpoint)
    assert classify_scores(route(endpoint, CLASSIFY), [photos["chelsea"]]).shape == (1, 1001)


def test_defect_pipeline_loads_and_calls_its_child_model_for_an_anomaly(endpoint):
    endpoint.host.unload_all()
    result = inspect_client.inspect(route(endpoint, "always_anomaly.tar.gz"), SAMPLE_PRODUCT, board_jpeg())
    assert result.label == "anomaly"
    assert {PARENT, CHILD} <= ready_models(endpoint)
    assert inference_count(endpoint, CHILD) >= 1


def archive_of(folder, name: str, members: dict[str, bytes]) -> None:
    with tarfile.open(folder / name, "w:gz") as tar:
        for path, content in members.items():
            info = tarfile.TarInfo(path)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


def rewritten(archives, source: str, name: str, change) -> None:
    """A copy of an archive with each member's content passed through ``change(path, content)``:
    None drops the member."""
    with tarfile.open(archives / source) as original, tarfile.open(archives / name, "w:gz") as copy:
        for member in original.getmembers():
            content = original.extractfile(member).read() if member.isfile() else b""
            content = change(member.name, content)
            if content is None:
                continue
            if member.isfile():
                member.size = len(content)
            copy.addfile(member, io.BytesIO(content) if member.isfile() else None)


def dropping(folder: str):
    return lambda path, content: None if path == folder or path.startswith(folder + "/") else content


@pytest.fixture(scope="module")
def bad_archives(archives, cpu_repository):
    (archives / "truncated.tar.gz").write_bytes((archives / CLASSIFY).read_bytes()[:4096])
    (archives / "corrupt.tar.gz").write_bytes(b"this is not a gzip file at all")
    archive_of(archives, "top_level_config.tar.gz",
               {"config.pbtxt": (cpu_repository / "dali" / "config.pbtxt").read_bytes()})
    rewritten(archives, CLASSIFY, "missing_step.tar.gz", dropping("dali"))
    rewritten(archives, DEFECT, "missing_child.tar.gz", dropping(CHILD))
    rewritten(archives, CLASSIFY, "other_dali.tar.gz",  # the same model name, defined differently
              lambda path, content: content + b"\n# another dali\n" if path == "dali/config.pbtxt" else content)
    rewritten(archives, LAMA, "broken_lama.tar.gz",  # passes the checks, fails in Triton once its steps loaded
              lambda path, content: b"not an onnx model" if path == "lama/1/model.onnx" else content)
    return archives


BAD_TARGETS = [
    ("no_such_pipeline.tar.gz", r"no_such_pipeline.tar.gz does not exist"),
    ("../x.tar.gz", r"is not an archive name"),
    ("truncated.tar.gz", r"truncated.tar.gz is not a readable .tar.gz archive"),
    ("corrupt.tar.gz", r"corrupt.tar.gz is not a readable .tar.gz archive"),
    ("top_level_config.tar.gz", r"top_level_config.tar.gz: the archive has a config.pbtxt at its top level"),
    ("missing_step.tar.gz", r"missing_step.tar.gz: .*'dali' is needed but"),
    ("missing_child.tar.gz", rf"missing_child.tar.gz: .*'{CHILD}' is needed but"),
]


@pytest.mark.parametrize("target,message", BAD_TARGETS, ids=[t for t, _ in BAD_TARGETS])
def test_a_bad_archive_gets_a_4xx_naming_it_and_the_other_pipelines_keep_serving(endpoint, bad_archives, photos,
                                                                                  target, message):
    classify_scores(route(endpoint, CLASSIFY), [photos["coffee"]])
    loaded = endpoint.host.loaded()
    with pytest.raises(RequestError, match=rf"ValidationError.*{message}"):
        classify_scores(route(endpoint, target), [photos["coffee"]])
    assert endpoint.host.loaded() == loaded
    assert len(list((endpoint.workdir / "models").iterdir())) == len(loaded)  # nothing extracted stays behind
    assert classify_scores(route(endpoint, CLASSIFY), [photos["chelsea"]]).shape == (1, 1001)


def test_two_archives_defining_one_model_name_differently_are_refused(endpoint, bad_archives, photos):
    classify_scores(route(endpoint, CLASSIFY), [photos["coffee"]])
    with pytest.raises(RequestError, match=r"other_dali.tar.gz defines dali differently from the loaded "
                                           r"ensemble_dali_inception.tar.gz"):
        classify_scores(route(endpoint, "other_dali.tar.gz"), [photos["coffee"]])
    assert "other_dali.tar.gz" not in endpoint.host.loaded()


def test_a_load_that_fails_halfway_leaves_no_step_loaded_and_the_rest_serving(endpoint, bad_archives, photos):
    endpoint.host.unload_all()
    classify_scores(route(endpoint, CLASSIFY), [photos["coffee"]])
    image, mask = np.full((32, 32, 3), 90, np.uint8), np.full((32, 32), 255, np.uint8)
    with pytest.raises(RequestError, match=r"ModelError.*loading TargetModel broken_lama.tar.gz failed.*lama"):
        inpaint(route(endpoint, "broken_lama.tar.gz"), png_bytes(image), png_bytes(mask))
    assert endpoint.host.loaded() == [CLASSIFY]
    assert not {"lama_decode", "lama_prepare", "lama_finish", "lama"} & ready_models(endpoint)
    assert classify_scores(route(endpoint, CLASSIFY), [photos["chelsea"]]).shape == (1, 1001)


BUCKET = "multi-model-archives"


def test_deploy_multi_model_and_add_model_serve_each_target_through_boto3(cpu_repository, aws, tmp_path, server,
                                                                           photos):
    from sagemaker_deploy.deploy import DeployRequest, teardown
    from sagemaker_deploy.multi_model import add_model, deploy_multi_model
    from sagemaker_deploy.package import PackageError
    from tests.aws_emulator import INSTANCE, ROLE

    request = DeployRequest(cpu_repository, "factory", BUCKET, ROLE, "us-east-1", workdir=tmp_path, poll_s=0.5,
                            wait_timeout_s=180, instance_type=INSTANCE, allow_cpu_target=True)
    release = deploy_multi_model(aws, request, [ensemble_dali_inception.NAME])
    container = aws.call("sagemaker", "describe_model", ModelName=release.name)["PrimaryContainer"]
    assert container["Mode"] == "MultiModel"
    assert container["ModelDataUrl"] == f"s3://{BUCKET}/visual-inspection-triton/factory/{release.name}/models/"
    on = Route("sagemaker-endpoint", "", endpoint_name="factory", region="us-east-1")
    np.testing.assert_allclose(classify_scores(replace(on, target_model=CLASSIFY), [photos["coffee"]]),
                               classify_scores(Route("http-binary", server.http_url), [photos["coffee"]]), rtol=1e-6)
    lama = replace(on, target_model=LAMA)
    image, mask = np.full((32, 32, 3), 90, np.uint8), np.zeros((32, 32), np.uint8)
    with pytest.raises(RequestError, match="TargetModel ensemble_lama.tar.gz does not exist"):
        inpaint(lama, png_bytes(image), png_bytes(mask))
    add_model(aws, request, ensemble_lama.NAME)  # an upload, no redeploy
    assert np.array_equal(inpaint(lama, png_bytes(image), png_bytes(mask)), image)  # an empty hole changes nothing
    with pytest.raises(PackageError, match="ensemble_lama.tar.gz exists"):
        add_model(aws, request, ensemble_lama.NAME)
    with pytest.raises(RequestError, match="is a multi-model endpoint: the request must name its TargetModel"):
        classify_scores(on, [photos["coffee"]])
    assert_a_second_deploy_to_the_live_name_touches_nothing(aws, request, release)
    teardown(aws, "factory", delete_artifacts_in=f"s3://{BUCKET}/visual-inspection-triton")


def assert_a_second_deploy_to_the_live_name_touches_nothing(aws, request, live):
    """AWS refuses CreateEndpoint for a taken name: the deploy is refused before any upload, and the
    live endpoint's archives, configuration and model stay as they were."""
    from sagemaker_deploy.deploy import DeployFailed
    from sagemaker_deploy.multi_model import deploy_multi_model

    def objects():
        return {(item["Key"], item["ETag"]) for item in aws.pages("s3", "list_objects_v2", "Contents", Bucket=BUCKET)}

    before = objects()
    with pytest.raises(DeployFailed, match="endpoint factory already exists"):
        deploy_multi_model(aws, request, [ensemble_dali_inception.NAME, ensemble_lama.NAME])
    assert objects() == before
    assert aws.call("sagemaker", "describe_endpoint", EndpointName="factory")["EndpointConfigName"] == live.name
    assert [m["ModelName"] for m in aws.pages("sagemaker", "list_models", "Models")] == [live.name]


def test_a_cold_load_longer_than_the_ready_wait_answers_429_model_not_ready_and_a_retry_is_served(endpoint, photos):
    import boto3
    import botocore.config
    import botocore.exceptions

    from clients.classify import encoded_batch
    from clients.protocols import sagemaker_body
    from sagemaker_deploy.runtime import invoke_until_ready

    endpoint.host.unload_all()
    loads_before = endpoint.host.events.count(f"load {CLASSIFY}")
    body, content_type = sagemaker_body({ensemble_dali_inception.INPUT.name: encoded_batch([photos["chelsea"]])},
                                        [ensemble_dali_inception.OUTPUT.name], binary=True)
    runtime = boto3.client("sagemaker-runtime", endpoint_url=endpoint.url, region_name="us-east-1",
                           config=botocore.config.Config(retries={"mode": "standard", "max_attempts": 3}))

    def invoke():
        return runtime.invoke_endpoint(EndpointName=endpoint.name, TargetModel=CLASSIFY, ContentType=content_type,
                                       Body=body)

    endpoint.host.ready_wait_s = 0.05  # SageMaker's 60 s, scaled down: every cold load here takes longer
    try:
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            invoke()  # botocore's standard retries do not retry it
        assert refused.value.response["Error"]["Code"] == "ModelNotReadyException"
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert "still loading" in refused.value.response["Error"]["Message"]
        waits = []
        answer = invoke_until_ready(invoke, first_wait_s=0.2, sleep=lambda s: (waits.append(s), time.sleep(s)))
    finally:
        endpoint.host.ready_wait_s = 60.0
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200 and waits
    assert waits == [0.2 * 2 ** n for n in range(len(waits))]  # backed off, doubling
    assert endpoint.host.events.count(f"load {CLASSIFY}") == loads_before + 1  # the load went on: once, then served
