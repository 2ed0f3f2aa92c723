"""A bounded boofuzz run over a real local server: Triton's HTTP port, its SageMaker routes, the endpoint route.

boofuzz (as Triton's own ``L0_http_fuzz``) mutates one field of a well-formed HTTP request
at a time: the method, the path, the headers and the JSON body's fields. Here it runs
headless (no web interface, its case database in a temporary folder) over loopback. Each
of its ~640 mutations per field is a case; the run takes short windows spread across that
range, a few hundred cases in all, so it stays under a minute. After each target the
server must still answer a good request.

The server is a throw-away one serving an identity model, never the session ``server``:
tritonserver 2.51's own HTTP and SageMaker ports abort on a JSON input declaring a huge
shape (docs/triton-json-shape-bug.md), a known bug, so on those ports the shape stays
fixed; the endpoint route guards against it, so there the shape is fuzzed too.
"""
from __future__ import annotations

import numpy as np
import pytest
import requests
from boofuzz import Block, Group, Request, Session, Size, Static, String, Target, TCPSocketConnection

from local_server import TritonServer
from local_server.endpoint_route import EndpointRoute
from tests.test_request_guard import TEST_CREDENTIALS, identity, identity_repository

CASES_PER_TARGET = 120
WINDOWS = 6  # windows of cases spread over each target's mutations
BODY = {"name": '"INPUT0"', "datatype": '"UINT8"', "shape": "[1, 3]", "data": "[7, 8, 9]"}  # field -> JSON


# Shapes that allocate what the data does not fill: one of them aborts tritonserver 2.51 unguarded.
HUGE_SHAPES = ["[1, 1000000000000]", "[1000000000000, 1]", "[1, 3000000000]", "[4294967296, 4294967296]",
               "[1, 9223372036854775807]", "[1, -3]", "[1, 3.5]", '[1, "3"]', "[]", "[1, 3, 1000000000000]"]


def http_request(name: str, path: str, fixed: tuple[str, ...] = (), shapes: list[str] | None = None) -> Request:
    """A JSON inference POST, each part a boofuzz String except the body fields named in ``fixed``;
    with ``shapes``, only the shape varies, through those values."""
    body = [Static(f"{name}-open", b'{"inputs": [{')]
    for index, (key, value) in enumerate(BODY.items()):
        body.append(Static(f"{name}-key{index}", f'{", " if index else ""}"{key}": '.encode()))
        if key == "shape" and shapes:
            body.append(Group(f"{name}-{key}", values=[shape.encode() for shape in shapes], default_value=value))
        else:
            body.append(Static(f"{name}-{key}", value.encode()) if key in fixed or shapes else
                        String(f"{name}-{key}", value, max_len=256))
    body.append(Static(f"{name}-close", b"}]}"))
    length = len('{"inputs": [{' + ", ".join(f'"{key}": {value}' for key, value in BODY.items()) + "}]}")
    head = String if not shapes else Static  # with shapes, a well-formed request around them
    return Request(name, children=(
        head(f"{name}-method", "POST", **({} if shapes else {"max_len": 32})), Static(f"{name}-sp", b" "),
        head(f"{name}-path", path, **({} if shapes else {"max_len": 256})),
        Static(f"{name}-version", b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: "),
        head(f"{name}-type", "application/json", **({} if shapes else {"max_len": 128})),
        Static(f"{name}-length", b"\r\nContent-Length: "),
        String(f"{name}-size", str(length), max_len=32) if not shapes else
        Size(f"{name}-size", block_name=f"{name}-body", output_format="ascii", fuzzable=False),
        Static(f"{name}-end", b"\r\n\r\n"), Block(f"{name}-body", children=body)))


def fuzz(port: int, request: Request, db_folder) -> int:
    """Run about CASES_PER_TARGET cases of ``request`` against 127.0.0.1:port; the number of cases run."""
    total, run = request.num_mutations(), 0
    windows = WINDOWS if total > CASES_PER_TARGET else 1
    for window in range(windows):
        start = 1 + window * (total // windows)
        session = Session(target=Target(connection=TCPSocketConnection("127.0.0.1", port, recv_timeout=0.5)),
                          web_port=None, fuzz_loggers=[], db_filename=str(db_folder / f"{request.name}-{window}.db"),
                          index_start=start, index_end=start + CASES_PER_TARGET // windows - 1,
                          receive_data_after_fuzz=True, restart_sleep_time=0, crash_threshold_request=1000,
                          crash_threshold_element=1000)
        session.connect(request)
        session.fuzz()
        run += session.num_cases_actually_fuzzed
    return run


@pytest.fixture(scope="module")
def identity_server(tmp_path_factory):
    """A throw-away tritonserver with HTTP and SageMaker routes serving an identity model, behind the route."""
    repository = identity_repository(tmp_path_factory.mktemp("fuzz-repository"))
    with pytest.MonkeyPatch.context() as patch:
        for name, value in TEST_CREDENTIALS.items():
            patch.setenv(name, value)
        with TritonServer(repository, sagemaker_default_model="identity") as container:
            with EndpointRoute({"guarded": container.sagemaker_url}) as route:
                yield container, route


def still_serving(container, route) -> None:
    assert container.is_running()
    assert requests.get(f"{container.sagemaker_url}/ping", timeout=10).status_code == 200
    good = np.array([[7, 8, 9]], np.uint8)
    answer = requests.post(f"http://{container.http_url}/v2/models/identity/infer", timeout=10,
                           json={"inputs": [{"name": "INPUT0", "datatype": "UINT8", "shape": [1, 3], "data": [7, 8, 9]}]})
    assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [7, 8, 9]
    np.testing.assert_array_equal(identity(route, "sagemaker-endpoint-json", good), good)


@pytest.mark.parametrize("target", ["triton-http", "sagemaker", "endpoint-route"])
def test_fuzzed_requests_leave_the_server_and_the_route_serving(identity_server, target, tmp_path):
    container, route = identity_server
    port, request = {  # the shape stays fixed where nothing guards tritonserver's known crash
        "triton-http": (container.http_port, http_request(target, "/v2/models/identity/infer", fixed=("shape",))),
        "sagemaker": (container.sagemaker_port, http_request(target, "/invocations", fixed=("shape",))),
        "endpoint-route": (route.port, http_request(target, "/endpoints/guarded/invocations")),
    }[target]
    cases = fuzz(port, request, tmp_path)
    assert cases >= CASES_PER_TARGET * 0.9, f"only {cases} cases ran"
    still_serving(container, route)


def test_fuzzed_shapes_through_the_endpoint_route_never_reach_the_server(identity_server, tmp_path):
    """Every shape of HUGE_SHAPES, one of which aborts tritonserver when it gets through, is refused by the route."""
    container, route = identity_server
    forwarded = route.requests_forwarded
    request = http_request("shapes", "/endpoints/guarded/invocations", shapes=HUGE_SHAPES)
    assert fuzz(route.port, request, tmp_path) == len(HUGE_SHAPES)
    assert route.requests_forwarded == forwarded
    still_serving(container, route)


@pytest.mark.parametrize("declared", ["abc", "-5", "²"])
def test_a_content_length_that_is_not_a_number_gets_a_400_naming_it(identity_server, declared):
    import socket

    container, route = identity_server
    with socket.create_connection(("127.0.0.1", route.port), timeout=10) as connection:
        connection.sendall(f"POST /endpoints/guarded/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           f"Content-Length: {declared}\r\n\r\n{{}}".encode())
        answer = b"".join(iter(lambda: connection.recv(65536), b"")).decode("utf-8", "replace")  # until closed
    assert answer.startswith("HTTP/1.0 400") or answer.startswith("HTTP/1.1 400"), answer
    assert "is not a number of bytes" in answer
    still_serving(container, route)
