"""The Lookout-style raw-image route in front of a local server: the serial pipeline of ``deploy --lookout-api``.

``POST /endpoints/<name>/invocations`` with an ``image/jpeg`` or ``image/png`` body answers
Lookout for Vision's DetectAnomalies JSON, through the same three containers a
``--lookout-api`` endpoint runs (``sagemaker_deploy/serial_pipeline.py``): the request adapter
and the answer adapter (``sagemaker_deploy/lookout_adapter/inference.py``, each a
``local_server.handler_host`` process) around the server's SageMaker ``/invocations``, behind
the local runtime route with SageMaker's limits and errors (``local_server.endpoint_route``).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from local_server.endpoint_route import EndpointRoute
from local_server.handler_host import HandlerContainer
from local_server.serial_pipeline import PipelineContainer, SerialPipeline
from local_server.server import TritonServer
from sagemaker_deploy.serial_pipeline import ADAPTER_SOURCE, ANSWER, REQUEST, TRITON, adapter_environment


def adapter_container(hostname: str, workdir: Path) -> PipelineContainer:
    """One adapter as its framework container would run it: /opt/ml/model/code/inference.py."""
    model_dir = workdir / hostname
    (model_dir / "code").mkdir(parents=True, exist_ok=True)
    shutil.copy(ADAPTER_SOURCE, model_dir / "code" / "inference.py")
    process = HandlerContainer(model_dir, adapter_environment(hostname), workdir / f"{hostname}.log").start()
    return PipelineContainer(hostname, process.url, process)


def lookout_pipeline(server: TritonServer, workdir: Path) -> SerialPipeline:
    """request adapter -> the server's SageMaker route (its default model: a product's pipeline) -> answer adapter."""
    if not server.sagemaker_default_model:
        raise ValueError("the Lookout route needs the server's SageMaker routes "
                         "(--sagemaker-model <product>_inspection)")
    pipeline = SerialPipeline([adapter_container(REQUEST, workdir)])
    try:
        pipeline.containers += [PipelineContainer(TRITON, server.sagemaker_url), adapter_container(ANSWER, workdir)]
    except Exception:
        pipeline.stop()
        raise
    return pipeline


def lookout_route(server: TritonServer, workdir: Path, name: str, port: int | None = None) -> EndpointRoute:
    """The runtime route serving endpoint ``name`` as the Lookout pipeline (started; ``stop_lookout_route`` ends it)."""
    return EndpointRoute({name: lookout_pipeline(server, workdir)}, port=port).start()


def stop_lookout_route(route: EndpointRoute) -> None:
    route.stop()
    for target in route.endpoints.values():
        target.stop()
