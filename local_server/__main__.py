"""``python -m local_server REPOSITORY``: serve a model repository with a real tritonserver.

Runs until Ctrl-C (or ``--once``: start, report ready, stop). ``--sagemaker-mode`` starts
the server the way SageMaker's Triton container does: SageMaker routes only, explicit
model control, only the default model and what it needs loaded; a container that dies or
stops answering /ping is replaced on the same ports, as SageMaker replaces such an
instance (``local_server.supervisor``; ``--no-restart`` leaves it down).

Every listener binds to 127.0.0.1 unless ``--address`` names another IPv4 address.
``--model-control-mode explicit`` loads every model at start-up and lets clients load and
unload them (``python -m defect_classifier approve --url``); off loopback that needs
``--allow-remote-model-control``, and the model-repository API then asks for a key
printed once at start-up.

``--lookout-api ENDPOINT`` (with ``--sagemaker-model <product>_inspection``) also serves
``/endpoints/ENDPOINT/invocations`` on ``--lookout-port``: raw ``image/jpeg`` / ``image/png``
bodies answered with Lookout for Vision's DetectAnomalies JSON, through the serial pipeline of
``sagemaker_deploy deploy --lookout-api`` (``local_server.lookout_route``).
"""
from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

from local_server.errors import ServerError
from local_server.lookout_route import lookout_route, stop_lookout_route
from local_server.multi_model import MultiModelEndpoint
from local_server.sagemaker_container import SAGEMAKER_DEFAULT_PORT
from local_server.supervisor import Supervisor
from local_server.server import (GRPC_MODEL_CONTROL_HEADER, LOOPBACK, MODEL_CONTROL_HEADER,
                                 MODEL_CONTROL_KEY_VARIABLE, MODEL_CONTROL_MODES, TritonServer)
from sagemaker_deploy.package import PackageError
from sagemaker_deploy.serial_pipeline import check_lookout_pipeline

DEFAULT_MODEL = "ensemble_dali_inception"


def docker_equivalent(repository: Path, sagemaker_model: str | None, address: str = LOOPBACK) -> str:
    """The same server from NVIDIA's container on a GPU machine (the ``gpu`` repository).

    Inside the container Triton binds every interface; docker publishes the ports on ``address`` only.
    """
    sagemaker = (f" \\\n  -p{address}:8080:8080 -e SAGEMAKER_TRITON_DEFAULT_MODEL_NAME={sagemaker_model}"
                 if sagemaker_model else "")
    flags = " --allow-sagemaker=true --sagemaker-port=8080" if sagemaker_model else ""
    ports = " ".join(f"-p{address}:{port}:{port}" for port in (8000, 8001, 8002))
    return (f"docker run --gpus=all --rm --shm-size=1g {ports}{sagemaker} \\\n"
            f"  -v {repository.resolve()}:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \\\n"
            f"  tritonserver --model-repository=/models{flags}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repository", type=Path, nargs="?", help="the model repository to serve")
    parser.add_argument("--sagemaker-multi-model", type=Path, metavar="DIR",
                        help="instead of a repository: a folder of pipeline archives (sagemaker_deploy package "
                             "--multi-model), served as a SageMaker multi-model endpoint that loads each on first "
                             "use and unloads the least recently used")
    parser.add_argument("--max-loaded", type=int, default=2, help="--sagemaker-multi-model: pipelines kept loaded")
    parser.add_argument("--endpoint-name", default="local", help="--sagemaker-multi-model: the endpoint's name")
    parser.add_argument("--address", default=LOOPBACK,
                        help="the IPv4 address every listener binds to (default: %(default)s; "
                             "0.0.0.0 = every interface)")
    parser.add_argument("--model-control-mode", choices=MODEL_CONTROL_MODES, default=None,
                        help="Triton's model control (default: none); explicit loads every model at "
                             "start-up and accepts load/unload requests")
    parser.add_argument("--allow-remote-model-control", action="store_true",
                        help="allow explicit model control on a non-loopback address; the "
                             "model-repository API then needs a per-run key")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--sagemaker-port", type=int, default=SAGEMAKER_DEFAULT_PORT)
    parser.add_argument("--sagemaker-model", default=None,
                        help=f"serve SageMaker's /ping and /invocations for this model (e.g. {DEFAULT_MODEL})")
    parser.add_argument("--sagemaker-mode", action="store_true",
                        help="start exactly like SageMaker's Triton container (default model: "
                             f"--sagemaker-model or {DEFAULT_MODEL})")
    parser.add_argument("--no-restart", action="store_true",
                        help="--sagemaker-mode: leave a dead container down instead of replacing it")
    parser.add_argument("--lookout-api", metavar="ENDPOINT",
                        help="also answer raw image/jpeg and image/png bodies at /endpoints/ENDPOINT/invocations with "
                             "Lookout's DetectAnomalies JSON (needs --sagemaker-model <product>_inspection)")
    parser.add_argument("--lookout-port", type=int, default=8085, help="--lookout-api: the route's port")
    parser.add_argument("--log-file", type=Path, help="save the server log here (default: stream it)")
    parser.add_argument("--once", action="store_true", help="stop as soon as the server is ready")
    parser.add_argument("--print-docker", action="store_true",
                        help="print the equivalent docker run of NVIDIA's tritonserver image and exit")
    args = parser.parse_args(argv)
    if (args.repository is None) == (args.sagemaker_multi_model is None):
        parser.error("give a model repository, or --sagemaker-multi-model DIR (not both)")
    if args.lookout_api and (reason := _lookout_refusal(args)):
        parser.error(reason)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.print_docker:
        print(docker_equivalent(args.repository, args.sagemaker_model, args.address))
        return 0
    if args.sagemaker_multi_model:
        return serve_multi_model(args)
    try:
        server = server_from_args(args).start()
    except ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(_addresses(server), flush=True)
    if server.model_control_key:
        print(model_control_notice(server.model_control_key), flush=True)
    supervisor = None
    if args.sagemaker_mode and not args.no_restart and not args.once:
        supervisor = Supervisor(server, name=f"container of {server.sagemaker_default_model}").start()
    with tempfile.TemporaryDirectory(prefix="lookout-api-") as workdir:
        try:
            route = _lookout_route(args, server, Path(workdir))
        except (ServerError, ValueError, OSError) as error:  # OSError: the route's port is taken
            (supervisor or server).stop()
            print(f"error: {error}", file=sys.stderr)
            return 1
        _serve_until_stopped(server, args.once, supervisor)
        if route is not None:
            stop_lookout_route(route)
    (supervisor or server).stop()
    print(f"tritonserver (pid {server.process.pid}) stopped", flush=True)
    return 0 if server.process.returncode in (0, -signal.SIGTERM) else 1


def serve_multi_model(args: argparse.Namespace) -> int:
    """The container as SageMaker starts it in multi-model mode, behind the local runtime route."""
    with tempfile.TemporaryDirectory(prefix="multi-model-") as workdir:
        endpoint = MultiModelEndpoint(args.sagemaker_multi_model, Path(workdir), args.endpoint_name,
                                      args.max_loaded, log_path=args.log_file)
        try:
            endpoint.start()
        except (ServerError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        archives = sorted(path.name for path in args.sagemaker_multi_model.glob("*.tar.gz"))
        print(f"multi-model endpoint {endpoint.name} ready: {endpoint.url}/endpoints/{endpoint.name}/invocations\n"
              f"  container (pid {endpoint.container.process.pid}), at most {args.max_loaded} pipelines loaded\n"
              f"  targets: {', '.join(archives) or '(no archive yet)'}\n"
              f"  e.g. python -m clients.classify IMAGE --protocol sagemaker-endpoint --url {endpoint.url} "
              f"--endpoint-name {endpoint.name} --region us-east-1 --target-model ensemble_dali_inception.tar.gz\n"
              "  (boto3 signs requests: any AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY will do locally)", flush=True)
        _serve_until_stopped(endpoint.container, args.once)
        endpoint.stop()
    return 0


def _lookout_refusal(args: argparse.Namespace) -> str:
    """Why --lookout-api cannot answer for the server's SageMaker model, found before the server starts."""
    if not args.sagemaker_model or args.repository is None:
        return "--lookout-api needs a repository and --sagemaker-model <product>_inspection: the pipeline it answers for"
    try:
        check_lookout_pipeline(args.repository, args.sagemaker_model)
    except PackageError as error:
        return str(error)
    return ""


def _lookout_route(args: argparse.Namespace, server: TritonServer, workdir: Path):
    """The Lookout-style raw-image route when ``--lookout-api`` asks for it, started and announced."""
    if not args.lookout_api:
        return None
    route = lookout_route(server, workdir, args.lookout_api, args.lookout_port)
    print(f"  Lookout  {route.url}/endpoints/{args.lookout_api}/invocations  (image/jpeg, image/png -> "
          f"DetectAnomalies JSON of {server.sagemaker_default_model})", flush=True)
    return route


def _serve_until_stopped(server: TritonServer, once: bool, supervisor: Supervisor | None = None) -> None:
    if once:
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        # a supervised server may be dead for a moment while it is replaced: stop() alone ends the wait
        while server.is_running() or (supervisor is not None and not server.stopped_on_purpose):
            time.sleep(1)
    except (KeyboardInterrupt, SystemExit):
        pass


def server_from_args(args: argparse.Namespace) -> TritonServer:
    sagemaker_model = args.sagemaker_model or (DEFAULT_MODEL if args.sagemaker_mode else None)
    return TritonServer(args.repository, http_port=args.http_port, grpc_port=args.grpc_port,
                        metrics_port=args.metrics_port, sagemaker_port=args.sagemaker_port,
                        sagemaker_default_model=sagemaker_model, sagemaker_mode=args.sagemaker_mode,
                        log_path=args.log_file, stream_log=args.log_file is None, address=args.address,
                        model_control_mode=args.model_control_mode,
                        allow_remote_model_control=args.allow_remote_model_control)


def model_control_notice(key: str) -> str:
    """Printed once: the per-run key of the model-repository API, and how clients pass it."""
    return (f"  model-repository API key (HTTP header {MODEL_CONTROL_HEADER}, gRPC metadata "
            f"{GRPC_MODEL_CONTROL_HEADER}): {key}\n"
            f"  for python -m defect_classifier approve --url: export {MODEL_CONTROL_KEY_VARIABLE}={key}")


def _addresses(server: TritonServer) -> str:
    lines = [f"tritonserver ready (pid {server.process.pid}) on {server.repository}"]
    if not server.sagemaker_mode:
        lines += [f"  HTTP     {server.http_url}", f"  gRPC     {server.grpc_url}",
                  f"  metrics  {server.metrics_url}"]
    if server.sagemaker_default_model:
        lines.append(f"  SageMaker {server.sagemaker_url}/invocations -> {server.sagemaker_default_model}"
                     f"  (bound to {server.address}; Triton's log line says 0.0.0.0 whatever is bound)")
    if not server.stream_log:
        lines.append(f"  log      {server.log_path}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
