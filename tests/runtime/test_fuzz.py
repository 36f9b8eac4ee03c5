"""Malformed bodies and shapes thrown at both inference endpoints: never a 5xx, never a dead
worker."""

from __future__ import annotations

import json
from typing import Any

from conftest import Server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=25,
)
shapes = st.one_of(
    st.lists(st.integers(min_value=-3, max_value=6), max_size=4),
    st.lists(st.integers(min_value=0, max_value=2**40), max_size=3),
    json_values,
)
datatypes = st.sampled_from(["FP32", "FP64", "INT64", "BYTES", "BOOL", "fp32", "", "X"]) | scalars
tensors = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["input", "age", "income", "color", "other"]) | scalars,
        "shape": shapes, "datatype": datatypes,
        "data": st.lists(st.floats(width=32) | st.integers(-5, 5), max_size=12) | json_values,
    },
)
v2_bodies = st.fixed_dictionaries({}, optional={
    "inputs": st.lists(tensors, max_size=3) | json_values, "id": json_values,
    "outputs": json_values,
})
v1_bodies = st.fixed_dictionaries({}, optional={
    "instances": st.lists(st.lists(st.floats() | st.integers(-3, 3), max_size=5)
                          | st.dictionaries(st.sampled_from(["input", "x"]), json_values),
                          max_size=4) | json_values,
})


def encode(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


bodies = st.one_of(
    v2_bodies.map(encode), v1_bodies.map(encode), json_values.map(encode),
    st.binary(max_size=64),
    # Valid JSON with a byte flipped or truncated.
    v2_bodies.map(encode).flatmap(lambda b: st.integers(0, max(0, len(b) - 1)).map(
        lambda i: b[:i])),
)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=True)
@given(body=bodies, v1=st.booleans(), mixed=st.booleans())
def test_fuzzed_bodies_never_5xx(
    server: Server, mixed_server: Server, body: bytes, v1: bool, mixed: bool
) -> None:
    target = mixed_server if mixed else server
    name = target.name
    path = f"/v1/models/{name}:predict" if v1 else f"/v2/models/{name}/infer"
    reply = target.post(path, body)
    assert reply.status < 500, (path, body, reply.body)
    if reply.status != 200:
        assert isinstance(reply.json()["error"], str)


def test_servers_alive_after_fuzzing(server: Server, mixed_server: Server) -> None:
    assert server.alive() and mixed_server.alive()
    assert server.predict([[0.0, 0.0, 0.0, 0.0]]).status == 200
    assert mixed_server.predict([{"age": 1.0, "income": 2.0, "color": "red"}]).status == 200
