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

    async def _query(self, query: str) -> object:
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
            async with asyncio.timeout(max(0.1, deadline - loop.time())), \
                    self._client().get(f"{self.url}/api/v1/query", params={"query": query}) as resp:
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


def parse_vector(body: object, label: str) -> tuple[dict[str, float], str]:
    failure = _failure(body)
    if failure:
        return {}, failure
    assert isinstance(body, dict)
    data = body.get("data") or {}
    if data.get("resultType") != "vector":
        return {}, f"unsupported result type {data.get('resultType')!r}"
    out: dict[str, float] = {}
    for sample in data.get("result") or []:
        value = _number(sample["value"][1])
        key = (sample.get("metric") or {}).get(label)
        if key is not None and value is not None:
            out[str(key)] = value
    return out, ""


def parse_response(metric: str, body: object) -> MeasuredValue:
    """One number from an instant query, or why there is none (which makes it Inconclusive)."""
    failure = _failure(body)
    if failure:
        return MeasuredValue(metric, None, failure)
    assert isinstance(body, dict)
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        if not isinstance(result, list) or len(result) != 2:
            return MeasuredValue(metric, None, "prometheus error: malformed scalar result")
        return MeasuredValue(metric, _number(result[1]))
    if kind == "vector":
        if not result:
            return MeasuredValue(metric, None)  # no series: no data yet
        if len(result) > 1:
            return MeasuredValue(metric, None, f"query returned {len(result)} series; aggregate it to one")
        return MeasuredValue(metric, _number(result[0]["value"][1]))
    return MeasuredValue(metric, None, f"unsupported result type {kind!r}")


def _number(text: str) -> float | None:
    value = float(text)
    return None if math.isnan(value) else value
