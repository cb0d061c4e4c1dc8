"""What a grant's holder may run on Spark, and its translation from DuckDB's dialect.

Spark SQL cannot be locked down the way a DuckDB sandbox is: ``reflect()``/``java_method()`` call
any Java method, ``parquet.`/path``` reads files, ``CREATE TABLE … LOCATION`` writes them, ``SET``
changes the session, ``ADD JAR`` loads code, and every temporary view of the session (governance's
own intermediates, other grants) is visible to every query. So a holder's query never reaches
Spark as text it wrote. :func:`check` parses it (DuckDB's dialect, the one the detectors use) and
accepts it only when every node of the tree is on an allowlist:

- the statement is one query (``SELECT``/``WITH``/``UNION``…), or ``CREATE TABLE|VIEW name AS
  <query>`` / ``DROP TABLE|VIEW name`` of the sandbox's own tables (carried out by the sandbox itself,
  never as Spark DDL);
- every table it reads is one of the sandbox's own names or a CTE of the query (no schema or
  catalogue part, no table function, no file);
- every function is a pure scalar, aggregate or window function named below.

Anything else (a parse failure included) is refused with the reason; the sandbox audits it.
Accepted trees have their table names rewritten to the sandbox's private view names and are then
written as Spark SQL, with the few functions whose DuckDB meaning Spark spells differently
(:data:`_SPARK_FUNCS`) rewritten to keep the same result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp

from mamori.store.engine import SandboxRefused as Refused

__all__ = ["Checked", "Refused", "check", "to_spark"]


# Expression nodes that are not function calls: query structure, operators, literals. Anything
# not here (Command, Set, Create inside a query, Insert, Hint, Properties, Lambda, Pragma, Copy,
# Attach, Use, …) is refused.
_NODES = frozenset(
    {
        "select", "from", "join", "where", "group", "having", "order", "ordered", "limit",
        "offset", "qualify", "column", "identifier", "table", "tablealias", "alias", "star",
        "literal", "null", "boolean", "datatype", "datatypeparam", "with", "cte", "subquery",
        "union", "except", "intersect", "window", "windowspec", "distinct", "bracket", "tuple",
        "filter", "paren", "and", "or", "not", "xor", "eq", "neq", "nullsafeeq", "nullsafeneq",
        "gt", "gte", "lt", "lte", "add", "sub", "mul", "div", "intdiv", "mod", "neg", "between",
        "in", "is", "like", "ilike", "case", "if", "exists", "any", "all", "interval", "var",
        "bitwiseand", "bitwiseor", "bitwisexor", "bitwisenot", "bitwiseleftshift",
        "bitwiserightshift", "dpipe", "cast", "trycast", "array", "struct", "values",
        "columndef", "dot", "semicolon",
    }
)  # fmt: skip

# Functions a query may call: pure computations over their arguments (no I/O, no reflection, no
# session state). sqlglot's name for a function it knows; the called name for one it does not.
_FUNCS = frozenset(
    {
        # aggregates
        "count", "sum", "avg", "min", "max", "stddevpop", "stddevsamp", "stddev", "variance",
        "variancepop", "median", "percentilecont", "mode", "anyvalue", "argmax", "argmin",
        "countif", "logicaland", "logicalor", "mad", "quantile_cont", "approxdistinct",
        "corr", "covarpop", "covarsamp", "first", "last", "bool_and", "bool_or",
        # window
        "rownumber", "rank", "denserank", "lag", "lead", "firstvalue", "lastvalue", "ntile",
        "percentrank", "cumedist",
        # scalar
        "abs", "exp", "ln", "log", "log2", "log10", "sqrt", "pow", "round", "floor", "ceil",
        "cos", "sin", "tan", "acos", "asin", "atan", "atan2", "pi", "degrees", "radians",
        "sign", "greatest", "least", "coalesce", "nullif", "ifnull", "splitpart", "contains",
        "arraycontains", "lower", "upper", "length", "substring", "concat", "strposition",
        "startswith", "endswith", "trim", "replace", "regexplike", "regexpfullmatch", "timetounix",
        "timestamptrunc", "datetrunc", "hash", "hex", "epoch", "epoch_ms", "isnan",
        "isinf", "list_contains", "array_contains", "left", "right", "lpad", "rpad", "array",
        "struct", "tuple",
    }
)  # fmt: skip


def _func_name(node: Any) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return str(node.key)


@dataclass(frozen=True)
class Checked:
    """An accepted statement: ``kind`` is ``query``, ``create`` (``target`` is the new table's
    name), ``view`` (the same, computed when read) or ``drop`` (``target`` the dropped one,
    ``if_exists``)."""

    kind: str
    tree: Any
    target: str | None = None
    if_exists: bool = False


def _table_name(t: exp.Table) -> str:
    if not isinstance(t.this, exp.Identifier) or t.args.get("db") or t.args.get("catalog"):
        raise Refused("reaches outside the grant (a file, a schema or a table function)")
    return str(t.name)


def _check_query(tree: Any, names: frozenset[str]) -> None:
    ctes = {str(c.alias) for c in tree.find_all(exp.CTE)}
    for node in tree.walk():
        if node.key in _NODES:
            pass
        elif isinstance(node, exp.Func):
            name = _func_name(node)
            if name not in _FUNCS:
                raise Refused("calls a function outside the sandbox's allowlist", name)
        else:
            raise Refused("is not a query over the granted inputs", node.key)
        if isinstance(node, exp.Table):
            name = _table_name(node)
            if name not in names and name not in ctes:
                raise Refused("names something that is not among the granted inputs")
            if name in names and name in ctes:
                raise Refused("names a CTE like one of the sandbox's tables")


def check(query: str, names: frozenset[str]) -> Checked:
    """The statement ``query`` if the sandbox holding ``names`` may run it (else :class:`Refused`)."""
    try:
        trees = [t for t in sqlglot.parse(query, read="duckdb") if t is not None]
    except sqlglot.errors.SqlglotError:
        raise Refused("is not a single query the sandbox can check") from None
    if len(trees) != 1:
        raise Refused("is not a single query the sandbox can check")
    tree = trees[0]
    if isinstance(tree, exp.Query):
        _check_query(tree, names)
        return Checked("query", tree)
    if isinstance(tree, exp.Create):
        body = tree.expression
        target = tree.this
        if (
            str(tree.args.get("kind", "")).upper() not in {"TABLE", "VIEW"}
            or not isinstance(body, exp.Query)
            or not isinstance(target, exp.Table)
            or tree.args.get("properties")
            or tree.args.get("replace")
        ):
            raise Refused("is a statement other than CREATE TABLE name AS query")
        name = _table_name(target)
        _check_query(body, names)
        view = str(tree.args.get("kind", "")).upper() == "VIEW"
        return Checked("view" if view else "create", body, target=name)
    if isinstance(tree, exp.Drop):
        tables = tree.args.get("tables") or []
        target = tables[0] if len(tables) == 1 else None
        if str(tree.args.get("kind", "")).upper() not in {"TABLE", "VIEW"} or not isinstance(
            target, exp.Table
        ):
            raise Refused("is a statement other than DROP TABLE name")
        name = _table_name(target)
        if name not in names and not tree.args.get("exists"):
            raise Refused("names something that is not among the granted inputs")
        return Checked("drop", tree, target=name, if_exists=bool(tree.args.get("exists")))
    raise Refused("is a statement the sandbox does not run", tree.key)


# DuckDB's unsigned integer types: Spark has none; the next signed type holds every value, but
# UBIGINT's: the detectors use it for IPv4 arithmetic (shifts), which Spark's DECIMAL cannot do,
# so it is BIGINT (a TRY_CAST of a value past 2⁶³ gives NULL rather than a wrong number)
_UNSIGNED = {
    "UTINYINT": "SMALLINT",
    "USMALLINT": "INT",
    "UINT": "BIGINT",
    "UINTEGER": "BIGINT",
    "UBIGINT": "BIGINT",
}


def _spark_node(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.TimeToUnix):
        # DuckDB's epoch() keeps the microseconds; UNIX_TIMESTAMP would drop them
        return exp.Div(
            this=exp.Anonymous(this="unix_micros", expressions=[node.this]),
            expression=exp.Literal.number("1000000.0"),
        )
    if isinstance(node, exp.Anonymous) and str(node.name).lower() == "hash":
        # 64 bits, as DuckDB's: Spark's hash() is 32, and count(DISTINCT hash(…)) would merge
        # keys that collide
        return exp.Anonymous(this="xxhash64", expressions=node.expressions)
    if isinstance(node, exp.PercentileCont):
        # DuckDB's quantile_cont(x, q) is exact and interpolating: Spark's percentile(x, q)
        return exp.Anonymous(this="percentile", expressions=[node.this, node.expression])
    if isinstance(node, exp.Anonymous) and str(node.name).lower() == "quantile_cont":
        return exp.Anonymous(this="percentile", expressions=node.expressions)
    if isinstance(node, exp.Median):
        return exp.Anonymous(this="percentile", expressions=[node.this, exp.Literal.number(0.5)])
    if isinstance(node, exp.CTE) and node.args.get("materialized") is not None:
        # a hint to DuckDB's planner that Spark does not take (set in place: a replaced node's
        # children would not be transformed; ``to_spark`` works on a copy)
        node.set("materialized", None)
        return node
    if isinstance(node, exp.RegexpFullMatch):
        # Spark's RLIKE matches anywhere: anchor the pattern to the whole text
        pattern = exp.Concat(
            expressions=[exp.Literal.string("^(?:"), node.expression, exp.Literal.string(")$")]
        )
        return exp.RegexpLike(this=node.this, expression=pattern)
    if isinstance(node, exp.DataType) and node.this.name in _UNSIGNED:
        return exp.DataType.build(_UNSIGNED[node.this.name], dialect="spark")
    return node


def to_spark(tree: exp.Expression, views: Mapping[str, str]) -> str:
    """``tree`` (accepted by :func:`check`) as Spark SQL, each of the sandbox's names replaced
    by its private view name in ``views``."""
    ctes = {str(c.alias) for c in tree.find_all(exp.CTE)}
    out = tree.copy()
    for t in list(out.find_all(exp.Table)):
        if t.name in views and t.name not in ctes:
            alias = t.args.get("alias")
            new = exp.Table(this=exp.to_identifier(views[t.name], quoted=True))
            # keep what the query called it: columns qualified by the old name still resolve
            new.set("alias", alias or exp.TableAlias(this=exp.to_identifier(t.name, quoted=True)))
            t.replace(new)
    out = out.transform(_spark_node)
    # comments dropped: Spark reads some as hints
    return out.sql(dialect="spark", comments=False)
