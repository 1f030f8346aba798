"""Compiled-SQL cache: peewee compiles each query shape once per database.

Compiling a peewee query costs tens of microseconds, as much as a fast query's round
trip. Most applications run a few hundred query shapes over and over with different
values, so the SQL text is cached per shape and only the parameters are computed.

**The shape** of a query is a walk of its node tree (every attribute of every node,
in order; fields, models and functions by identity). The walk yields a hashable key
and the list of leaf values (ints, strings, datetimes, None, booleans...).

**Learning a shape** (a cache miss): the tree is copied with every int, float, str,
bytes, datetime, date, time, timedelta, Decimal and UUID leaf replaced by a *probe*
that behaves like the value but carries its position; peewee compiles the copy with a
context that, for each probe reaching ``Context.value()``, records the position and the
converter peewee would apply, instead of applying it. Leaves that never become
parameters (booleans, None, strings used as names...) are *fixed*: the cached SQL is
valid only when they are equal. A shape is cached only if
- a second copy, with every parameter's value changed, compiles to the same SQL (no
  parameter value leaks into the text),
- every parameter came from a probe, or is None/True/False (from a fixed leaf: the
  variant is keyed by those), and no callable insert default is called (peewee computes
  those at every compile),
- no parameter value is a node (a ``db_value()`` that returns SQL for some values: the
  check also runs on every cache hit), and
- the SQL and parameters rebuilt from the cache equal peewee's own compile of the query.
Anything else (an unknown object in the tree, a failing probe) leaves the shape
uncached: peewee compiles it every time, as without the cache.
"""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections import OrderedDict
from collections.abc import Callable
from types import BuiltinFunctionType, FunctionType, MethodType
from typing import Any

import peewee

from .rows import RowPlans

__all__ = ["SqlCache"]

_PROBE_TYPES = frozenset({int, float, str, bytes, datetime.datetime, datetime.date,
                          datetime.time, datetime.timedelta, decimal.Decimal, uuid.UUID})
_FIXED_TYPES = frozenset({bool, type(None)})
_LEAF_TYPES = _PROBE_TYPES | _FIXED_TYPES
# Node attributes that never change the SQL: per-instance hash, execution state, the
# bound database (the executing database compiles), apeewee's own flag.
_SKIP = frozenset({"_hash", "_cursor_wrapper", "_apeewee_used", "_database"})
_MAX_VARIANTS = 8  # per shape: distinct values of its fixed leaves
_ABSENT = object()

_Field = peewee.Field
_Node = peewee.Node
_ModelBase = peewee.ModelBase
_FUNCTION_TYPES = (FunctionType, BuiltinFunctionType)
_INLINED = (_Node, _ModelBase)  # values peewee's Context.value() compiles into the SQL


class _Uncacheable(Exception):
    """The query holds something the shape walk does not understand."""


def _shape(obj: Any, leaves: list[Any], refs: list[Any] | None,
           sources: dict[int, int]) -> Any:
    t = type(obj)
    if t in _LEAF_TYPES:
        leaves.append(obj)
        return t
    if t is tuple or t is list:
        return (t, *[_shape(x, leaves, refs, sources) for x in obj])
    if t is dict:
        return (t, *[(_shape(k, leaves, refs, sources), _shape(v, leaves, refs, sources))
                     for k, v in obj.items()])
    if isinstance(obj, _Field):
        if refs is not None:
            refs.append(obj)
        return (_Field, id(obj), obj.column_name)
    if isinstance(obj, _Node):
        attrs = obj.__dict__
        if attrs.get("_apeewee_used") is False:
            attrs["_apeewee_used"] = True  # a subquery: compiled, as far as its user knows
        # The attribute names, then each value's shape (leaves inline: this loop is
        # the hot path of every cached query).
        out = [t, tuple(attrs)]
        for k, v in attrs.items():
            if k in _SKIP:
                if k == "_hash":
                    # peewee aliases sources (subqueries, CTEs) by this per-object hash:
                    # one object used twice is not two equal objects. Key the pattern.
                    out.append(sources.setdefault(v, len(sources)))
                continue
            tv = type(v)
            if tv in _LEAF_TYPES:
                leaves.append(v)
                out.append(tv)
            else:
                out.append(_shape(v, leaves, refs, sources))
        return tuple(out)
    if isinstance(obj, _ModelBase):
        if refs is not None:
            refs.append(obj)
        meta = obj._meta
        return (_ModelBase, id(obj), meta.table_name, meta.schema)
    if t is MethodType:
        if refs is not None:
            refs.append(obj)
        return (MethodType, id(obj.__func__), id(obj.__self__))
    if isinstance(obj, _FUNCTION_TYPES):
        if refs is not None:
            refs.append(obj)
        return (FunctionType, id(obj))
    raise _Uncacheable(t.__name__)


# -- probes -----------------------------------------------------------------------------

class _PInt(int):
    _apeewee_slot: int


class _PFloat(float):
    _apeewee_slot: int


class _PStr(str):
    _apeewee_slot: int


class _PBytes(bytes):
    _apeewee_slot: int


class _POpaque:
    """Stands in for a datetime, Decimal, UUID...: peewee only passes these to value()."""

    __slots__ = ("_apeewee_slot", "value")

    def __init__(self, value: Any) -> None:
        self.value = value


_PROBE_CLASS = {int: _PInt, float: _PFloat, str: _PStr, bytes: _PBytes}
_PROBE_CLASSES = frozenset({_PInt, _PFloat, _PStr, _PBytes, _POpaque})


def _changed(value: Any) -> Any:
    """Another value of the same type, for the second probe."""
    t = type(value)
    if t is int:
        return value + 1
    if t is float:
        return value + 1.5
    if t is str:
        return value + "~"
    if t is bytes:
        return value + b"~"
    return value  # opaque probes never reach the SQL text


def _probe(value: Any, slot: int, change: frozenset[int]) -> Any:
    if slot in change:
        value = _changed(value)
    cls = _PROBE_CLASS.get(type(value))
    probe = cls(value) if cls is not None else _POpaque(value)
    probe._apeewee_slot = slot
    return probe


def _probe_copy(obj: Any, counter: list[int], change: frozenset[int]) -> Any:
    """A copy of the query tree with probes for leaves, in ``_shape``'s walk order; the
    leaves at the ``change`` positions get another value."""
    t = type(obj)
    if t in _LEAF_TYPES:
        slot = counter[0]
        counter[0] += 1
        return _probe(obj, slot, change) if t in _PROBE_TYPES else obj
    if t is tuple:
        return tuple([_probe_copy(x, counter, change) for x in obj])
    if t is list:
        return [_probe_copy(x, counter, change) for x in obj]
    if t is dict:
        return {_probe_copy(k, counter, change): _probe_copy(v, counter, change)
                for k, v in obj.items()}
    if isinstance(obj, _Field) or not isinstance(obj, _Node):
        return obj  # fields, models, functions: shared, as in the key
    copy = t.__new__(t)
    copy.__dict__ = {k: (v if k in _SKIP else _probe_copy(v, counter, change))
                     for k, v in obj.__dict__.items()}
    return copy


class _Recorder(peewee.Context):
    """A peewee compile context that records where each parameter comes from."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # (slot, converter) for a probe; (None, raw value, converter) for anything else
        self.sources: list[tuple[Any, ...]] = []

    def value(self, value: Any, converter: Any = None, add_param: bool = True) -> Any:
        if type(value) in _PROBE_CLASSES and not self.state.value_literals:
            if converter:
                convert = converter
            elif converter is None and self.state.converter:
                convert = self.state.converter
            else:
                convert = None
            self.sources.append((value._apeewee_slot, convert))
            self._values.append(value)
            return self.literal(self.state.param or "?") if add_param else self
        nsources, nvalues = len(self.sources), len(self._values)
        out = super().value(value, converter, add_param)
        if len(self.sources) == nsources and len(self._values) == nvalues + 1:
            self.sources.append((None, value, self._values[-1]))
        elif len(self._values) - nvalues != len(self.sources) - nsources:
            raise _Uncacheable("a parameter of unknown origin")
        return out


class _Variant:
    """The SQL of one shape for one set of fixed-leaf values."""

    __slots__ = ("params", "plans", "sql")

    def __init__(self, sql: str, params: list[tuple[int, Any]]) -> None:
        self.sql = sql
        self.params = params  # (leaf slot, converter or None) per parameter
        self.plans = RowPlans()


class _Entry:
    __slots__ = ("fixed", "refs", "variants")

    def __init__(self, fixed: tuple[int, ...], refs: list[Any]) -> None:
        self.fixed = fixed
        self.refs = refs  # keeps every object the key names by id() alive
        self.variants: dict[tuple[Any, ...], _Variant | None] = {}  # None: not cacheable


class SqlCache:
    """Per-database LRU of compiled query shapes."""

    def __init__(self, db: Any, size: int = 512) -> None:
        self.db = db
        self.size = size
        self._entries: OrderedDict[Any, _Entry | None] = OrderedDict()
        # model -> aget_by_id's compiled lookup (apeewee.models._pk_lookup)
        self.pk_lookups: dict[Any, tuple[Any, ...]] = {}
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        self._entries.clear()
        self.pk_lookups.clear()

    def compile(self, query: Any) -> tuple[str, list[Any], RowPlans | None]:
        """``(sql, params, row plans)`` for ``query``; plans None when not cached."""
        if self.size <= 0:
            return (*self._peewee(query), None)
        leaves: list[Any] = []
        try:
            key = (type(query), _shape(query, leaves, None, {}))
        except (_Uncacheable, RecursionError):
            return (*self._peewee(query), None)
        entries = self._entries
        entry = entries.get(key, False)
        if entry is None:  # known not to be cacheable
            _touch(entries, key)
            self.misses += 1
            return (*self._peewee(query), None)
        if entry is not False:
            variant = entry.variants.get(tuple([leaves[i] for i in entry.fixed]), _ABSENT)
            if variant is not _ABSENT and variant is not None:
                params = [leaves[slot] if convert is None else convert(leaves[slot])
                          for slot, convert in variant.params]
                if not any(isinstance(p, _INLINED) for p in params):
                    _touch(entries, key)
                    self.hits += 1
                    return variant.sql, params, variant.plans
                # a field's db_value() gave a node for this value: peewee inlines it
                self.misses += 1
                return (*self._peewee(query), None)
            if variant is None or len(entry.variants) >= _MAX_VARIANTS:
                # this variant could not be learned, or the shape has enough of them:
                # peewee compiles it, without another attempt at learning
                self.misses += 1
                return (*self._peewee(query), None)
        self.misses += 1
        sql, params = self._peewee(query)
        variant = self._learn(key, query, leaves, sql, params, entry or None)
        return sql, params, (variant.plans if variant is not None else None)

    def _trim(self) -> None:
        entries = self._entries
        while len(entries) > self.size:
            try:
                entries.popitem(last=False)
            except KeyError:  # emptied by another thread meanwhile
                break

    def _peewee(self, query: Any) -> tuple[str, list[Any]]:
        sql, params = self.db.get_sql_context().sql(query).query()
        return sql, params

    def _learn(self, key: Any, query: Any, leaves: list[Any], sql: str, params: list[Any],
               entry: _Entry | None) -> _Variant | None:
        try:
            # An insert that leaves out a field with a callable default calls it at every
            # compile: its value is peewee's to compute each time (and the probes must
            # not call it again).
            found = (None if _calls_defaults(query)
                     else self._probe(query, leaves, sql, params))
        except (_Uncacheable, RecursionError):
            found = None
        except Exception:  # a probe upset peewee: compile this shape as usual
            found = None
        entries = self._entries
        if found is None:
            if entry is None:
                entries[key] = None
                self._trim()
            else:  # remember the failure of this variant only
                entry.variants[tuple([leaves[i] for i in entry.fixed])] = None
            return None
        fixed, plan = found
        if entry is None or entry.fixed != fixed:
            refs: list[Any] = []
            _shape(query, [], refs, {})
            entry = _Entry(fixed, refs)
            entries[key] = entry
            self._trim()
        if len(entry.variants) >= _MAX_VARIANTS:
            return None
        variant = _Variant(sql, plan)
        entry.variants[tuple([leaves[i] for i in fixed])] = variant
        return variant

    def _probe(self, query: Any, leaves: list[Any], sql: str, params: list[Any]
               ) -> tuple[tuple[int, ...], list[tuple[int, Any]]] | None:
        options = self.db.get_context_options()
        ctx = _Recorder(**options)
        sql1, _ = ctx.sql(_probe_copy(query, [0], frozenset())).query()
        sources1 = ctx.sources
        if sql1 != sql or len(sources1) != len(params):
            return None
        shape1 = [s[0] for s in sources1]
        param_slots = frozenset(slot for slot in shape1 if slot is not None)
        # Again with every parameter's value changed: the SQL text must not move.
        ctx = _Recorder(**options)
        sql2, _ = ctx.sql(_probe_copy(query, [0], param_slots)).query()
        if sql2 != sql or [s[0] for s in ctx.sources] != shape1:
            return None
        fixed = tuple(i for i in range(len(leaves)) if i not in param_slots)
        plan: list[tuple[int, Any]] = []
        for source in sources1:
            if source[0] is not None:
                plan.append((source[0], source[1]))
                continue
            # Not a probe: None, True or False from the tree (update(x=None),
            # where(flag == True)); fixed leaves key the variant, so the value is fixed.
            _, raw, converted = source
            if (raw is not None and raw is not True and raw is not False) or not leaves:
                return None
            plan.append((0, _constant(converted)))  # slot 0: any leaf, ignored
        rebuilt = [leaves[s] if c is None else c(leaves[s]) for s, c in plan]
        if not _same(rebuilt, params):
            return None
        return fixed, plan


def _touch(entries: OrderedDict[Any, Any], key: Any) -> None:
    """Mark ``key`` most recently used. A database used from event loops in several
    threads shares its cache; another thread may have evicted the key meanwhile."""
    try:
        entries.move_to_end(key)
    except KeyError:
        pass


def _constant(converted: Any) -> Callable[[Any], Any]:
    """A parameter whose compiled value is fixed for the variant."""
    return lambda _leaf: converted


def _calls_defaults(query: Any) -> bool:
    """Whether compiling this insert calls a field's callable default."""
    if not isinstance(query, peewee.Insert):
        return False
    meta = getattr(getattr(query, "model", None), "_meta", None)
    if meta is None:
        return False
    callables = [f for f, default in meta.defaults.items() if callable(default)]
    if not callables:
        return False
    data = query._insert
    if isinstance(data, dict):
        return any(f not in data and f.name not in data for f in callables)
    return True


def _same(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(
        type(x) is type(y) and (x is y or x == y) for x, y in zip(a, b, strict=True))
