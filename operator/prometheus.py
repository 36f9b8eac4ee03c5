"""Metric providers. The analysis sees only `MetricProvider.measure(query) -> MeasuredValue`
(as Argo Rollouts' metricproviders do), and `by_label` for the one builtin PromQL cannot finish
(a regressor's predictionShift); Prometheus is the one implementation today."""

from __future__ import annotations

import asyncio
import math
from typing import Protocol

import aiohttp
from serin.operator.observations import MeasuredValue
from serin.operator.opmetrics import PROMETHEUS_QUERY_SECONDS


class MetricProvider(Protocol):
    async def measure(self, metric: str, query: str) -> MeasuredValue: ...

    async def by_label(self, query: str, label: str) -> tuple[dict[str, float], str]:
        """An instant vector as {value of `label`: sample}, and why there is none ("" if fine)."""
        ...

    async def vector(self, query: str, at: float | None = None) -> tuple[list[tuple[dict[str, str], float]], str]:
        """An instant vector evaluated at unix time `at` (now when None): every sample's labels
        and value, and why there is none ("" if fine)."""
        ...


class Prometheus:
    """At most `concurrency` queries in flight, on one connection pool: 50 rollouts analysing at
    once queue here instead of flooding Prometheus. A query that cannot start and finish within
    `timeout` (waiting included) returns no value with the reason, so the round is Inconclusive:
    a slow Prometheus delays no decision and never passes one."""

    def __init__(self, url: str, timeout: float = 5.0, concurrency: int = 16) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.slots = asyncio.Semaphore(concurrency)
        self.concurrency = concurrency
        self.waiting = 0
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.concurrency),
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def measure(self, metric: str, query: str) -> MeasuredValue:
        body = await self._query(query)
        if isinstance(body, str):
            return MeasuredValue(metric, None, body)
        return parse_response(metric, body)

    async def by_label(self, query: str, label: str) -> tuple[dict[str, float], str]:
        body = await self._query(query)
        if isinstance(body, str):
            return {}, body
        return parse_vector(body, label)

    async def vector(self, query: str, at: float | None = None) -> tuple[list[tuple[dict[str, str], float]], str]:
        body = await self._query(query, at)
        if isinstance(body, str):
            return [], body
        return parse_samples(body)

    async def _query(self, query: str, at: float | None = None) -> object:
        """The response body, or why there is none (a string)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + self.timeout
        self.waiting += 1
        try:
            async with asyncio.timeout(self.timeout):
                await self.slots.acquire()
        except TimeoutError:
            return (f"prometheus busy: no query slot within {self.timeout:g}s "
                    f"({self.concurrency} in flight, {self.waiting - 1} more waiting)")
        finally:
            self.waiting -= 1
            PROMETHEUS_QUERY_SECONDS.labels("wait").observe(loop.time() - start)
        started = loop.time()
        try:
            # Prometheus is told the same deadline: a query abandoned here must not run on there.
            params = {"query": query, "timeout": f"{self.timeout:g}s"}
            if at is not None:
                params["time"] = f"{at:.3f}"
            async with asyncio.timeout(max(0.1, deadline - loop.time())), \
                    self._client().get(f"{self.url}/api/v1/query", params=params) as resp:
                return await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            return f"prometheus unreachable: {type(err).__name__}: {err}"[:300]
        finally:
            self.slots.release()
            PROMETHEUS_QUERY_SECONDS.labels("query").observe(loop.time() - started)


def _failure(body: object) -> str:
    """Why a query response carries no result ("" when it succeeded)."""
    if isinstance(body, dict) and body.get("status") == "success":
        return ""
    error = body.get("error", "unexpected response") if isinstance(body, dict) else "unexpected response"
    return f"prometheus error: {error}"[:300]


# Everything below reads an answer from outside: any shape it has is no value with a reason (which
# the analysis judges Inconclusive), never an exception. One raised here would fail every tick of
# the Model, so a broken or hostile Prometheus could hold a canary where it is with no deadline,
# abort or rollback acting on it.
MALFORMED = "malformed prometheus answer"


def _data(body: object) -> tuple[object, object] | str:
    """(resultType, result) of a successful answer, or why there is none."""
    failure = _failure(body)
    if failure:
        return failure
    assert isinstance(body, dict)
    data = body.get("data")
    if not isinstance(data, dict):
        return f"{MALFORMED}: data is {_show(data)}, not an object"
    return data.get("resultType"), data.get("result")


def _samples(result: object) -> list[object] | str:
    if not isinstance(result, list):
        return f"{MALFORMED}: vector result is {_show(result)}, not a list"
    return result


def _sample(sample: object) -> tuple[dict[str, object], float | None] | str:
    """A vector sample's labels and value (None for NaN: no data), or why it is malformed."""
    if not isinstance(sample, dict):
        return f"sample {_show(sample)} is not an object"
    labels = sample.get("metric", {})
    if not isinstance(labels, dict):
        return f"metric {_show(labels)} is not an object"
    if "value" not in sample:
        return "no value"
    value = _value(sample["value"])
    return value if isinstance(value, str) else (labels, value)


def _value(pair: object) -> float | str | None:
    """The number of a [time, "value"] pair (None for NaN), or why it is not one."""
    if not isinstance(pair, list) or len(pair) != 2:
        return f"value {_show(pair)} is not a [time, value] pair"
    text = pair[1]
    if not isinstance(text, str):  # the HTTP API sends every sample value as a string
        return f"value {_show(text)} is not a string"
    try:
        value = float(text)
    except ValueError:
        return f"value {_show(text)} is not a number"
    if math.isnan(value):
        return None  # 0/0, e.g. a ratio over no requests: no data yet, not a malformed answer
    if math.isinf(value):
        # Not below any min nor, as -Inf, above any max: read as a number it could pass a limit.
        return f"value {text} is not finite"
    return value


def _show(value: object) -> str:
    return repr(value)[:60]


def parse_samples(body: object) -> tuple[list[tuple[dict[str, str], float]], str]:
    """Every sample of an instant vector (NaN ones left out), and why the answer is not to be
    trusted ("" if fine): the caller takes nothing from an answer with a reason."""
    data = _data(body)
    if isinstance(data, str):
        return [], data
    kind, result = data
    if kind != "vector":
        return [], f"unsupported result type {kind!r}"
    samples = _samples(result)
    if isinstance(samples, str):
        return [], samples
    out: list[tuple[dict[str, str], float]] = []
    for i, sample in enumerate(samples):
        read = _sample(sample)
        if isinstance(read, str):
            return [], f"{MALFORMED}: sample {i}: {read}"[:300]
        labels, value = read
        if value is not None:
            out.append(({str(k): str(v) for k, v in labels.items()}, value))
    return out, ""


def parse_vector(body: object, label: str) -> tuple[dict[str, float], str]:
    """The samples by their `label`, and why they are not to be trusted ("" if fine): a malformed
    sample is left out and named, and the caller takes no value from an answer with a reason."""
    data = _data(body)
    if isinstance(data, str):
        return {}, data
    kind, result = data
    if kind != "vector":
        return {}, f"unsupported result type {kind!r}"
    samples = _samples(result)
    if isinstance(samples, str):
        return {}, samples
    out: dict[str, float] = {}
    malformed: list[str] = []
    for i, sample in enumerate(samples):
        read = _sample(sample)
        if isinstance(read, str):
            malformed.append(f"sample {i}: {read}")
            continue
        labels, value = read
        key = labels.get(label)
        if key is not None and value is not None:
            out[str(key)] = value
    if malformed:
        more = f" (and {len(malformed) - 1} more)" if len(malformed) > 1 else ""
        return out, f"{MALFORMED}: {malformed[0]}{more}"[:300]
    return out, ""


def parse_response(metric: str, body: object) -> MeasuredValue:
    """One number from an instant query, or why there is none (which makes it Inconclusive)."""
    data = _data(body)
    if isinstance(data, str):
        return MeasuredValue(metric, None, data)
    kind, result = data
    if kind == "scalar":
        if not isinstance(result, list) or len(result) != 2:
            return MeasuredValue(metric, None, "prometheus error: malformed scalar result")
        value = _value(result)
        if isinstance(value, str):
            return MeasuredValue(metric, None, f"{MALFORMED}: scalar {value}"[:300])
        return MeasuredValue(metric, value)
    if kind == "vector":
        samples = _samples(result)
        if isinstance(samples, str):
            return MeasuredValue(metric, None, samples)
        if not samples:
            return MeasuredValue(metric, None)  # no series: no data yet
        if len(samples) > 1:
            return MeasuredValue(metric, None, f"query returned {len(samples)} series; aggregate it to one")
        read = _sample(samples[0])
        if isinstance(read, str):
            return MeasuredValue(metric, None, f"{MALFORMED}: {read}"[:300])
        return MeasuredValue(metric, read[1])
    return MeasuredValue(metric, None, f"unsupported result type {kind!r}")
