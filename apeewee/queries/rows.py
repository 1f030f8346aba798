"""Build result rows with peewee's cursor wrappers, without their per-query set-up cost.

peewee's wrapper ``initialize()`` resolves the result columns against the selected nodes
on every execution; for one query shape and one result description the answer is always
the same, so a ``RowPlans`` (kept per cached query shape) remembers it.

For the common wrappers, rows are built column by column, with what peewee's
``process_row`` gives (tests pin this against peewee): model tuples, model dicts, and
plain model instances (``ModelObjectCursorWrapper`` over a model whose every result
column is one of its fields), which get exactly the ``__data__``, ``_dirty`` and
``__rel__`` that ``Model(__no_default__=1, **row)`` followed by ``_dirty.clear()``
gives them, without a call to ``Model.__init__`` per row. Any other wrapper (joins,
namedtuples, custom constructors) uses ``process_row``.
"""

from __future__ import annotations

import datetime
import operator
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import peewee

from ..drivers.base import Result

__all__ = ["RowPlans", "chunks", "populate"]

_PLAIN_ACCESSORS = (peewee.FieldAccessor, peewee.ForeignKeyAccessor)
_NoneType = type(None)


class _Plan:
    """What ``initialize()`` set on a wrapper for one description, and a fast builder."""

    __slots__ = ("build", "description", "names", "state")

    def __init__(self, description: Any, names: tuple[str, ...],
                 state: dict[str, Any] | None,
                 build: Callable[[Sequence[Any]], list[Any]] | None) -> None:
        self.description = description
        self.names = names
        self.state = state
        self.build = build


class RowPlans:
    """Row-building plans of one query shape, per result description (a few at most)."""

    __slots__ = ("_plans",)

    def __init__(self) -> None:
        self._plans: list[_Plan] = []

    def find(self, description: Any) -> _Plan | None:
        for plan in self._plans:
            if plan.description is description:
                return plan
        names = _names(description)
        for plan in self._plans:
            if plan.names == names:
                return plan
        return None

    def learn(self, wrapper: peewee.CursorWrapper, description: Any) -> _Plan:
        before = dict(wrapper.__dict__)
        wrapper.initialize()
        state: dict[str, Any] | None = {
            k: v for k, v in wrapper.__dict__.items() if k not in before or before[k] is not v}
        if any(_holds(value, wrapper) for value in state.values()):  # type: ignore[union-attr]
            # e.g. namedtuples: a constructor closing over this wrapper (and through it
            # this result's rows). Kept, it would keep them alive: initialize each time.
            state = None
        plan = _Plan(description, _names(description), state, _fast_builder(wrapper))
        if len(self._plans) >= 4:  # the same shape rarely yields more descriptions
            self._plans.pop(0)
        self._plans.append(plan)
        return plan


def _holds(value: Any, wrapper: Any) -> bool:
    """Whether ``value`` is a function whose closure refers to ``wrapper``."""
    cells = getattr(value, "__closure__", None) or ()
    return any(cell.cell_contents is wrapper for cell in cells)


def _names(description: Any) -> tuple[str, ...]:
    return tuple(item[0] for item in description) if description else ()


def populate(wrapper: peewee.CursorWrapper, result: Result,
             plans: RowPlans | None = None) -> list[Any]:
    """Fill a peewee cursor wrapper from a fetched result; return its rows.

    peewee's ``initialize`` and ``process_row`` decide what every row becomes (models,
    dicts, tuples, joined instances); only the one-row-at-a-time fetch loop is skipped,
    and with ``plans`` the column resolution is done once per query shape.
    """
    rows = result.rows
    out = _builder(wrapper, result, plans)(rows) if rows else []
    wrapper.row_cache = out
    wrapper.count = len(out)
    wrapper.populated = True
    return out


def chunks(wrapper: peewee.CursorWrapper, result: Result, plans: RowPlans | None = None,
           size: int = 1000) -> Iterator[list[Any]]:
    """The rows of a fetched result, built ``size`` at a time (for ``async for``: only
    the rows being iterated exist as models at once)."""
    rows = result.rows
    if not rows:
        return
    build = _builder(wrapper, result, plans)
    for start in range(0, len(rows), size):
        yield build(rows[start:start + size])


def _builder(wrapper: peewee.CursorWrapper, result: Result,
             plans: RowPlans | None) -> Callable[[Sequence[Any]], list[Any]]:
    """Initialize ``wrapper`` (from a plan when there is one) and give its row builder."""
    if plans is None:
        wrapper.initialize()
        build = None
    else:
        plan = plans.find(result.description)
        if plan is None:
            plan = plans.learn(wrapper, result.description)
        elif plan.state is None:
            wrapper.initialize()
        else:
            wrapper.__dict__.update(plan.state)
        build = plan.build
    wrapper.initialized = True
    if build is not None:
        return build
    process = wrapper.process_row
    return lambda rows: [process(row) for row in rows]


def _fast_builder(wrapper: Any) -> Callable[[Sequence[Any]], list[Any]] | None:
    """A builder equal to peewee's ``process_row`` for plain model instances, model
    tuples and model dicts; None for any other wrapper."""
    kind = type(wrapper)
    if kind is peewee.ModelTupleCursorWrapper:
        converters = wrapper.converters
        order = list(range(wrapper.ncols))
        convert = [i for i in order if converters[i] is not None]
        to_columns = _column_converter(order, convert, converters)
        return lambda rows: list(zip(*to_columns(rows), strict=False))
    if kind is peewee.ModelDictCursorWrapper:
        return _dict_builder(wrapper)
    if kind is peewee.ModelObjectCursorWrapper and wrapper.is_model:
        return _model_builder(wrapper)
    return None


def _column_converter(order: list[int], convert: list[int], converters: list[Any]
                      ) -> Callable[[Sequence[Any]], list[Any]]:
    """Rows -> the columns at ``order``, those in ``convert`` through their converter.

    Column by column: a converter runs over a column unless every value in it is
    already of the type it would return unchanged (or None, which it keeps)."""
    pick = operator.itemgetter(*order) if len(order) > 1 else lambda row: (row[order[0]],)
    # Every column, in the row's own order (the usual case): transpose the rows as they
    # are, without building a reordered tuple per row.
    whole = order == list(range(len(order)))
    position = {index: j for j, index in enumerate(order)}
    checks = [(position[i], _native_type(converters[i]), converters[i],
               _text_parser(converters[i])) for i in convert]

    def to_columns(rows: Sequence[Any]) -> list[Any]:
        if whole and len(rows[0]) == len(order):
            columns = list(zip(*rows, strict=False))
        else:
            columns = list(zip(*map(pick, rows), strict=False))
        for j, native, conv, parse in checks:
            column = columns[j]
            if native is not None and set(map(type, column)) <= {native, _NoneType}:
                continue
            if parse is not None:
                try:  # a column of text the converter would parse the same way
                    columns[j] = list(map(parse, column))
                    continue
                except (TypeError, ValueError):
                    pass
            columns[j] = list(map(conv, column))
        return columns

    return to_columns


def _dict_builder(wrapper: Any) -> Callable[[Sequence[Any]], list[Any]]:
    # peewee's ModelDictCursorWrapper.process_row: unconverted columns first, then the
    # converted ones; each dict keeps that order.
    order = [*wrapper.no_convert, *wrapper.convert]
    keys = tuple(wrapper.unique_columns[i] for i in order)
    to_columns = _column_converter(order, list(wrapper.convert), wrapper.converters)
    make = _generated(keys, """
        append({data})""", {})
    return lambda rows: make(to_columns(rows))


def _model_builder(wrapper: Any) -> Callable[[Sequence[Any]], list[Any]] | None:
    cls = wrapper.constructor
    if (cls.__init__ is not peewee.Model.__init__ or cls.__new__ is not object.__new__
            or cls.__setattr__ is not object.__setattr__
            or type(cls).__call__ is not type.__call__):
        return None
    names = wrapper.unique_columns
    if len(set(names)) != len(names):
        return None
    for name in names:
        accessor = _class_attr(cls, name)
        if type(accessor) not in _PLAIN_ACCESSORS or accessor.name != name:
            return None
        if type(accessor) is peewee.ForeignKeyAccessor and not _plain_key(accessor.field):
            return None  # its value may become a related instance (set into __rel__)
    # Model(__no_default__=1, **data) sets the fields in the order of peewee's dict row.
    order = [*wrapper.no_convert, *wrapper.convert]
    keys = tuple(names[i] for i in order)
    to_columns = _column_converter(order, list(wrapper.convert), wrapper.converters)
    make = _generated(keys, """
        obj = new(cls)
        attrs = obj.__dict__
        attrs["__data__"] = {data}
        attrs["_dirty"] = set()
        attrs["__rel__"] = {{}}
        append(obj)""", {"new": object.__new__, "cls": cls})
    return lambda rows: make(to_columns(rows))


def _generated(keys: tuple[str, ...], body: str, names: dict[str, Any]
               ) -> Callable[[list[Any]], list[Any]]:
    """A loop over columns whose ``body`` builds one row from ``{data}``, a dict display
    of ``keys`` (literal keys: about twice as fast as ``dict(zip(keys, values))``), as
    dataclasses and namedtuple generate their code."""
    values = [f"v{i}" for i in range(len(keys))]
    data = "{" + ", ".join(f"{key!r}: {value}" for key, value in zip(keys, values,
                                                                   strict=True)) + "}"
    source = (f"def build(columns):\n"
              f"    out = []\n"
              f"    append = out.append\n"
              f"    for {', '.join(values)}, in zip(*columns):"
              + body.format(data=data) + "\n"
              "    return out\n")
    namespace = dict(names)
    exec(compile(source, f"<apeewee row builder {keys!r}>", "exec"), namespace)
    return namespace["build"]  # type: ignore[no-any-return]


# Field.adapt implementations that return a value of this exact type unchanged.
_IDENTITY_ON = {
    peewee.IntegerField.adapt: int,
    peewee._StringField.adapt: str,
    peewee.FloatField.adapt: float,
    peewee.DateTimeField.adapt: datetime.datetime,
    peewee.DateField.adapt: datetime.date,
    peewee.TimeField.adapt: datetime.time,
    bool: bool,
}


def _native_type(convert: Any) -> type | None:
    """The type a converter returns unchanged, so the call can be skipped for it.

    Only peewee's own ``Field.python_value`` over one of peewee's own ``adapt``
    implementations qualifies; for them ``python_value(v) == v`` when ``type(v)`` is
    that type (a driver value of another type still goes through the converter)."""
    if getattr(convert, "__func__", None) is not peewee.Field.python_value:
        return None
    adapt = convert.__self__.adapt
    return _IDENTITY_ON.get(getattr(adapt, "__func__", adapt))


def _text_parser(convert: Any) -> Callable[[str], Any] | None:
    """A C function that gives what ``convert`` gives for any text it accepts.

    peewee's DateTimeField turns text (SQLite's storage) into a datetime by
    ``datetime.fromisoformat`` after replacing a space separator by "T" and a "Z" by
    "+00:00", both of which ``fromisoformat`` accepts as they are; only when that fails
    does it try its ``formats``. A column where ``fromisoformat`` raises for any value
    (None, text in another format) goes through peewee's converter instead.
    """
    if (getattr(convert, "__func__", None) is peewee.Field.python_value
            and getattr(convert.__self__.adapt, "__func__", None) is peewee.DateTimeField.adapt
            and getattr(peewee, "_fromisoformat", None) == datetime.datetime.fromisoformat):
        return datetime.datetime.fromisoformat
    return None


def _plain_key(field: Any) -> bool:
    """A foreign key whose converter gives the related key's plain value, never an
    instance: peewee's own ``python_value`` over a key field with peewee's own."""
    return (type(field).python_value is peewee.ForeignKeyField.python_value
            and type(field.rel_field).python_value is peewee.Field.python_value)


def _class_attr(cls: type, name: str) -> Any:
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    return None
