"""5xx as the Gateway answered them (issue 32 #8): what a canary's users got, including requests
its Pods never answered. The runtime counts only the answers it gives (`errorRate`); a Pod that
dies, is OOM-killed or resets connections answers nothing, and the Gateway answers 502 or 504
for it. Gateway API defines no metrics, so each implementation is one small class here naming its
request counter for one backend Service; the operator is told which one the cluster runs
(SERIN_GATEWAY_METRICS, the chart's gateway.metrics), never guesses it, and which scrape target is
the Gateway's own (SERIN_GATEWAY_METRICS_SELECTOR): any target Prometheus scrapes could expose a
series of the same name and labels (a tenant's Pod under a PodMonitor), padding a broken canary's
requests with 200s or a neighbour's with 5xx, so the query reads only the series of that target."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

ENV = "SERIN_GATEWAY_METRICS"
SELECTOR_ENV = "SERIN_GATEWAY_METRICS_SELECTOR"
# Label matchers as PromQL writes them: name="value", name=~"regex", ... separated by commas.
_MATCHER = r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"(?:[^"\\\n]|\\.)*"\s*'
_SELECTOR = re.compile(rf"^{_MATCHER}(,{_MATCHER})*,?\s*$")


class GatewayMetrics(Protocol):
    @property
    def name(self) -> str: ...

    def error_share(self, namespace: str, service: str, port: int, window: str) -> str:
        """PromQL: the share of the requests the Gateway sent to `service:port` in `namespace`
        over `window` that it answered with a 5xx; no sample when none were sent."""
        ...


_NOT_NAME = re.compile(r"[^a-zA-Z0-9]+")


@dataclass(frozen=True)
class Traefik:
    """Traefik v3 with `--metrics.prometheus` (its service labels on, the default). Its Kubernetes
    Gateway provider names the service of an HTTPRoute backendRef to a Service
    `{namespace}-{name}-http-{port}` (pkg/provider/kubernetes/gateway/httproute.go,
    provider.Normalize), and its metrics add the provider, `@kubernetesgateway`."""

    selector: str  # label matchers of Traefik's own scrape target, e.g. job="traefik"
    name: str = "traefik"

    @staticmethod
    def service(namespace: str, service: str, port: int) -> str:
        # provider.Normalize: every run of characters other than letters and digits becomes "-".
        return _NOT_NAME.sub("-", f"{namespace}-{service}-http-{port}") + "@kubernetesgateway"

    def error_share(self, namespace: str, service: str, port: int, window: str) -> str:
        sel = f'{self.selector},service="{self.service(namespace, service, port)}"'
        return (f'(sum(rate(traefik_service_requests_total{{{sel},code=~"5.."}}[{window}])) or vector(0))'
                f" / sum(rate(traefik_service_requests_total{{{sel}}}[{window}]))")


KNOWN = {"traefik": Traefik}


def parse(value: str, selector: str = "") -> GatewayMetrics | None:
    """SERIN_GATEWAY_METRICS: one of KNOWN, or empty (the Gateway's metrics are not known), with
    SERIN_GATEWAY_METRICS_SELECTOR, the label matchers of the Gateway's own scrape target."""
    value = value.strip().lower()
    if not value:
        return None
    if value not in KNOWN:
        raise ValueError(f"{ENV} must be one of {', '.join(sorted(KNOWN))} (or empty), not {value!r}")
    selector = selector.strip().rstrip(",").strip()
    if not selector or not _SELECTOR.match(selector):
        raise ValueError(f"{SELECTOR_ENV} must name the Gateway's own scrape target with PromQL label matchers, "
                         f'e.g. job="traefik" (any target could expose its series), not {selector!r}')
    return KNOWN[value](selector)
