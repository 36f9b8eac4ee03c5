"""The feedback contract (runtime/feedback.py) on real server processes: ids that any worker of any
replica holding the key verifies, late truth, forged, unknown, duplicate and misshapen feedback
refused with a 4xx that says why, and the performance counters per predicting revision."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import Server, serve, stop_server
from serin.runtime import feedback as fb
from serin.runtime.model import Task

TOKEN = "test-sender-token"
KEY = {"SERIN_FEEDBACK_KEY": "test-shared-secret", "SERIN_FEEDBACK_TOKEN": TOKEN}
SENDER = {"Authorization": f"Bearer {TOKEN}"}


def counter(text: str, name: str, revision: str) -> float:
    """A series' value summed over replicas: feedback counters by the revision that predicted
    (`predicted_revision`), other series by their own `revision`."""
    label = "predicted_revision" if name.startswith("serin_feedback_") and "requests" not in name else "revision"
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and f'{label}="{revision}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)


def infer(srv: Server, x: np.ndarray, **extra: object) -> dict:
    reply = srv.infer([{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}], **extra)
    assert reply.status == 200, reply.body
    return reply.json()


def labels(answer: dict) -> list[int]:
    return next(o for o in answer["outputs"] if o["name"] == "label")["data"]


def feedback(srv: Server, body: object) -> tuple[int, dict]:
    reply = srv.request("POST", f"/v2/models/{srv.name}/feedback", body, headers=SENDER)
    return reply.status, reply.json()


@pytest.fixture
def pair(models: dict[str, Path], tmp_path: Path):  # type: ignore[no-untyped-def]
    """Two replicas of one Model (two revisions, one key), the first with two workers."""
    a = serve(tmp_path, models["numeric"], "fraud", "--revision", "rev-a", "--workers", "2",
              "--state-dir", str(tmp_path / "a"), env=KEY)
    b = serve(tmp_path, models["numeric"], "fraud", "--revision", "rev-b", "--state-dir", str(tmp_path / "b"),
              env=KEY)
    yield a, b
    stop_server(a)
    stop_server(b)


def test_truth_for_an_answer_of_either_replica_is_scored_under_the_revision_that_predicted(pair) -> None:  # type: ignore[no-untyped-def]
    a, b = pair
    x = rows(8)
    answer = infer(a, x)
    predicted = labels(answer)
    truth = [1 - predicted[0], *predicted[1:]]  # one row wrong: 7 of 8 correct
    # Sent to the other replica (other revision, other process): it verifies and counts for rev-a.
    status, body = feedback(b, {"id": answer["id"], "truth": truth})
    assert status == 200, body
    assert body == {"id": answer["id"], "revision": "rev-a", "rows": 8}
    deadline = time.monotonic() + 5
    while counter(b.metrics(), "serin_feedback_rows_total", "rev-a") < 8 and time.monotonic() < deadline:
        time.sleep(0.1)
    m = b.metrics()
    assert counter(m, "serin_feedback_rows_total", "rev-a") == 8
    assert counter(m, "serin_feedback_correct_total", "rev-a") == 7
    assert counter(m, "serin_feedback_rows_total", "rev-b") == 0  # exported at 0, not absent
    # Log loss and Brier come from the probabilities the id carries.
    probabilities = np.asarray(next(o for o in answer["outputs"] if o["name"] == "probabilities")["data"]).reshape(8, 2)
    p_true = probabilities[np.arange(8), truth]
    assert counter(m, "serin_feedback_scored_rows_total", "rev-a") == 8
    assert counter(m, "serin_feedback_log_loss_total", "rev-a") == pytest.approx(-np.log(p_true).sum(), abs=1e-3)
    onehot = np.eye(2)[truth]
    assert counter(m, "serin_feedback_brier_total", "rev-a") == pytest.approx(((probabilities - onehot) ** 2).sum(), abs=1e-3)


def test_duplicates_are_refused_by_every_worker_and_after_a_restart(models: dict[str, Path], tmp_path: Path) -> None:
    state = tmp_path / "state"
    srv = serve(tmp_path, models["numeric"], "fraud", "--revision", "r1", "--workers", "2",
                "--state-dir", str(state), env=KEY)
    try:
        answers = [infer(srv, rows(1, seed)) for seed in range(6)]
        for answer in answers[:3]:
            status, body = feedback(srv, {"id": answer["id"], "truth": labels(answer)})
            assert status == 200, body
        # New connections land on either worker (SO_REUSEPORT): each refusal is a 409 all the same.
        for answer in answers[:3]:
            for _ in range(3):
                status, body = feedback(srv, {"id": answer["id"], "truth": labels(answer)})
                assert status == 409 and "already recorded" in body["error"], body
    finally:
        stop_server(srv)
    again = serve(tmp_path, models["numeric"], "fraud", "--revision", "r1", "--state-dir", str(state), env=KEY)
    try:
        status, body = feedback(again, {"id": answers[0]["id"], "truth": labels(answers[0])})
        assert status == 409, body
        # Predictions from before the restart still take their (late) truth.
        for answer in answers[3:]:
            status, body = feedback(again, {"id": answer["id"], "truth": labels(answer)})
            assert status == 200, body
    finally:
        stop_server(again)


def test_bad_feedback_gets_a_4xx_that_says_why_and_costs_nothing(pair) -> None:  # type: ignore[no-untyped-def]
    a, _ = pair
    answer = infer(a, rows(3))
    good = labels(answer)
    token = answer["id"]
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[-20] ^= 1  # one bit of the prediction changed: the signature no longer matches
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    cases = [
        ({"id": forged, "truth": good}, 404, "no valid signature"),
        ({"id": "not-an-id", "truth": good}, 404, "not an id this model issued"),
        ({"id": 12, "truth": good}, 400, '"id" must be'),
        ({"id": token, "truth": good[:2]}, 400, "has 2 entries, the prediction has 3 rows"),
        ({"id": token, "truth": [0, 1, 7]}, 400, "is not a class of this model"),
        ({"id": token, "truth": [0, 1, [1]]}, 400, "is not a class label"),
        ({"id": token, "truth": {"a": 1}}, 400, '"truth" must be a list of 3 labels'),
        ({"id": token}, 400, "no 'truth'"),
        ([1, 2], 400, "must be a JSON object"),
    ]
    for body, status, words in cases:
        got, answer_body = feedback(a, body)
        assert got == status and words in answer_body["error"], (body, got, answer_body)
    reply = a.request("POST", "/v2/models/fraud/feedback", b"{not json", headers=SENDER)
    assert reply.status == 400 and "invalid JSON" in reply.json()["error"]
    reply = a.request("POST", "/v2/models/other/feedback", {"id": token, "truth": good}, headers=SENDER)
    assert reply.status == 404 and "not found" in reply.json()["error"]
    # None of these used the id up: its truth is still taken, once.
    assert feedback(a, {"id": token, "truth": good})[0] == 200
    m = a.metrics()
    assert counter(m, "serin_feedback_rows_total", "rev-a") == 3
    assert counter(m, "serin_feedback_requests_total", "rev-a") >= len(cases) + 3
    assert re.search(r'serin_feedback_requests_total\{[^}]*code="404"[^}]*\} [1-9]', m), m


# -- issue 32 #5: an id proves the prediction, not the sender: truth only from the token's holders --

def test_truth_is_taken_only_from_holders_of_the_sender_token(pair) -> None:  # type: ignore[no-untyped-def]
    a, b = pair
    answer = infer(a, rows(2))
    body = {"id": answer["id"], "truth": labels(answer)}
    # An inference client holds the id (it got the answer), not the token.
    refused = [({}, "needs 'Authorization: Bearer <token>'"),
               ({"Authorization": "Basic dXNlcjpwdw=="}, "needs 'Authorization: Bearer <token>'"),
               ({"Authorization": "Bearer "}, "needs 'Authorization: Bearer <token>'"),
               ({"Authorization": "Bearer test-sender-tokem"}, "wrong feedback sender token"),
               ({"Authorization": f"Bearer {TOKEN}x"}, "wrong feedback sender token")]
    for headers, words in refused:
        for path in ("/v2/models/fraud/feedback", "/v1/models/fraud:feedback"):
            reply = b.request("POST", path, body, headers=headers)
            assert reply.status == 401 and words in reply.json()["error"], (headers, path, reply.body)
            assert "fraud-serin-feedback-sender" in reply.json()["error"] or "wrong" in words
    # None of them used the id up; the token's holder is heard once (the scheme is case-insensitive).
    assert b.request("POST", "/v2/models/fraud/feedback", body,
                     headers={"Authorization": f"bearer {TOKEN}"}).status == 200
    assert feedback(b, body)[0] == 409
    m = b.metrics()
    assert counter(m, "serin_feedback_rows_total", "rev-a") == 2
    assert re.search(r'serin_feedback_requests_total\{[^}]*code="401"[^}]*\} 10', m), m


def test_a_replica_without_a_token_refuses_all_truth_unless_told_anyone_may_send(
        models: dict[str, Path], tmp_path: Path) -> None:
    closed = serve(tmp_path, models["numeric"], "fraud", "--revision", "rc", env={"SERIN_FEEDBACK_KEY": "k"})
    open_ = serve(tmp_path, models["numeric"], "fraud", "--revision", "ro", "--feedback-senders", "anyone",
                  env={"SERIN_FEEDBACK_KEY": "k"})
    try:
        answer = infer(closed, rows(1))
        body = {"id": answer["id"], "truth": labels(answer)}
        reply = closed.request("POST", "/v2/models/fraud/feedback", body, headers=SENDER)
        assert reply.status == 403 and "SERIN_FEEDBACK_TOKEN" in reply.json()["error"], reply.body
        assert "fraud-serin-feedback-sender" in reply.json()["error"]
        assert open_.request("POST", "/v2/models/fraud/feedback", body).status == 200
    finally:
        stop_server(closed)
        stop_server(open_)


def test_the_sender_check_on_a_table_of_headers() -> None:
    senders = fb.Senders("s3cret", secret="m-serin-feedback")
    senders.check(b"Bearer s3cret")
    senders.check(b"BEARER   s3cret ")
    for header in (None, b"", b"s3cret", b"Bearer", b"Token s3cret", b"Bearer s3cre", b"Bearer s3cret2", b"Bearer \xff",
                   b"Bearer ??????"):
        with pytest.raises(fb.FeedbackError) as refused:
            senders.check(header)
        assert refused.value.status == 401, header
    with pytest.raises(fb.FeedbackError) as none:
        fb.Senders("", secret="m-serin-feedback").check(b"Bearer anything")
    assert none.value.status == 403 and "m-serin-feedback" in none.value.message
    fb.Senders("", anyone=True).check(None)
    # A token that is not Latin-1 is compared as UTF-8 bytes: "??????" (what an encoding with
    # replacement would make of it) does not pass for it, its own bytes do.
    unicode = fb.Senders("jeton-\u00e9\u4e2d\u6587")
    unicode.check("Bearer jeton-\u00e9\u4e2d\u6587".encode())
    with pytest.raises(fb.FeedbackError):
        unicode.check(b"Bearer jeton-??????")


def test_a_key_other_replicas_do_not_share_makes_their_ids_unknown(models: dict[str, Path], tmp_path: Path) -> None:
    a = serve(tmp_path, models["numeric"], "fraud", "--revision", "ra", env=KEY)
    other = serve(tmp_path, models["numeric"], "fraud", "--revision", "rb",
                  env={"SERIN_FEEDBACK_KEY": "another", "SERIN_FEEDBACK_TOKEN": TOKEN})
    try:
        answer = infer(a, rows(1))
        status, body = feedback(other, {"id": answer["id"], "truth": labels(answer)})
        assert status == 404 and "no valid signature" in body["error"]
    finally:
        stop_server(a)
        stop_server(other)


def test_a_client_id_is_echoed_and_the_prediction_id_rides_in_parameters(pair) -> None:  # type: ignore[no-untyped-def]
    a, _ = pair
    answer = infer(a, rows(2), id="client-42")
    assert answer["id"] == "client-42"
    token = answer["parameters"]["prediction_id"]
    assert feedback(a, {"id": token, "truth": labels(answer)})[0] == 200
    # V1: the id is in the answer, and `:feedback` takes the same body.
    reply = a.predict(rows(2).tolist())
    assert reply.status == 200
    v1 = reply.json()
    reply = a.request("POST", "/v1/models/fraud:feedback", {"id": v1["id"], "truth": v1["predictions"]},
                      headers=SENDER)
    assert reply.status == 200, reply.body


def test_regressor_feedback_counts_absolute_and_squared_error(models: dict[str, Path], tmp_path: Path) -> None:
    srv = serve(tmp_path, models["regressor"], "price", "--revision", "r1", env=KEY)
    try:
        x = np.random.default_rng(3).normal(size=(4, 3)).astype(np.float32)
        reply = srv.infer([{"name": "input", "shape": [4, 3], "datatype": "FP32", "data": x.ravel().tolist()}])
        answer = reply.json()
        predicted = np.asarray(answer["outputs"][0]["data"], dtype=np.float64)
        truth = (predicted + np.array([1.0, -2.0, 0.5, 0.0])).tolist()
        status, body = feedback(srv, {"id": answer["id"], "truth": truth})
        assert status == 200, body
        status, body = feedback(srv, {"id": answer["id"], "truth": ["a", 1, 2, 3]})
        assert status == 400 and "is not a number" in body["error"]
        m = srv.metrics()
        assert counter(m, "serin_feedback_absolute_error_total", "r1") == pytest.approx(3.5, abs=1e-4)
        assert counter(m, "serin_feedback_squared_error_total", "r1") == pytest.approx(5.25, abs=1e-3)
    finally:
        stop_server(srv)


# -- issue 32 #5: one count per prediction across replicas -------------------------------------------

HERE = {**KEY, "SERIN_POD_IP": "127.0.0.1"}  # each replica's address is 127.0.0.1 and its own port


def total(servers: list[Server], name: str, revision: str) -> float:
    return sum(counter(s.metrics(), name, revision) for s in servers)


def routed(srv: Server, route: str) -> float:
    found = re.search(rf'serin_feedback_routed_total{{[^}}]*route="{route}"[^}}]*}} (\S+)', srv.metrics())
    assert found, srv.metrics()
    return float(found.group(1))


@pytest.fixture
def replicas(models: dict[str, Path], tmp_path: Path):  # type: ignore[no-untyped-def]
    """Three replicas that know their address, each with its own state (as Pods have): two of the
    stable revision (the first with two workers) and a canary. An issuer that refuses connections
    is taken for gone after 2 s (60 s by default: longer than a container restart)."""
    made = [serve(tmp_path, models["numeric"], "fraud", "--revision", rev, *extra, "--feedback-gone-after", "2",
                  "--state-dir", str(tmp_path / f"state-{i}"), env=HERE)
            for i, (rev, extra) in enumerate((("rev-a", ("--workers", "2")), ("rev-a", ()), ("rev-b", ())))]
    yield made
    for srv in made:
        stop_server(srv)


def test_the_same_truth_sent_to_every_replica_counts_once_where_it_was_predicted(replicas) -> None:  # type: ignore[no-untyped-def]
    a, b, c = replicas
    answers = [infer(a, rows(3, seed)) for seed in range(4)]
    # A pipeline that retries on every replica (or a Service spreading its retries): each truth is
    # taken once, by the issuer's own store, whichever replica it reaches first.
    for answer in answers:
        body = {"id": answer["id"], "truth": labels(answer)}
        outcomes = [feedback(srv, body) for srv in (b, c, a, b, c)]
        assert outcomes[0] == (200, {"id": answer["id"], "revision": "rev-a", "rows": 3}), outcomes
        assert [status for status, _ in outcomes[1:]] == [409] * 4, outcomes
        assert all("already recorded" in reply["error"] for _, reply in outcomes[1:])
    assert total([a, b, c], "serin_feedback_rows_total", "rev-a") == 4 * 3
    assert counter(a.metrics(), "serin_feedback_rows_total", "rev-a") == 4 * 3  # counted by the issuer
    assert (routed(b, "forwarded"), routed(a, "received"), routed(b, "issuer_gone")) == (4, 4, 0)
    # Truth for the canary's answers goes to the canary, wherever it is sent.
    answer = infer(c, rows(2, 9))
    assert feedback(a, {"id": answer["id"], "truth": labels(answer)}) == (
        200, {"id": answer["id"], "revision": "rev-b", "rows": 2})
    assert counter(c.metrics(), "serin_feedback_rows_total", "rev-b") == 2
    # Bad feedback is refused by the replica it reached, not forwarded.
    assert feedback(b, {"id": answer["id"], "truth": [7, 7]})[0] == 400
    assert feedback(b, {"id": answer["id"] + "x", "truth": labels(answer)})[0] == 404


def taken_after_retries(srv: Server, body: dict) -> tuple[int, dict]:  # type: ignore[type-arg]
    """As a pipeline does: retry on 503 (the issuer does not answer yet); the first answer was one."""
    first = feedback(srv, body)
    assert first[0] == 503 and "does not answer" in first[1]["error"], first
    deadline = time.monotonic() + 20
    while True:
        time.sleep(0.5)
        status, reply = feedback(srv, body)
        if status != 503 or time.monotonic() > deadline:
            return status, reply


def test_truth_for_a_replica_that_is_gone_is_taken_where_it_arrives(replicas) -> None:  # type: ignore[no-untyped-def]
    a, b, c = replicas
    answer = infer(a, rows(2, 1))
    stop_server(a)  # the Pod that answered is replaced: nothing listens at its address
    body = {"id": answer["id"], "truth": labels(answer)}
    # 503 while it may be restarting (it would keep its store), taken here once it has been silent.
    assert taken_after_retries(b, body) == (200, {"id": answer["id"], "revision": "rev-a", "rows": 2})
    assert feedback(b, body)[0] == 409
    assert routed(b, "issuer_gone") == 1
    # The hole docs/security.md names: with its issuer gone, another replica takes it once more.
    assert taken_after_retries(c, body)[0] == 200


def test_forwarded_truth_opens_only_at_its_issuer_and_only_its_answer_is_believed(
        replicas, models: dict[str, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import socket
    import threading

    a, b, _ = replicas
    answer = infer(a, rows(1, 2))
    raw = json.dumps({"id": answer["id"], "truth": labels(answer)}).encode()
    path = "/v2/models/fraud/feedback"
    same_model = fb.PredictionIds(fb.key_from(KEY["SERIN_FEEDBACK_KEY"]), "fraud", "x", TASK, None)
    other_model = fb.PredictionIds(fb.key_from("another model's key"), "fraud", "x", TASK, None)
    issuer_a = same_model.verify(answer["id"], time.time(), 3600).issuer
    issuer_b = same_model.verify(infer(b, rows(1, 3))["id"], time.time(), 3600).issuer
    assert issuer_a is not None and issuer_b is not None and issuer_a.store != issuer_b.store
    forwarded = {"serin-forwarded": "1", "Content-Type": "application/octet-stream"}
    # Without the sender token, only a body sealed with this Model's key for this very replica
    # opens: not one sealed for another replica (a replay), nor with another key, nor in clear.
    for sealed in (raw, same_model.seal_for(issuer_b, raw), other_model.seal_for(issuer_a, raw), b"x" * 64):
        reply = a.request("POST", path, sealed, headers=forwarded)
        assert reply.status == 421 and "does not open here" in reply.json()["error"], reply.body
    sealed = same_model.seal_for(issuer_a, raw)
    reply = a.request("POST", path, sealed, headers=forwarded)
    assert reply.status == 200, reply.body
    # Its answer carries the issuer's tag over (request, status, body); a replay is a 409, tagged.
    tag = {k.lower(): v for k, v in reply.headers.items()}["serin-forwarded-answer"].encode()
    assert tag == same_model.answer_tag(sealed[:12], 200, reply.body)
    again = a.request("POST", path, sealed, headers=forwarded)
    assert again.status == 409 and b.request("POST", path, sealed, headers=forwarded).status == 421
    # An id whose issuer's address now holds something else (another tenant's Pod, say): it gets
    # neither the token nor the truth (sealed), and its "200" is not believed: taken here.
    seen: list[bytes] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def answer_once() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < 40:
                    data += conn.recv(65536)
                seen.append(data)
                conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}')

        thread = threading.Thread(target=answer_once, daemon=True)
        thread.start()
        elsewhere = fb.PredictionIds(fb.key_from(KEY["SERIN_FEEDBACK_KEY"]), "fraud", "rev-a", TASK, None,
                                     fb.Issuer("127.0.0.1", listener.getsockname()[1], b"12345678"))
        token = elsewhere.issue(1, {"label": np.array([1])})
        assert token is not None
        assert feedback(b, {"id": token, "truth": [1]}) == (200, {"id": token, "revision": "rev-a", "rows": 1})
        thread.join(10)
    assert len(seen) == 1 and b"serin-forwarded: 1" in seen[0], seen
    assert TOKEN.encode() not in seen[0] and b"authorization" not in seen[0].lower()
    assert token.encode() not in seen[0] and b"truth" not in seen[0]
    assert routed(b, "issuer_gone") == 1


def test_an_id_names_its_issuer_sealed_from_clients() -> None:
    issuer = fb.Issuer("10.244.0.17", 8080, b"\x01" * 8)
    made = fb.PredictionIds(fb.key_from("k"), "m", "rev-1", TASK, "probabilities", issuer)
    token = made.issue(1, {"label": np.array([2]), "probabilities": np.array([[0.1, 0.2, 0.7]])})
    assert token is not None
    assert bytes([10, 244, 0, 17]) not in base64.urlsafe_b64decode(token + "==")
    pred = ids().verify(token, now=time.time(), max_age=60)  # any replica holding the key reads it
    assert pred.issuer == issuer and pred.labels == ("2",)
    v6 = fb.PredictionIds(fb.key_from("k"), "m", "rev-1", TASK, None, fb.Issuer("fd00:10:244::5", 8080, b"\x02" * 8))
    assert ids().verify(v6.issue(1, {"label": np.array([0])}), now=time.time(), max_age=60).issuer == (
        fb.Issuer("fd00:10:244::5", 8080, b"\x02" * 8))
    # Without an address (no $SERIN_POD_IP): ids as before, truth taken by any replica.
    plain = ids().issue(1, {"label": np.array([0])})
    assert ids().verify(plain, now=time.time(), max_age=60).issuer is None
    assert fb.own_address("", 8080) is None and fb.own_address("not-an-ip", 8080) is None
    assert fb.own_address(" 10.0.0.1\n", 8080) == ("10.0.0.1", 8080)


# --- the Forwarder against what may answer at an issuer's address (real sockets, in-process) ----

class FakeIssuer:
    """A TCP server on loopback answering each forwarded request as `behaviour` says."""

    def __init__(self, behaviour: str, ids_: fb.PredictionIds) -> None:
        self.behaviour, self.ids, self.requests = behaviour, ids_, 0

    async def __aenter__(self) -> fb.Issuer:
        import asyncio

        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return fb.Issuer("127.0.0.1", self.server.sockets[0].getsockname()[1], b"s" * 8)

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def handle(self, reader, writer) -> None:  # type: ignore[no-untyped-def]
        import asyncio

        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        sealed = await reader.readexactly(length)
        self.requests += 1
        if self.behaviour == "hang":
            await asyncio.sleep(30)
        elif self.behaviour == "reset":
            writer.transport.abort()
            return
        elif self.behaviour == "garbage":
            writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        else:
            status = {"tagged-409": 409, "tagged-500": 500, "untagged-200": 200, "tagged-421": 421}[self.behaviour]
            body = b'{"error": "x"}'
            tag = self.ids.answer_tag(sealed[:12], status, body) if self.behaviour.startswith("tagged") else b"0" * 32
            writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nserin-forwarded-answer: %s\r\n\r\n%s"
                         % (status, len(body), tag, body))
        await writer.drain()
        writer.close()


@pytest.mark.parametrize(("behaviour", "outcome"), [
    ("tagged-409", 409),  # the issuer refused it: the sender is told so
    ("tagged-500", 502),  # the issuer failed, after maybe taking it: retry (409 if taken), no local count
    ("hang", 504),  # may have taken it: retry, no local count
    ("reset", 502),
    ("untagged-200", None),  # not the issuer, whatever it says: taken where it arrived
    ("tagged-421", None),  # this Model's replica, not the issuer (a later Pod at the address)
    ("garbage", None),  # not Serin's runtime
])
async def test_the_forwarder_counts_locally_only_when_the_issuer_cannot_have_taken_it(
        behaviour: str, outcome: int | None) -> None:
    same = fb.PredictionIds(fb.key_from("k"), "m", "r", TASK, None)
    forwarder = fb.Forwarder()
    forwarder.ANSWER_TIMEOUT_S = 1.0
    async with FakeIssuer(behaviour, same) as issuer:
        if outcome is None:
            assert await forwarder.send(issuer, "/v2/models/m/feedback", b"{}", same) is None
        elif outcome == 409:
            reply = await forwarder.send(issuer, "/v2/models/m/feedback", b"{}", same)
            assert reply is not None and reply.status == 409
        else:
            with pytest.raises(fb.FeedbackError) as refused:
                await forwarder.send(issuer, "/v2/models/m/feedback", b"{}", same)
            assert refused.value.status == outcome


async def test_an_address_that_refuses_connections_is_503_then_gone_and_forwards_are_bounded() -> None:
    import asyncio

    same = fb.PredictionIds(fb.key_from("k"), "m", "r", TASK, None)
    with socket_port() as port:
        nobody = fb.Issuer("127.0.0.1", port, b"n" * 8)  # nothing listens there
    forwarder = fb.Forwarder(gone_after=0.5)
    for _ in range(2):
        with pytest.raises(fb.FeedbackError) as restarting:
            await forwarder.send(nobody, "/v2/models/m/feedback", b"{}", same)
        assert restarting.value.status == 503
    await asyncio.sleep(0.6)
    assert await forwarder.send(nobody, "/v2/models/m/feedback", b"{}", same) is None  # gone: taken here
    assert await forwarder.send(nobody, "/v2/models/m/feedback", b"{}", same) is None  # remembered, no connect
    # Beyond max_in_flight, a 429 at once rather than a queue.
    bounded = fb.Forwarder(max_in_flight=1)
    bounded.ANSWER_TIMEOUT_S = 2.0
    async with FakeIssuer("hang", same) as slow:
        first = asyncio.create_task(bounded.send(slow, "/v2/models/m/feedback", b"{}", same))
        await asyncio.sleep(0.3)
        with pytest.raises(fb.FeedbackError) as busy:
            await bounded.send(slow, "/v2/models/m/feedback", b"{}", same)
        assert busy.value.status == 429
        with pytest.raises(fb.FeedbackError):
            await first


def socket_port():  # type: ignore[no-untyped-def]
    """A loopback port nothing listens on once the block ends."""
    import contextlib
    import socket

    @contextlib.contextmanager
    def port():  # type: ignore[no-untyped-def]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            yield s.getsockname()[1]

    return port()


# --- the id itself, without a server --------------------------------------------------------------

TASK = Task("classification", "label", ("0", "1", "2"))


def ids(key: str = "k") -> fb.PredictionIds:
    return fb.PredictionIds(fb.key_from(key), "m", "rev-1", TASK, "probabilities")


def test_an_id_carries_what_was_predicted_and_expires() -> None:
    p = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]])
    token = ids().issue(2, {"label": np.array([1, 0]), "probabilities": p}, now=1_000_000)
    assert token is not None
    pred = ids().verify(token, now=1_000_060, max_age=3600)
    assert pred.revision == "rev-1" and pred.labels == ("1", "0") and pred.rows == 2
    assert pred.probabilities is not None and np.allclose(pred.probabilities, p, atol=1e-4)
    with pytest.raises(fb.FeedbackError) as late:
        ids().verify(token, now=1_000_000 + 7200, max_age=3600)
    assert late.value.status == 410
    with pytest.raises(fb.FeedbackError) as other_key:
        ids("other").verify(token, now=1_000_060, max_age=3600)
    assert other_key.value.status == 404


def test_probabilities_that_disagree_with_the_labels_are_left_out() -> None:
    # Columns in another order than the classes: the most probable one is not the label.
    token = ids().issue(1, {"label": np.array([0]), "probabilities": np.array([[0.1, 0.8, 0.1]])})
    assert token is not None
    pred = ids().verify(token, now=time.time(), max_age=60)
    assert pred.labels == ("0",) and pred.probabilities is None
    scores = fb.score(pred, TASK.classes, [0])
    assert scores.correct == 1 and scores.scored_rows == 0

def test_a_one_row_answer_reads_back_as_the_general_path_writes_it() -> None:
    """One-row answers take their own path (the common case, kept cheap): what it seals reads
    back the same as a two-row answer's row, including probabilities a model rounds past 1 or makes
    infinite (clipped to the 16-bit range) or NaN (left out), labels as ints or strings, unknown
    labels (kept raw)."""
    many = ids()
    for label, p in [(np.array([2]), [[0.05, 0.15, 0.8]]), (np.array(["1"]), [[0.2, 0.5, 0.3]]),
                     (np.array([0]), [[1.0000002, 0.0, -1e-9]]), (np.array([1]), [[np.nan, 0.9, 0.1]]),
                     (np.array([0]), [[np.inf, 0.0, -np.inf]])]:
        probabilities = np.array(p, dtype=np.float32)
        one = many.verify(many.issue(1, {"label": label, "probabilities": probabilities}), time.time(), 60)
        two = many.verify(many.issue(2, {"label": np.repeat(label, 2), "probabilities": np.repeat(probabilities, 2, axis=0)}),
                          time.time(), 60)
        assert one.labels == two.labels[:1]
        if two.probabilities is None:
            assert one.probabilities is None
        else:
            assert one.probabilities is not None and np.allclose(one.probabilities, two.probabilities[:1], atol=2e-5)
    rows = fb.SMALL_ANSWER  # past the plain-Python path: numpy's
    p = np.tile([0.1, 0.2, 0.7], (rows, 1))
    p[3, 0] = np.nan
    big = many.verify(many.issue(rows, {"label": np.full(rows, 2), "probabilities": p}), time.time(), 60)
    assert big.labels == ("2",) * rows and big.probabilities is None  # a NaN is not a probability to score
    junk = many.verify(many.issue(1, {"label": np.array([7])}), time.time(), 60)
    assert junk.labels == ("7",)  # not a class of the profile: the label itself travels
    for label in range(1000):  # a model answering ever new labels does not grow the lookup
        many.issue(1, {"label": np.array([label + 10])})
    assert len(many._column) <= 4 * len(TASK.classes) + 16
    assert len({many.issue(1, {"label": np.array([0])}) for _ in range(100)}) == 100  # every id its own


def test_an_answer_too_large_for_an_id_gets_none() -> None:
    n = fb.MAX_PAYLOAD_BYTES  # more rows than the payload can hold
    assert ids().issue(n, {"label": np.zeros(n, np.int64), "probabilities": np.tile([1.0, 0, 0], (n, 1))}) is None


def test_scores_on_a_table_of_outcomes() -> None:
    pred = fb.Prediction("r", 0.0, b"t", 4, "classification", labels=("0", "1", "2", "1"),
                         probabilities=np.array([[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [0.0, 0.1, 0.9], [0.3, 0.4, 0.3]]))
    s = fb.score(pred, TASK.classes, [0, 1, 2, 0])
    assert s.correct == 3 and s.rows == 4 and s.scored_rows == 4
    assert s.log_loss == pytest.approx(-(np.log(0.5) + np.log(0.6) + np.log(0.9) + np.log(0.3)))
    assert s.brier == pytest.approx((0.25 + 0.0625 * 2) + (0.04 + 0.16 + 0.04) + (0 + 0.01 + 0.01) + (0.49 + 0.16 + 0.09))


def test_the_label_free_estimate_counts_every_answered_row(pair) -> None:  # type: ignore[no-untyped-def]
    a, _ = pair
    # One 30-row answer and five one-row answers (counted on the request path's cheap branch).
    answers = [infer(a, rows(30, seed=9))] + [infer(a, rows(1, seed=s)) for s in range(20, 25)]
    probabilities = np.concatenate([
        np.asarray(next(o for o in answer["outputs"] if o["name"] == "probabilities")["data"]).reshape(-1, 2)
        for answer in answers])
    deadline = time.monotonic() + 5
    while counter(a.metrics(), "serin_estimated_rows_total", "rev-a") < 35 and time.monotonic() < deadline:
        time.sleep(0.2)
    m = a.metrics()
    # No calibration in this profile: the probability of each predicted class, added up.
    assert counter(m, "serin_estimated_rows_total", "rev-a") == 35
    assert counter(m, "serin_estimated_correct_total", "rev-a") == pytest.approx(probabilities.max(axis=1).sum(), abs=1e-4)


# -- issue 32 #6: the feedback store and endpoint are bounded by count and rate, not age only --

def test_a_full_store_refuses_new_truth_with_503_and_takes_it_again_when_ids_age_out(tmp_path: Path) -> None:
    store = fb.SeenStore(tmp_path / "seen.sqlite", max_age=3600, max_ids=3)
    issue = ids()
    p = np.array([[0.9, 0.05, 0.05]])
    preds = [issue.verify(issue.issue(1, {"label": np.array([0]), "probabilities": p}, now=1000 + i), now=1010,
                          max_age=3600) for i in range(5)]
    assert [store.record(pred, now=1010) for pred in preds[:3]] == [None, None, None]
    with pytest.raises(fb.FeedbackError) as full:
        store.record(preds[3], now=1010)
    assert full.value.status == 503 and "3 predictions at most" in full.value.message
    assert store.record(preds[0], now=1011) == 1010, "a duplicate is still told as one, full or not"
    # Past max age (+ the hour of grace) the first ids are pruned: room again, exactly as much.
    later = 1000 + 3600 + 3600 + 61
    assert store.record(preds[3], now=later) is None
    store.close()


def test_a_flood_of_feedback_gets_429_beyond_the_rate(tmp_path: Path) -> None:
    store = fb.SeenStore(tmp_path / "seen.sqlite", max_age=3600)
    issue = ids()
    take = fb.Feedback(issue, store, None, max_age=3600, rate=2.0)  # bursts of 4
    p = np.array([[0.9, 0.05, 0.05]])
    tokens = [issue.issue(1, {"label": np.array([0]), "probabilities": p}, now=1000 + i) for i in range(8)]
    answers = []
    for token in tokens[:5]:
        try:
            answers.append(take.take({"id": token, "truth": [0]}, now=1010, clock=50.0)["rows"])
        except fb.FeedbackError as exc:
            answers.append(exc.status)
    assert answers == [1, 1, 1, 1, 429]
    assert take.take({"id": tokens[5], "truth": [0]}, now=1010, clock=50.5)["rows"] == 1  # one more per 1/rate s
    with pytest.raises(fb.FeedbackError) as flood:
        take.take({"id": tokens[6], "truth": [0]}, now=1010, clock=50.5)
    assert flood.value.status == 429 and "--feedback-rate" in flood.value.message
    # Junk is refused before it is charged: forged ids cannot use up the rate of real senders.
    fresh = fb.Feedback(issue, store, None, max_age=3600, rate=2.0)
    for _ in range(20):
        with pytest.raises(fb.FeedbackError) as forged:
            fresh.take({"id": "AAAA" + tokens[7][4:], "truth": [0]}, now=1010, clock=60.0)
        assert forged.value.status == 404
    assert fresh.take({"id": tokens[7], "truth": [0]}, now=1010, clock=60.0)["rows"] == 1
    store.close()


def test_the_served_endpoint_applies_both_bounds(models: dict[str, Path], tmp_path: Path) -> None:
    srv = serve(tmp_path, models["numeric"], "fraud", "--revision", "r1", "--state-dir", str(tmp_path / "s"),
                "--feedback-max-ids", "2", "--feedback-rate", "0", env=KEY)
    try:
        answers = [infer(srv, rows(1, seed)) for seed in range(3)]
        got = [feedback(srv, {"id": a["id"], "truth": labels(a)}) for a in answers]
        assert [status for status, _ in got] == [200, 200, 503], got
        assert "at most" in got[2][1]["error"]
        assert counter(srv.metrics(), "serin_feedback_requests_total", "r1") >= 3
    finally:
        stop_server(srv)
