"""gatewayErrorRate (issue 32 #8): the query for each Gateway implementation, and why it is not
sent when the Gateway's answers cannot be read. On the real node, Traefik's own counters fail a
dying canary: tests/cluster/test_kserve.py::test_requests_a_dying_canary_never_answered_fail_it_as_the_gateway_counted_them."""

from __future__ import annotations

import pytest
from serin.operator import gateway_metrics, queries
from serin.operator.queries import QueryContext
from serin.operator.routing import parse_gateway
from serin.operator.spec import Builtin, MetricSpec

TRAEFIK = gateway_metrics.Traefik('job="traefik"')


def test_traefik_names_a_backend_service_as_its_gateway_provider_does() -> None:
    t = TRAEFIK
    assert t.service("models", "fraud-gen2-predictor", 80) == "models-fraud-gen2-predictor-http-80@kubernetesgateway"
    q = t.error_share("models", "fraud-gen2-predictor", 80, "30s")
    # Only the Gateway's own target: a tenant's Pod exposing a series of that name is not read.
    sel = 'job="traefik",service="models-fraud-gen2-predictor-http-80@kubernetesgateway"'
    assert q == (f'(sum(rate(traefik_service_requests_total{{{sel},code=~"5.."}}[30s])) or vector(0))'
                 f" / sum(rate(traefik_service_requests_total{{{sel}}}[30s]))")


@pytest.mark.parametrize(("value", "name"), [("", None), (" ", None), ("traefik", "traefik"), ("Traefik\n", "traefik")])
def test_the_operator_is_told_which_gateway_metrics_to_read(value: str, name: str | None) -> None:
    parsed = gateway_metrics.parse(value, 'job="traefik"')
    assert (parsed.name if parsed else None) == name
    gw = parse_gateway("serin-gateway/serin", metrics=value, metrics_selector='job="traefik"')
    assert gw is not None and (gw.metrics.name if gw.metrics else None) == name


@pytest.mark.parametrize("selector", ['job="traefik"', 'namespace="traefik", job=~"traefik|gw",',
                                      ' job = "a\\"b" '])
def test_the_gateways_scrape_target_is_named_by_label_matchers(selector: str) -> None:
    parsed = gateway_metrics.parse("traefik", selector)
    assert parsed is not None and selector.strip().rstrip(",").strip() in parsed.error_share("n", "s", 80, "1m")


@pytest.mark.parametrize("selector", ["", "  ", "job", 'job="x"} or vector(1) #', 'job="x") or up{a="b"',
                                      "job='x'", 'job="x\ny"', '1job="x"'])
def test_a_missing_or_malformed_selector_is_refused_at_start(selector: str) -> None:
    with pytest.raises(ValueError, match="SERIN_GATEWAY_METRICS_SELECTOR must name the Gateway's own scrape target"):
        gateway_metrics.parse("traefik", selector)


def test_an_unknown_gateway_is_refused_at_start_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match="SERIN_GATEWAY_METRICS must be one of traefik"):
        gateway_metrics.parse("envoy", 'job="x"')


GATE = MetricSpec(name="gateway-errors", builtin=Builtin.GATEWAY_ERROR_RATE, max=0.01)


def context(traffic: str, metrics: gateway_metrics.GatewayMetrics | None,
            service: str = "fraud-gen2-predictor") -> QueryContext:
    errors, refusal = queries.gateway_query(metrics, traffic, "models", service, 80, "30s")
    return QueryContext(model="fraud", namespace="models", revision="gen2", stable_revision="gen1", window="30s",
                        gateway_errors=errors, gateway_refusal=refusal)


def test_gateway_error_rate_reads_the_canarys_backend_when_routed_through_a_known_gateway() -> None:
    ctx = context("gateway", TRAEFIK)
    assert queries.refusal(GATE, ctx) == ""
    assert queries.render(GATE, ctx) == TRAEFIK.error_share("models", "fraud-gen2-predictor", 80, "30s")


@pytest.mark.parametrize(("traffic", "metrics", "words"), [
    ("replicaRatio", TRAEFIK, "not routed through a Gateway"),
    ("knative", TRAEFIK, "not routed through a Gateway"),
    ("gateway", None, "the chart's gateway.metrics"),
    ("gateway", TRAEFIK, "the canary's predictor is not known yet"),
])
def test_gateway_error_rate_says_why_it_cannot_be_read_and_sends_nothing(
        traffic: str, metrics: gateway_metrics.GatewayMetrics | None, words: str) -> None:
    ctx = context(traffic, metrics, service="" if "not known" in words else "fraud-gen2-predictor")
    assert words in queries.refusal(GATE, ctx)
    # Other metrics are not affected.
    assert queries.refusal(MetricSpec(name="errors", builtin=Builtin.ERROR_RATE, max=0.01), ctx) == ""
