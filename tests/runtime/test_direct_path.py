"""The direct path (runtime/direct.py) against real servers on loopback: small inference requests
answered in the HTTP protocol must be indistinguishable from the ASGI path's answers, keep the
order of pipelined requests, honour Connection: close and HTTP/1.0, and finish a request whose
body is still arriving when the server is asked to stop. Batching (--batch-rows) through the same
path: answers equal to unbatched ones, and fewer model runs than requests."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import Server, serve, stop_server
from test_metrics import value


@pytest.fixture(scope="module")
def pair(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[Server, Server]]:
    tmp = tmp_path_factory.mktemp("direct")
    direct = serve(tmp, models["numeric"], "iris", "--revision", "r1")
    asgi = serve(tmp, models["numeric"], "iris", "--revision", "r1", "--no-direct-path")
    # The two paths are meant to be indistinguishable to a client: the log says which one runs.
    assert "direct path for small inference requests" in direct.logs()
    assert "every request through ASGI" in asgi.logs()
    yield direct, asgi
    stop_server(direct)
    stop_server(asgi)


@pytest.fixture(scope="module")
def batched(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Server]:
    srv = serve(tmp_path_factory.mktemp("batched"), models["numeric"], "iris", "--revision", "b1",
                "--batch-rows", "16")
    yield srv
    stop_server(srv)


ROW = [5.1, 3.5, 1.4, 0.2]
ROWS = np.random.default_rng(5).normal(size=(24, 4)).round(3).tolist()


def v1(rows: list[list[float]]) -> bytes:
    return json.dumps({"instances": rows}).encode()


def v2(row: list[float], request_id: str) -> bytes:
    return json.dumps({"id": request_id, "inputs": [
        {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row}]}).encode()


CASES: list[tuple[str, bytes]] = [
    ("/v1/models/iris:predict", v1([ROW])),
    ("/v1/models/iris:predict", v1([ROW, ROW, [0.0, 0.0, 0.0, 0.0]])),
    ("/v2/models/iris/infer", v2(ROW, "a-1")),
    ("/v2/models/iris/versions/1/infer", v2(ROW, "a-2")),
    ("/v2/models/iris/infer?x=1", v2(ROW, "query-string")),
    ("/v2/models/iris/infer", json.dumps({"id": "sel", "inputs": json.loads(v2(ROW, ""))["inputs"],
                                          "outputs": [{"name": "label"}]}).encode()),
    ("/v1/models/iris:predict", v1([[1.0, 2.0]])),  # wrong width: 400
    ("/v1/models/iris:predict", b"{not json"),  # 400
    ("/v1/models/iris:predict", b""),  # empty body: 400
    ("/v1/models/other:predict", v1([ROW])),  # 404
    ("/v1/models/iris:predict", b'{"instances": [[NaN, 1, 2, 3]]}'),  # NaN not allowed: 400
    ("/v2/models/iris/infer", b'{"inputs": [{"name": "nope"}]}'),  # 400
]


def raw_exchange(port: int, data: bytes, responses: int, timeout: float = 10) -> list[bytes]:
    """Send `data` in one write, read `responses` HTTP responses (Content-Length framed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_responses(sock, responses)


def read_responses(sock: socket.socket, count: int) -> list[bytes]:
    buf, out = b"", []
    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(out)} responses"
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed inside a body"
            rest += chunk
        out.append(head + b"\r\n\r\n" + rest[:length])
        buf = rest[length:]
    return out


def post(path: str, body: bytes, *extra: str, version: str = "1.1") -> bytes:
    headers = ["Host: t", "Content-Type: application/json", f"Content-Length: {len(body)}", *extra]
    return f"POST {path} HTTP/{version}\r\n".encode() + "\r\n".join(headers).encode() + \
        b"\r\n\r\n" + body


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def body_of(response: bytes) -> bytes:
    return response.partition(b"\r\n\r\n")[2]


def without_prediction_id(body: bytes) -> object:
    """An answer with its prediction id (unique per answer, runtime/feedback.py) taken out; it
    must be there on every successful answer."""
    try:
        answer = json.loads(body)
    except ValueError:
        return body
    if not isinstance(answer, dict) or "error" in answer:
        return answer
    parameters = answer.get("parameters") or {}
    if "prediction_id" in parameters:
        assert isinstance(parameters.pop("prediction_id"), str)
        if not parameters:
            answer.pop("parameters")
    else:
        assert isinstance(answer.pop("id"), str)
    return answer


def headers_of(response: bytes) -> dict[str, str]:
    head = response.partition(b"\r\n\r\n")[0].decode().split("\r\n")[1:]
    return {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in head)}


@pytest.mark.parametrize(("path", "body"), CASES, ids=[f"{i}" for i in range(len(CASES))])
def test_direct_answers_equal_asgi_answers(pair: tuple[Server, Server], path: str,
                                           body: bytes) -> None:
    direct, asgi = pair
    a = raw_exchange(direct.port, post(path, body), 1)[0]
    b = raw_exchange(asgi.port, post(path, body), 1)[0]
    assert status_of(a) == status_of(b)
    assert without_prediction_id(body_of(a)) == without_prediction_id(body_of(b))
    ha, hb = headers_of(a), headers_of(b)
    ha.pop("date"), hb.pop("date")
    assert ha == hb


def test_pipelined_requests_are_answered_in_order(pair: tuple[Server, Server]) -> None:
    direct, _ = pair
    data = (post("/v2/models/iris/infer", v2(ROW, "first"))
            + b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\n"  # through the ASGI app
            + post("/v2/models/iris/infer", v2(ROW, "third"))
            + post("/v1/models/iris:predict", v1([[1.0]]))
            + post("/v2/models/iris/infer", v2(ROW, "fifth")))
    replies = raw_exchange(direct.port, data, 5)
    assert [status_of(r) for r in replies] == [200, 200, 200, 400, 200]
    assert json.loads(body_of(replies[0]))["id"] == "first"
    assert json.loads(body_of(replies[1])) == {"ready": True}
    assert json.loads(body_of(replies[2]))["id"] == "third"
    assert json.loads(body_of(replies[4]))["id"] == "fifth"


@pytest.mark.parametrize(("extra", "version"), [(("Connection: close",), "1.1"), ((), "1.0")],
                         ids=["connection-close", "http-1.0"])
def test_connection_is_closed_when_asked(pair: tuple[Server, Server], extra: tuple[str, ...],
                                         version: str) -> None:
    direct, _ = pair
    with socket.create_connection(("127.0.0.1", direct.port), timeout=10) as sock:
        sock.sendall(post("/v1/models/iris:predict", v1([ROW]), *extra, version=version))
        reply = read_responses(sock, 1)[0]
        assert status_of(reply) == 200
        assert headers_of(reply).get("connection") == "close"
        assert sock.recv(1) == b""  # closed by the server


def test_keep_alive_serves_many_requests_on_one_connection(pair: tuple[Server, Server]) -> None:
    direct, _ = pair
    with socket.create_connection(("127.0.0.1", direct.port), timeout=10) as sock:
        for i in range(50):
            sock.sendall(post("/v2/models/iris/infer", v2(ROW, f"k{i}")))
            reply = read_responses(sock, 1)[0]
            assert status_of(reply) == 200 and json.loads(body_of(reply))["id"] == f"k{i}"


def test_expect_continue_chunked_and_large_bodies_still_work(pair: tuple[Server, Server]) -> None:
    direct, _ = pair
    body = v1([ROW])
    with socket.create_connection(("127.0.0.1", direct.port), timeout=10) as sock:
        head = post("/v1/models/iris:predict", b"", "Expect: 100-continue")
        sock.sendall(head.replace(b"Content-Length: 0", b"Content-Length: %d" % len(body)))
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        assert status_of(read_responses(sock, 1)[0]) == 200
    chunked = (b"POST /v1/models/iris:predict HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked"
               b"\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
    assert status_of(raw_exchange(direct.port, chunked, 1)[0]) == 200
    big = v1([ROW] * 3000)  # ~80 KB: past the direct path's limit, answered through ASGI
    reply = raw_exchange(direct.port, post("/v1/models/iris:predict", big), 1)[0]
    assert status_of(reply) == 200 and len(json.loads(body_of(reply))["predictions"]) == 3000


def test_direct_requests_are_counted(pair: tuple[Server, Server]) -> None:
    direct, _ = pair
    before = direct.metrics()
    raw_exchange(direct.port, b"".join(post("/v1/models/iris:predict", v1([ROW, ROW]))
                                       for _ in range(7)), 7)
    raw_exchange(direct.port, post("/v1/models/iris:predict", b"{"), 1)
    after = direct.metrics()
    for name, labels, delta in [
        ("serin_requests_total", {"protocol": "v1", "code": "200"}, 7),
        ("serin_requests_total", {"protocol": "v1", "code": "400"}, 1),
        ("serin_inference_rows_total", {}, 14),
        ("serin_model_runs_total", {}, 7),  # no batching here: one run per request
        ("serin_request_duration_seconds_count", {"protocol": "v1"}, 8),
    ]:
        was = value(before, name, model="iris", **labels) or 0
        assert value(after, name, model="iris", **labels) == was + delta, name


def test_a_request_in_flight_is_answered_when_the_server_stops(
        models: dict[str, Path], tmp_path: Path) -> None:
    srv = serve(tmp_path, models["numeric"], "iris")
    try:
        body = v1([ROW])
        with socket.create_connection(("127.0.0.1", srv.port), timeout=15) as sock:
            request = post("/v1/models/iris:predict", body)
            sock.sendall(request[:-5])  # all but the last bytes of the body
            srv.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            sock.sendall(request[-5:])
            reply = read_responses(sock, 1)[0]
            assert status_of(reply) == 200, reply
            assert headers_of(reply).get("connection") == "close"
        assert srv.proc.wait(timeout=15) in (0, 143)
    finally:
        stop_server(srv)


def test_pipelined_requests_run_as_one_batch_with_the_same_answers(
        batched: Server, pair: tuple[Server, Server]) -> None:
    _, unbatched = pair
    bodies = [v2(row, f"b{i}") for i, row in enumerate(ROWS[:12])]
    bodies.insert(4, v1([[1.0]]))  # an invalid request among them fails alone
    paths = ["/v2/models/iris/infer"] * len(bodies)
    paths[4] = "/v1/models/iris:predict"
    before = batched.metrics()
    replies = raw_exchange(batched.port, b"".join(post(p, b) for p, b in zip(paths, bodies, strict=True)),
                           len(bodies))
    after = batched.metrics()
    expected = [raw_exchange(unbatched.port, post(p, b), 1)[0] for p, b in zip(paths, bodies, strict=True)]
    assert [status_of(r) for r in replies] == [status_of(e) for e in expected]
    assert [status_of(r) for r in replies].count(200) == 12
    assert [without_prediction_id(body_of(r)) for r in replies] == \
        [without_prediction_id(body_of(e)) for e in expected]
    runs = (value(after, "serin_model_runs_total", model="iris") or 0) - \
        (value(before, "serin_model_runs_total", model="iris") or 0)
    # One write, read at once by the server: 12 valid requests in one or two runs, not 12.
    assert 1 <= runs <= 2, runs
    rows = (value(after, "serin_inference_rows_total", model="iris") or 0) - \
        (value(before, "serin_inference_rows_total", model="iris") or 0)
    assert rows == 12
