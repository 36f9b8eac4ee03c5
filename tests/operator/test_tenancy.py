"""A user's PromQL reads its own Model's namespace only (issue 32, item 4).

Every selector of a user query comes out with `namespace="<the Model's namespace>"`: injected when
it has none, kept when it names that one; any other namespace matcher, and what the check cannot
bound (subqueries, `@`, look-backs past an hour, namespace rewrites), refuses the query: nothing of
it is sent. The oracle here is the parser's own walk over what would be sent, not the code under
test's traversal."""

from __future__ import annotations

import promql_parser as pp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from serin.operator import queries
from serin.operator.analysis import assess
from serin.operator.observations import MeasuredValue
from serin.operator.promql import QueryRefused, confine
from serin.operator.queries import QueryContext, builtin_query, render, window_for
from serin.operator.spec import Builtin, MetricSpec
from serin.operator.status import Verdict

CTX = QueryContext("fraud", "ml", "fraud-predictor-00002", "fraud-predictor-00001", window_for(10))


def user(query: str) -> MetricSpec:
    return MetricSpec("biz", query=query, min=0)


def selectors(query: str) -> list[pp.VectorSelector]:
    """Every series selector Prometheus would evaluate, by the parser's walk (which goes on into a
    range selector's vector selector)."""
    found: list[pp.VectorSelector] = []

    def visit(node: pp.Expr) -> None:
        if isinstance(node, pp.VectorSelector):
            found.append(node)

    pp.walk(pp.parse(query), pre_visit=visit)
    return found


def namespaces(selector: pp.VectorSelector) -> list[tuple[str, str]]:
    return [(str(m.op), m.value) for m in selector.matchers.matchers if m.name == "namespace"]


def confined_to(query: str, namespace: str) -> bool:
    return all(namespaces(s) == [("MatchOp.Equal", namespace)] for s in selectors(query))


# -- attacks: refused, and nothing of them is sent ---------------------------------------------
REFUSED = [
    pytest.param('count(kube_secret_info{namespace="B"})', 'kube_secret_info{namespace="B"}', id="another-namespace"),
    pytest.param('count(kube_secret_info{namespace=~".*"})', 'namespace=~".*"', id="regex-every-namespace"),
    pytest.param('count(kube_secret_info{namespace=~"ml|B"})', 'namespace=~"ml|B"', id="regex-own-and-another"),
    pytest.param('x{namespace=~"ml"}', 'namespace=~"ml"', id="regex-even-of-its-own-namespace"),
    pytest.param('count(kube_secret_info{namespace!="ml"})', 'namespace!="ml"', id="not-its-own-namespace"),
    pytest.param('count(kube_secret_info{namespace!~"ml"})', 'namespace!~"ml"', id="negative-regex"),
    pytest.param('count(x{namespace=""})', 'namespace=""', id="empty-namespace-matches-unlabelled-series"),
    pytest.param('x{namespace="ml",namespace=~".+"}', 'namespace=~".+"', id="own-namespace-and-a-regex"),
    pytest.param('x{"namespace"="B"}', 'namespace="B"', id="quoted-label-name"),
    pytest.param(r'x{namespace="\x42"}', 'namespace="B"', id="escaped-value"),
    pytest.param('{__name__=~".+",namespace=~".+"}', 'namespace=~".+"', id="every-metric-of-every-namespace"),
    pytest.param('sum(rate(serin_requests_total{namespace="B"}[1m]))', 'namespace="B"', id="nested-in-function"),
    pytest.param('max by (model) (avg_over_time(x{namespace="B"}[5m]))', 'namespace="B"', id="nested-in-aggregation"),
    pytest.param('topk(scalar(count(y{namespace="B"})), x)', 'namespace="B"', id="in-an-aggregation-parameter"),
    pytest.param('x{namespace="ml"} / on() group_left y{namespace="B"}', 'y{namespace="B"}', id="one-side-of-a-binary-op"),
    pytest.param('x or vector(0) * -(count(y{namespace="B"}))', 'namespace="B"', id="deep-in-unary-and-binary"),
    pytest.param('absent(x{namespace="B"})', 'namespace="B"', id="absent-of-another-namespace"),
    pytest.param('max_over_time(rate(x{namespace="B"}[1m])[5m:1m])', "subquer", id="nested-in-subquery"),
    pytest.param('max_over_time(rate(x[1m])[5m:])', "subquer", id="subquery-even-confined"),
    pytest.param('label_replace(x, "namespace", "ml", "", "")', "namespace label", id="label-replace-writes-namespace"),
    pytest.param('label_join(x, "namespace", ",", "a")', "namespace label", id="label-join-writes-namespace"),
    pytest.param('count_values("namespace", x)', "namespace label", id="count-values-writes-namespace"),
    pytest.param('label_replace(x, (("namespace")), "B", "", "")', "namespace label", id="label-replace-through-parentheses"),
    pytest.param('count_values(("namespace"), x)', "namespace label", id="count-values-through-parentheses"),
    pytest.param('info(x, {k8s_cluster_name=~".+"})', "info()", id="info-joins-outside-the-namespace"),
    pytest.param("x @ 1609746000", "@", id="at-a-timestamp"),
    pytest.param("rate(x[5m] @ start())", "@", id="at-start"),
    pytest.param("x offset 2h", "offset", id="offset-past-an-hour"),
    pytest.param("rate(x[50m] offset 20m)", "1h10m", id="range-plus-offset-past-an-hour"),
    pytest.param("x offset -5m", "negative offset", id="negative-offset"),
    pytest.param("rate(x[2h])", "2h", id="range-past-an-hour"),
    pytest.param(" + ".join(["x"] * 21), "more than 20 selectors", id="too-many-selectors"),
    pytest.param('x{a="b" or c="d"}', "`or` between matchers", id="or-between-matchers"),
    pytest.param("sum(", "not PromQL", id="not-promql"),
    pytest.param("-" * 100 + "x", "nested", id="nested-too-deep"),
    # The parser checks escapes inside `raw` strings too (Go does not): write "\\d" in double quotes.
    pytest.param("x{path=~`/v\\d+`}", "unknown escape", id="limitation-backquoted-regex-escape"),
    pytest.param('sum(x{namespace="{{stableRevision}}"})', "namespace=", id="placeholder-in-the-wrong-label"),
]


@pytest.mark.parametrize(("query", "shown"), REFUSED)
def test_a_refused_query_reads_no_series(query: str, shown: str) -> None:
    """What is sent in its place selects nothing: no tenant's series, no cost."""
    assert selectors(render(user(query), CTX)) == []


@pytest.mark.parametrize(("query", "shown"), REFUSED)
def test_a_refused_query_says_why(query: str, shown: str) -> None:
    why = queries.refusal(user(query), CTX)
    assert why.startswith("query refused: ") and shown in why, why


# -- legitimate queries: sent, with the namespace enforced --------------------------------------
CONFINED = [
    pytest.param('sum(rate(x{revision="{{revision}}"}[1m]))',
                 'sum(rate(x{namespace="ml",revision="fraud-predictor-00002"}[1m]))', id="namespace-injected"),
    pytest.param("count(kube_secret_info)", 'count(kube_secret_info{namespace="ml"})', id="bare-metric-name"),
    pytest.param('count({__name__=~".+"})', 'count({namespace="ml",__name__=~".+"})', id="every-metric-of-its-namespace"),
    pytest.param('x{namespace="{{namespace}}",model="{{model}}"}', 'x{namespace="ml",model="fraud"}',
                 id="its-own-namespace-kept"),
    pytest.param('x{namespace="ml"}', 'x{namespace="ml"}', id="its-own-namespace-written-out"),
    pytest.param('x{model="fraud",namespace="ml",namespace="ml"}', 'x{namespace="ml",model="fraud"}',
                 id="its-own-namespace-twice"),
    pytest.param('sum(rate(serin_predictions_total{namespace="{{namespace}}",model="{{model}}",revision="{{revision}}",'
                 'class="1"}[2m])) / sum(rate(serin_predictions_total{namespace="{{namespace}}",model="{{model}}",'
                 'revision="{{revision}}"}[2m]))',
                 'sum(rate(serin_predictions_total{namespace="ml",model="fraud",revision="fraud-predictor-00002",'
                 'class="1"}[2m])) / sum(rate(serin_predictions_total{namespace="ml",model="fraud",'
                 'revision="fraud-predictor-00002"}[2m]))', id="the-example-models-positive-rate"),
    pytest.param('histogram_quantile(0.99, sum by (le) (rate(x_bucket{revision="{{revision}}"}[5m])))',
                 'histogram_quantile(0.99, sum by (le) (rate(x_bucket{namespace="ml",revision="fraud-predictor-00002"}[5m])))',
                 id="histogram-quantile"),
    pytest.param("sum(x) without (pod)", 'sum without (pod) (x{namespace="ml"})', id="aggregation-modifier-after"),
    pytest.param("topk(3, x)", 'topk(3, x{namespace="ml"})', id="aggregation-parameter"),
    pytest.param('count_values("v", x)', 'count_values("v", x{namespace="ml"})', id="count-values"),
    pytest.param("a / on(revision) group_left(class) b", 'a{namespace="ml"} / on (revision) group_left (class) b{namespace="ml"}',
                 id="vector-matching"),
    pytest.param("a * ignoring(code) group_right b", 'a{namespace="ml"} * ignoring (code) group_right b{namespace="ml"}',
                 id="ignoring-group-right"),
    pytest.param("x > bool 0.5", 'x{namespace="ml"} > bool 0.5', id="comparison-bool"),
    pytest.param("x unless y or vector(0)", '(x{namespace="ml"} unless y{namespace="ml"}) or vector(0)', id="set-operators"),
    pytest.param("1 - x / y", '1 - (x{namespace="ml"} / y{namespace="ml"})', id="precedence-made-explicit"),
    pytest.param("(1 - x) / y", '(1 - x{namespace="ml"}) / y{namespace="ml"}', id="parentheses-kept"),
    pytest.param("-x ^ 2", '-(x{namespace="ml"} ^ 2)', id="unary-minus-binds-looser-than-power"),
    pytest.param("2 ^ 3 ^ x", '2 ^ (3 ^ x{namespace="ml"})', id="power-is-right-associative"),
    pytest.param("x * -1", 'x{namespace="ml"} * -1', id="negative-number"),
    pytest.param("x offset 30m", 'x{namespace="ml"} offset 30m', id="offset-within-the-hour"),
    pytest.param("rate(x[30m] offset 30m)", 'rate(x{namespace="ml"}[30m] offset 30m)', id="range-plus-offset-an-hour"),
    pytest.param("increase(x[1h])", 'increase(x{namespace="ml"}[1h])', id="range-of-an-hour"),
    pytest.param("rate(x[90s])", 'rate(x{namespace="ml"}[1m30s])', id="range-in-mixed-units"),
    pytest.param('x{a=~"5..",b!="",c!~"x|y"}', 'x{namespace="ml",a=~"5..",b!="",c!~"x|y"}', id="every-match-operator"),
    pytest.param('label_replace(x, "dst", "a\\"b\\\\c\\n", "src", "(.*)")',
                 'label_replace(x{namespace="ml"}, "dst", "a\\"b\\\\c\\n", "src", "(.*)")', id="escaped-strings"),
    pytest.param("x{a='single',b=`raw\\n`}", 'x{namespace="ml",a="single",b="raw\\\\n"}', id="other-quotes"),
    pytest.param('x{"a.b"="c"}', 'x{namespace="ml","a.b"="c"}', id="utf8-label-name"),
    pytest.param('x # {namespace="B"}', 'x{namespace="ml"}', id="comment-dropped"),
    pytest.param("clamp_min(x, 1e-12) + Inf - NaN", '(clamp_min(x{namespace="ml"}, 1e-12) + Inf) - NaN', id="special-numbers"),
    pytest.param("vector(1) + scalar(x)", 'vector(1) + scalar(x{namespace="ml"})', id="no-selector-and-one"),
]


@pytest.mark.parametrize(("query", "sent"), CONFINED)
def test_a_legitimate_query_is_sent_confined(query: str, sent: str) -> None:
    rendered = render(user(query), CTX)
    assert rendered == sent
    assert confined_to(rendered, "ml")
    assert queries.refusal(user(query), CTX) == ""


def substituted(query: str) -> str:
    return (query.replace("{{namespace}}", "ml").replace("{{model}}", "fraud")
            .replace("{{revision}}", CTX.revision).replace("{{stableRevision}}", CTX.stable_revision))


def shape(query: str) -> list[tuple[object, ...]]:
    """The parse tree in pre-order, each node with what it means and how many children it has,
    without parentheses (they only group) and without namespace matchers."""
    nodes: list[tuple[object, ...]] = []

    def labels(mod: pp.AggModifier | pp.LabelModifier | None) -> tuple[object, ...] | None:
        return None if mod is None else (str(mod.type), tuple(mod.labels))

    def visit(n: pp.Expr) -> None:
        if isinstance(n, pp.VectorSelector):
            matchers = sorted((m.name, str(m.op), m.value) for m in n.matchers.matchers if m.name != "namespace")
            nodes.append(("selector", n.name, tuple(matchers), n.offset, n.at))
        elif isinstance(n, pp.MatrixSelector):
            nodes.append(("range", n.range))
        elif isinstance(n, pp.BinaryExpr):
            m = n.modifier
            nodes.append(("binary", str(n.op)) + (() if m is None else (
                m.return_bool, labels(m.matching), str(m.card), tuple(m.group_labels or ()),
                m.fill_values.lhs, m.fill_values.rhs)))
        elif isinstance(n, pp.AggregateExpr):
            nodes.append(("aggregate", str(n.op), labels(n.modifier), n.param is not None))
        elif isinstance(n, pp.Call):
            nodes.append(("call", n.func.name, len(n.args)))
        elif isinstance(n, pp.NumberLiteral):
            nodes.append(("number", repr(n.val)))
        elif isinstance(n, pp.StringLiteral):
            nodes.append(("string", n.val))
        elif not isinstance(n, pp.ParenExpr):
            nodes.append((type(n).__name__,))

    pp.walk(pp.parse(query), pre_visit=visit)
    return nodes


@pytest.mark.parametrize(("query", "sent"), CONFINED)
def test_confining_changes_nothing_but_the_namespace(query: str, sent: str) -> None:
    """Read back by the parser, what is sent is the query as written (placeholders filled in), node
    for node, only with the namespace matcher."""
    assert shape(render(user(query), CTX)) == shape(substituted(query))


# -- generated queries: any query is refused, or sent confined and otherwise as written ----------
def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


label_names = st.sampled_from(["a", "code", "le", "namespace", "exported_namespace", "a.b"])
values = st.sampled_from(["", "ml", "B", ".*", "ml|B", "5..", 'quo"te', "back\\slash", "new\nline", "é", "}"]) | st.text(max_size=4)
matchers = st.tuples(label_names, st.sampled_from(["=", "!=", "=~", "!~"]), values).map(
    lambda m: (m[0] if m[0] != "a.b" else _quoted(m[0])) + m[1] + _quoted(m[2]))
offsets = st.sampled_from(["", " offset 5m", " offset 59m", " offset 2h", " offset -1m", " @ 100"])
selectors_ = st.builds(lambda name, ms, offset: name + ("{" + ",".join(ms) + "}" if ms or not name else "") + offset,
                       st.sampled_from(["x", "serin_requests_total", ""]), st.lists(matchers, max_size=3), offsets)
ranges = st.builds(lambda sel, r: f"{sel.split(' ')[0]}[{r}]{sel[len(sel.split(' ')[0]):]}", selectors_,
                   st.sampled_from(["30s", "5m", "1h", "90m"]))
numbers = st.sampled_from(["0", "1", "-1", "0.99", "1e-12", "Inf", "NaN", "0x10"])
grouping = st.lists(label_names.map(lambda n: n if n != "a.b" else _quoted(n)), max_size=2).map(", ".join)


def _vectors(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    arith = st.sampled_from(["+", "-", "*", "/", "%", "^", "atan2"])
    compare = st.sampled_from(["==", "!=", ">", "<", ">=", "<="])
    return st.one_of(
        st.builds(lambda f, r: f"{f}({r})", st.sampled_from(["rate", "increase", "max_over_time", "absent_over_time"]),
                  ranges),
        st.builds(lambda a, kind, g, v: f"{a} {kind} ({g}) ({v})", st.sampled_from(["sum", "max", "count"]),
                  st.sampled_from(["by", "without"]), grouping, inner),
        st.builds(lambda a, v: f"{a}({v})", st.sampled_from(["sum", "avg", "group"]), inner),
        st.builds(lambda n, v: f"topk({n}, {v})", st.sampled_from(["1", "scalar(x)"]), inner),
        st.builds(lambda v, lbl: f'count_values("{lbl}", {v})', inner, st.sampled_from(["v", "namespace"])),
        st.builds(lambda a, op, on, b: f"{a} {op}{on} {b}", inner, arith,
                  st.sampled_from(["", " on (a)", " ignoring (code) group_left (le)", " on () group_right"]), inner),
        st.builds(lambda a, op, b: f"{a} {op} bool {b}", inner, compare, numbers),
        st.builds(lambda a, op, b: f"{a} {op} {b}", inner, st.sampled_from(["and", "or", "unless"]), inner),
        st.builds(lambda a, op, n: f"{a} {op} {n}", inner, arith, numbers),
        inner.map(lambda v: f"-{v}"), inner.map(lambda v: f"({v})"),
        st.builds(lambda v, dst: f'label_replace({v}, "{dst}", "$1", "a", "(.*)")', inner, st.sampled_from(["b", "namespace"])),
        st.builds(lambda v, q: f"histogram_quantile({q}, {v})", inner, numbers),
        inner.map(lambda v: f"max_over_time(({v})[5m:1m])"),
        inner.map(lambda v: f"vector(scalar({v}))"),
    )


queries_ = st.recursive(selectors_, _vectors, max_leaves=6)


@settings(max_examples=400, deadline=None)
@given(queries_)
def test_any_query_is_refused_or_sent_confined_and_as_written(query: str) -> None:
    try:
        sent = confine(query, "ml")
    except QueryRefused:
        return
    assert confined_to(sent, "ml"), sent
    assert shape(sent) == shape(query), (query, sent)
    assert confine(sent, "ml") == sent


def test_what_is_sent_is_stable() -> None:
    """Confining a confined query changes nothing: the string sent is the string checked."""
    for param in CONFINED:
        sent = param.values[1]
        assert isinstance(sent, str)
        assert render(user(sent), CTX) == sent


def test_twenty_selectors_are_enough() -> None:
    sent = render(user(" + ".join(["x"] * 20)), CTX)
    assert len(selectors(sent)) == 20 and confined_to(sent, "ml")


def test_another_namespace_is_refused_even_when_it_is_a_models_own_elsewhere() -> None:
    query = 'count(x{namespace="team-b"})'
    assert queries.refusal(user(query), QueryContext("m", "team-b", "r2", "r1", "30s")) == ""
    assert "team-b" in queries.refusal(user(query), QueryContext("m", "team-a", "r2", "r1", "30s"))


def test_a_refusal_is_inconclusive_with_its_reason() -> None:
    why = queries.refusal(user('count(kube_secret_info{namespace="B"})'), CTX)
    verdict, reason = assess(user("x"), MeasuredValue("biz", None, why))
    assert verdict == Verdict.INCONCLUSIVE and reason == why


# -- the builtins: Serin's own, sent exactly as written -----------------------------------------
# gatewayErrorRate reads the Gateway's own scrape target, not the Model's namespace (its selector:
# tests/operator/test_gateway_metrics.py).
RENDERED_BUILTINS = [b for b in Builtin if b not in queries.FEEDBACK_COUNTERS and b != Builtin.GATEWAY_ERROR_RATE]


@pytest.mark.parametrize("builtin", RENDERED_BUILTINS, ids=[b.value for b in RENDERED_BUILTINS])
def test_a_builtin_is_sent_unchanged(builtin: Builtin) -> None:
    metric = MetricSpec("m", builtin=builtin, max=1)
    assert render(metric, CTX) == builtin_query(builtin, CTX)
    assert queries.refusal(metric, CTX) == ""


@pytest.mark.parametrize("builtin", RENDERED_BUILTINS, ids=[b.value for b in RENDERED_BUILTINS])
def test_every_builtin_selector_reads_its_own_namespace(builtin: Builtin) -> None:
    """The builtins are trusted, not confined; checked here by the parser instead."""
    assert confined_to(builtin_query(builtin, CTX), "ml")


@pytest.mark.parametrize("builtin", RENDERED_BUILTINS, ids=[b.value for b in RENDERED_BUILTINS])
def test_the_bounds_leave_room_for_queries_like_the_builtins(builtin: Builtin) -> None:
    """Written by a user, each builtin would be sent: the bounds refuse no query of their kind."""
    assert confined_to(confine(builtin_query(builtin, CTX), "ml"), "ml")


def test_the_feedback_and_value_queries_read_their_own_namespace() -> None:
    long_ago = QueryContext("fraud", "ml", "r2", "r1", "30s", lifetime="7200s")
    assert confined_to(queries.feedback_query(long_ago, "serin_feedback_rows_total"), "ml")
    assert confined_to(queries.value_buckets_query(CTX, CTX.revision), "ml")


@pytest.mark.parametrize("query", ["x offset NaN", "x offset Inf", "x offset 1e30", "x[1e300]",
                                   "-" * 8500 + "x", "(" * 5000 + "x" + ")" * 5000],
                         ids=["offset-nan", "offset-inf", "offset-huge", "range-huge", "deep-unary", "deep-parens"])
def test_what_makes_the_parser_panic_or_overflow_is_refused(query: str) -> None:
    """Review of issue 32: the Rust parser panics on some inputs (pyo3's PanicException, a
    BaseException that ended the Model's reconcile task) and overflows the native stack on deep
    nesting (a segfault of the operator). Both are refused before or around the parser."""
    with pytest.raises(QueryRefused):
        confine(query, "ml")
