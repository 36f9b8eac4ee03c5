"""Confining a user's PromQL to its Model's namespace.

A Model's `query` is written by whoever may edit Models in that namespace, and the operator sends
it to a Prometheus that holds every tenant's series. So before it is sent, every series selector
in it (vector and matrix alike, wherever it is nested) must read the Model's namespace only, as
prom-label-proxy enforces a label for Prometheus' multi-tenant setups: a selector without a
`namespace` matcher gets `namespace="<ns>"`, one with `namespace="<ns>"` keeps it, and any other
namespace matcher (another namespace, a regex, a negation) refuses the query. What the matcher
alone cannot confine or bound is refused too (see `confine`).

The query is parsed by promql-parser (GreptimeDB's Rust parser) and printed again from the tree
here: its bindings can neither edit a tree nor print an edited one faithfully (their str() drops
escapes). What is sent is the printed text, read back and checked once more, so the string sent is
the string checked; every `{...}` in it is a selector printed here with the namespace first.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from datetime import timedelta

import promql_parser as pp

NAMESPACE = "namespace"
# Cost bounds, not tenancy: an analysis judges the last few minutes, and Prometheus keeps about the
# last two hours in memory (its head block); older samples are read from disk blocks.
MAX_LOOKBACK = timedelta(hours=1)  # a selector's range plus its offset
MAX_SELECTORS = 20  # the builtins use at most 8
MAX_DEPTH = 50  # nesting; also keeps the printer's recursion far from Python's limit
# The functions that name a label of their output: written as `namespace`, the result would carry a
# namespace its series did not come from.
_LABEL_WRITERS = {"label_replace": 1, "label_join": 1}  # the destination label's argument
# The bindings' enums compare but do not hash: pairs, not dicts.
_OPS = ((pp.MatchOp.Equal, "="), (pp.MatchOp.NotEqual, "!="), (pp.MatchOp.Re, "=~"), (pp.MatchOp.NotRe, "!~"))
_GROUPS = ((pp.VectorMatchCardinality.ManyToOne, "group_left"), (pp.VectorMatchCardinality.OneToMany, "group_right"))
_LEGACY_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_LEGACY_METRIC = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


class QueryRefused(ValueError):
    """A user query that cannot be confined to its namespace (the message says why)."""


def confine(query: str, namespace: str) -> str:
    """`query` with every selector reading `namespace` only, or QueryRefused. Refused besides:
    subqueries, `@`, negative offsets, a selector reaching back more than MAX_LOOKBACK (range plus
    offset), more than MAX_SELECTORS selectors, nesting deeper than MAX_DEPTH, `or` between
    matchers, info() (it joins target_info series the matcher never sees), and label_replace,
    label_join or count_values writing the `namespace` label."""
    sent = _Confiner(namespace).expr(_parse(query), 0)
    # Read back, the text must print as itself: a printer that lost or moved anything fails here.
    if _Confiner(namespace).expr(_parse(sent), 0) != sent:
        raise QueryRefused("it does not read back as written after adding the namespace")
    return sent


def _parse(query: str) -> pp.Expr:
    # The parser recurses on the native stack: thousands of unary signs or parentheses overflow it
    # and take the process down (a segfault near 8,000 levels) before MAX_DEPTH is ever checked.
    if sum(query.count(c) for c in "(-+[{") > 4 * MAX_DEPTH:
        raise QueryRefused(f"nested more than {MAX_DEPTH} deep")
    try:
        return pp.parse(query)
    except (ValueError, OverflowError) as err:  # what the bindings raise for bad input
        raise QueryRefused(f"not PromQL the operator can check: {err}") from None
    except BaseException as err:
        # A Rust panic in the parser (`x offset NaN`, `x[1e300]`) arrives as pyo3's PanicException,
        # a BaseException: let no such thing end a Model's reconcile task.
        if isinstance(err, (KeyboardInterrupt, SystemExit, asyncio.CancelledError)):
            raise
        raise QueryRefused(f"not PromQL the operator can check: the parser failed on it ({type(err).__name__})") \
            from None


class _Confiner:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.selectors = 0

    def expr(self, node: pp.Expr, depth: int) -> str:
        if depth > MAX_DEPTH:
            raise QueryRefused(f"nested more than {MAX_DEPTH} deep")
        d = depth + 1
        if isinstance(node, pp.VectorSelector):
            return self.selector(node, None)
        if isinstance(node, pp.MatrixSelector):
            return self.selector(node.vector_selector, node.range)
        if isinstance(node, pp.AggregateExpr):
            return self.aggregate(node, d)
        if isinstance(node, pp.BinaryExpr):
            return f"{self.operand(node.lhs, d)} {node.op}{_matching(node.modifier)} {self.operand(node.rhs, d)}"
        if isinstance(node, pp.UnaryExpr):
            return f"-{self.operand(node.expr, d)}"
        if isinstance(node, pp.ParenExpr):
            return f"({self.expr(node.expr, d)})"
        if isinstance(node, pp.Call):
            return self.call(node, d)
        if isinstance(node, pp.NumberLiteral):
            return _number(node.val)
        if isinstance(node, pp.StringLiteral):
            return _string(node.val)
        if isinstance(node, pp.SubqueryExpr):
            raise QueryRefused("subqueries are not allowed (their cost grows with range over step): use an "
                               "_over_time function over a selector's range, or a recording rule")
        raise QueryRefused(f"unsupported expression {type(node).__name__}")

    def operand(self, node: pp.Expr, depth: int) -> str:
        # Parentheses around every nested operation: the tree's grouping is spelled out, so it does
        # not rest on both parsers agreeing about precedence.
        text = self.expr(node, depth)
        return f"({text})" if isinstance(node, (pp.BinaryExpr, pp.UnaryExpr)) else text

    def aggregate(self, node: pp.AggregateExpr, depth: int) -> str:
        op = str(node.op)
        if op == "count_values" and _literal(node.param) == NAMESPACE:
            raise QueryRefused(f"{op}() writes the {NAMESPACE} label, which confines the query")
        args = [self.expr(a, depth) for a in (node.param, node.expr) if a is not None]
        mod = node.modifier
        if mod is None:
            return f"{op}({', '.join(args)})"
        kind = "by" if mod.type == pp.AggModifierType.By else "without"
        return f"{op} {kind} ({_labels(mod.labels)}) ({', '.join(args)})"

    def call(self, node: pp.Call, depth: int) -> str:
        name = node.func.name
        if name == "info":
            raise QueryRefused("info() is not allowed: it joins target_info series outside the namespace matcher")
        at = _LABEL_WRITERS.get(name)
        if at is not None and len(node.args) > at and _literal(node.args[at]) == NAMESPACE:
            raise QueryRefused(f"{name}() writes the {NAMESPACE} label, which confines the query")
        return f"{name}({', '.join(self.expr(a, depth) for a in node.args)})"

    def selector(self, vs: pp.VectorSelector, range_: timedelta | None) -> str:
        shown = _selector(vs.name, [_matcher(m) for m in vs.matchers.matchers], range_, vs.offset)[:200]
        self.selectors += 1
        if self.selectors > MAX_SELECTORS:
            raise QueryRefused(f"more than {MAX_SELECTORS} selectors")
        if vs.matchers.or_matchers:
            raise QueryRefused(f"{shown}: `or` between matchers is not supported")
        if vs.at is not None:
            raise QueryRefused(f"{shown}: the @ modifier is not allowed: an analysis measures the present")
        offset = vs.offset or timedelta(0)
        if offset < timedelta(0):
            raise QueryRefused(f"{shown}: a negative offset reads the future")
        back = offset + (range_ or timedelta(0))
        if back > MAX_LOOKBACK:
            raise QueryRefused(f"{shown} reads {_duration(back)} back (range plus offset): "
                               f"at most {_duration(MAX_LOOKBACK)}")
        kept = []
        for m in vs.matchers.matchers:
            if m.name != NAMESPACE:
                kept.append(_matcher(m))
            elif m.op != pp.MatchOp.Equal or m.value != self.namespace:
                raise QueryRefused(
                    f"{shown} selects {_matcher(m)}: a query of a Model in namespace {_string(self.namespace)} "
                    f'reads that namespace only (write namespace="{{{{namespace}}}}", or leave it out)')
        return _selector(vs.name, [f"{NAMESPACE}={_string(self.namespace)}", *kept], range_, vs.offset)


def _literal(node: pp.Expr | None) -> str | None:
    """A string argument's value; Prometheus reads one through parentheses too (stringFromArg)."""
    while isinstance(node, pp.ParenExpr):
        node = node.expr
    return node.val if isinstance(node, pp.StringLiteral) else None


def _selector(name: str | None, matchers: list[str], range_: timedelta | None, offset: timedelta | None) -> str:
    if name is not None and not _LEGACY_METRIC.fullmatch(name):
        matchers, name = [f"__name__={_string(name)}", *matchers], None
    text = f"{name or ''}{{{','.join(matchers)}}}" if matchers or not name else name
    if range_ is not None:
        text += f"[{_duration(range_)}]"
    if offset:
        text += f" offset {'-' if offset < timedelta(0) else ''}{_duration(abs(offset))}"
    return text


def _matcher(m: pp.Matcher) -> str:
    op = next(text for op, text in _OPS if op == m.op)
    return f"{_label(m.name)}{op}{_string(m.value)}"


def _matching(mod: pp.BinModifier | None) -> str:
    """A binary operator's modifiers, each with the space before it."""
    if mod is None:
        return ""
    text = " bool" if mod.return_bool else ""
    if mod.matching is not None:
        kind = "on" if mod.matching.type == pp.LabelModifierType.Include else "ignoring"
        text += f" {kind} ({_labels(mod.matching.labels)})"
    for card, group in _GROUPS:
        if mod.card == card:
            text += f" {group}" + (f" ({_labels(mod.group_labels)})" if mod.group_labels else "")
    fill = mod.fill_values
    if fill.lhs is not None and fill.lhs == fill.rhs:
        text += f" fill ({_number(fill.lhs)})"
    else:
        for side, value in (("left", fill.lhs), ("right", fill.rhs)):
            if value is not None:
                text += f" fill_{side} ({_number(value)})"
    return text


def _labels(names: list[str]) -> str:
    return ", ".join(_label(n) for n in names)


def _label(name: str) -> str:
    return name if _LEGACY_LABEL.fullmatch(name) else _string(name)  # Prometheus 3's quoted names


def _string(value: str) -> str:
    # A JSON string is a Go string literal too (strconv.Unquote, as Prometheus reads "..."): the
    # same escapes for quote, backslash and control characters; other characters as they are.
    return json.dumps(value, ensure_ascii=False)


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _duration(span: timedelta) -> str:
    """`span` in Prometheus' units, largest first (1h30m, 1m30s, 1s500ms)."""
    ms = span // timedelta(milliseconds=1)
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
