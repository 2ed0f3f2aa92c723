"""The local server listens on loopback only, guards model control, and restarts on its own port.

The addresses are read from the kernel's socket table (the server's listening sockets,
found by the inodes of its file descriptors), not from Triton's log: the log says
"Started Sagemaker HTTPService at 0.0.0.0" whatever was bound. No request ever goes to a
non-loopback address; the rules for one are checked before anything starts.
"""
from __future__ import annotations

import http.client
import ipaddress
import json
import os
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from local_server import ServerError, TritonServer, bind_shim
from local_server.__main__ import main as local_server_main, model_control_notice, parse_args, server_from_args
from local_server.server import (GRPC_MODEL_CONTROL_HEADER, MODEL_CONTROL_HEADER, MODEL_CONTROL_KEY_VARIABLE,
                                 model_control_headers)
from products import save as save_product
from tests.conftest import SAMPLE_PRODUCT

MODEL = "identity"
REGISTRY_MODEL = f"{SAMPLE_PRODUCT}_parent"
PIPELINE_MODEL = f"{SAMPLE_PRODUCT}_inspection"  # its folder's product.json: what the registry serves
KEY = "test-key-0123456789"
LISTEN, TIME_WAIT = "0A", "06"

IDENTITY_CONFIG = """backend: "python"
max_batch_size: 0
input [{ name: "INPUT0", data_type: TYPE_FP32, dims: [ -1 ] }]
output [{ name: "OUTPUT0", data_type: TYPE_FP32, dims: [ -1 ] }]
instance_group [{ kind: KIND_CPU, count: 1 }]
"""
IDENTITY_MODEL = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse(
                    [pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())])
                for r in requests]
"""


@pytest.fixture(scope="module")
def repository(board, tmp_path_factory) -> Path:
    """Tiny python-backend models, the fastest repository to start a server on: ``identity``, the
    same model as the sample board's registry model ``pcb_parent`` with three evaluated versions, 1
    served, and as its ``pcb_inspection``, whose folder carries the product definition."""
    root = tmp_path_factory.mktemp("identity-repository")
    for name in (MODEL, PIPELINE_MODEL):
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(IDENTITY_CONFIG)
        (root / name / "1" / "model.py").write_text(IDENTITY_MODEL)
    save_product(board, root / PIPELINE_MODEL)
    registered = root / REGISTRY_MODEL
    registered.mkdir()
    (registered / "config.pbtxt").write_text(IDENTITY_CONFIG + "version_policy: { specific: { versions: [ 1 ] } }\n")
    for version, f1 in ((1, 0.5), (2, 0.6), (3, 0.7)):
        (registered / str(version)).mkdir()
        (registered / str(version) / "model.py").write_text(IDENTITY_MODEL)
        (registered / str(version) / "evaluation.json").write_text(json.dumps({"splits": {"validation": {"f1": f1}}}))
    return root


# -- the kernel's socket table -------------------------------------------------------
def socket_table(state: str) -> list[tuple[int, ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """(inode, local address, local port) of every TCP socket in ``state``, IPv4 and IPv6."""
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == state:
                address, port = fields[1].split(":")
                rows.append((int(fields[9]), kernel_address(address), int(port, 16)))
    return rows


def kernel_address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """/proc/net/tcp prints each 32-bit word of an address in host (little-endian) order."""
    raw = b"".join(bytes.fromhex(hex_address[i:i + 8])[::-1] for i in range(0, len(hex_address), 8))
    address = ipaddress.ip_address(raw)
    return getattr(address, "ipv4_mapped", None) or address  # ::ffff:127.0.0.1 -> 127.0.0.1


def listening_addresses(pid: int) -> dict[int, str]:
    """Port -> address of every socket the process ``pid`` listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:["):-1]))
    return {port: str(address) for inode, address, port in socket_table(LISTEN) if inode in inodes}


def ports_in_time_wait() -> set[int]:
    return {port for _, _, port in socket_table(TIME_WAIT)}


# -- a server with every listener, explicit model control and a key, all on loopback --
@pytest.fixture(scope="module")
def guarded_server(repository, tmp_path_factory):
    log = tmp_path_factory.mktemp("guarded-server") / "tritonserver.log"
    with TritonServer(repository, sagemaker_default_model=MODEL, model_control_mode="explicit",
                      model_control_key=KEY, log_path=log) as server:
        yield server


def test_every_listener_of_a_server_with_sagemaker_routes_binds_loopback_only(guarded_server):
    ports = {guarded_server.http_port, guarded_server.grpc_port, guarded_server.metrics_port,
             guarded_server.sagemaker_port}
    listening = listening_addresses(guarded_server.process.pid)
    assert listening == {port: "127.0.0.1" for port in ports}
    assert guarded_server.sagemaker_url.startswith("http://127.0.0.1:")


def test_every_listener_of_a_server_without_sagemaker_routes_binds_loopback_only(repository):
    """Without the SageMaker frontend no bind() shim is preloaded: Triton's address flags do it all."""
    with TritonServer(repository) as server:
        ports = {server.http_port, server.grpc_port, server.metrics_port}
        assert listening_addresses(server.process.pid) == {port: "127.0.0.1" for port in ports}
        with pytest.raises(ServerError, match=f"grpc port {server.grpc_port} is already in use"):
            TritonServer(repository, grpc_port=server.grpc_port).start()  # held by a live Triton


def test_explicit_model_control_loads_everything_at_start_and_unloads_and_loads_over_http(guarded_server,
                                                                                           monkeypatch):
    monkeypatch.setenv(MODEL_CONTROL_KEY_VARIABLE, KEY)  # what defect_classifier approve --url reads
    client = httpclient.InferenceServerClient(guarded_server.http_url)
    assert client.is_model_ready(MODEL)
    client.unload_model(MODEL, headers=model_control_headers())
    assert not client.is_model_ready(MODEL)
    client.load_model(MODEL, headers=model_control_headers())
    assert client.is_model_ready(MODEL)
    data = np.arange(3, dtype=np.float32)
    request = httpclient.InferInput("INPUT0", list(data.shape), "FP32")
    request.set_data_from_numpy(data)
    np.testing.assert_array_equal(client.infer(MODEL, [request]).as_numpy("OUTPUT0"), data)


def test_restricted_model_repository_api_refuses_a_load_without_the_key_over_http_and_grpc(guarded_server,
                                                                                           monkeypatch):
    monkeypatch.delenv(MODEL_CONTROL_KEY_VARIABLE, raising=False)
    http = httpclient.InferenceServerClient(guarded_server.http_url)
    for headers in (model_control_headers(), {MODEL_CONTROL_HEADER: "wrong-key"}):
        with pytest.raises(InferenceServerException, match=f"restricted, expecting header '{MODEL_CONTROL_HEADER}'"):
            http.load_model(MODEL, headers=headers)
    with grpcclient.InferenceServerClient(guarded_server.grpc_url) as grpc:
        with pytest.raises(InferenceServerException, match="restricted"):
            grpc.unload_model(MODEL)
        grpc.load_model(MODEL, headers={GRPC_MODEL_CONTROL_HEADER: KEY})  # the gRPC form of the same key
    assert http.is_model_ready(MODEL)


def test_defect_classifier_approve_url_reloads_with_the_key_from_the_environment(guarded_server, repository,
                                                                               monkeypatch, capsys):
    from defect_classifier.__main__ import main as classifier_main

    def approve(version: int) -> int:
        return classifier_main(["approve", "--repository", str(repository), "--version", str(version),
                                "--models", REGISTRY_MODEL, "--url", guarded_server.http_url])

    monkeypatch.delenv(MODEL_CONTROL_KEY_VARIABLE, raising=False)
    assert approve(2) == 1
    assert f"could not reload {REGISTRY_MODEL}: This API is restricted" in capsys.readouterr().err
    monkeypatch.setenv(MODEL_CONTROL_KEY_VARIABLE, KEY)
    assert approve(3) == 0
    metadata = httpclient.InferenceServerClient(guarded_server.http_url).get_model_metadata(REGISTRY_MODEL)
    assert metadata["versions"] == ["3"]


# -- rules for addresses off loopback, checked before anything binds --------------------
def test_explicit_model_control_off_loopback_without_the_second_flag_is_refused(repository, capsys):
    with pytest.raises(ServerError, match="--allow-remote-model-control"):
        TritonServer(repository, address="0.0.0.0", model_control_mode="explicit")
    with pytest.raises(ServerError, match="--allow-remote-model-control"):  # the same through extra_args
        TritonServer(repository, address="10.1.2.3", extra_args=["--model-control-mode=explicit"])
    assert local_server_main([str(repository), "--address", "0.0.0.0", "--model-control-mode", "explicit"]) == 1
    assert "run code on this machine" in capsys.readouterr().err


def test_explicit_model_control_off_loopback_with_the_second_flag_gets_a_random_key_on_both_protocols(repository):
    keys = []
    for _ in range(2):
        server = TritonServer(repository, address="0.0.0.0", model_control_mode="explicit",
                              allow_remote_model_control=True)
        setting = f"model-repository:{MODEL_CONTROL_HEADER}={server.model_control_key}"
        command = server.command()
        assert f"--http-restricted-api={setting}" in command and f"--grpc-restricted-protocol={setting}" in command
        assert "--http-address=0.0.0.0" in command
        keys.append(server.model_control_key)
    assert keys[0] != keys[1] and len(keys[0]) >= 32
    assert f"export {MODEL_CONTROL_KEY_VARIABLE}={keys[0]}" in model_control_notice(keys[0])


def test_explicit_model_control_with_sagemaker_routes_off_loopback_is_refused_even_with_the_second_flag(repository):
    """Triton's SageMaker frontend loads any folder on POST /models and has no restricted API."""
    for settings in ({"sagemaker_mode": True}, {"sagemaker_default_model": MODEL, "model_control_mode": "explicit"}):
        with pytest.raises(ServerError, match="SageMaker frontend .* cannot ask for a key"):
            TritonServer(repository, address="0.0.0.0", allow_remote_model_control=True, **settings)


def test_an_address_that_is_not_ipv4_is_refused_by_name(repository):
    with pytest.raises(ServerError, match="'localhost' is not an IPv4 address"):
        TritonServer(repository, address="localhost")


def test_the_command_line_serves_loopback_by_default_and_takes_explicit_model_control(repository):
    default = server_from_args(parse_args([str(repository)]))
    assert default.address == "127.0.0.1" and not any("--model-control-mode" in arg for arg in default.command())
    explicit = server_from_args(parse_args([str(repository), "--model-control-mode", "explicit"])).command()
    assert explicit[-2:] == ["--model-control-mode=explicit", "--load-model=*"]
    assert server_from_args(parse_args([str(repository), "--model-control-mode", "poll"])).command()[-1] == \
        "--model-control-mode=poll"


def test_the_bind_shim_builds_with_the_system_compiler_and_names_the_fix_without_one(tmp_path, monkeypatch):
    monkeypatch.setattr(bind_shim, "SHIM_PATH", tmp_path / "shim" / "bind.so")
    assert bind_shim.bind_shim().stat().st_size > 0
    monkeypatch.setattr(bind_shim, "SHIM_PATH", tmp_path / "elsewhere" / "bind.so")
    monkeypatch.setenv("PATH", str(tmp_path / "no-compilers-here"))
    with pytest.raises(ServerError, match=r"needs a C compiler .* \(apt-get install gcc\)"):
        bind_shim.bind_shim()


# -- ports ---------------------------------------------------------------------------
def kill_leaving_time_wait(server: TritonServer) -> None:
    """Kill the server while a client holds a connection, so its side of it lingers in TIME_WAIT."""
    connection = http.client.HTTPConnection("127.0.0.1", server.sagemaker_port, timeout=10)
    connection.request("GET", "/ping")
    assert connection.getresponse().read() is not None
    os.killpg(server.process.pid, signal.SIGKILL)  # the server's own process group (start_new_session)
    server.process.wait(timeout=10)
    connection.close()


def test_sagemaker_mode_restarts_on_its_port_right_after_a_kill_and_listens_on_loopback_only(repository):
    first = TritonServer(repository, sagemaker_mode=True, sagemaker_default_model=MODEL).start()
    port = first.sagemaker_port
    kill_leaving_time_wait(first)
    assert port in ports_in_time_wait()
    with TritonServer(repository, sagemaker_mode=True, sagemaker_default_model=MODEL, sagemaker_port=port) as again:
        assert listening_addresses(again.process.pid) == {port: "127.0.0.1"}


def test_a_port_held_by_a_listening_socket_is_still_refused(repository):
    for holder_address in ("127.0.0.1", "0.0.0.0"):
        with socket.socket() as holder:
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server would
            holder.bind((holder_address, 0))
            holder.listen()
            busy = holder.getsockname()[1]
            with pytest.raises(ServerError, match=f"http port {busy} is already in use on 127.0.0.1"):
                TritonServer(repository, http_port=busy).start()
