"""Build result rows with peewee's cursor wrappers, without their per-query set-up cost.

peewee's wrapper ``initialize()`` resolves the result columns against the selected nodes
on every execution; for one query shape and one result description the answer is always
the same, so a ``RowPlans`` (kept per cached query shape) remembers it.

For the most common case, plain model instances (``ModelObjectCursorWrapper`` over a
model whose every result column is one of its fields), rows are built without calling
``Model.__init__`` once per row: the instance gets exactly the ``__data__``, ``_dirty``
and ``__rel__`` that ``Model(__no_default__=1, **row)`` followed by ``_dirty.clear()``
gives it (a test pins this against peewee). Any other wrapper uses ``process_row``.
"""

from __future__ import annotations

import datetime
import operator
from collections.abc import Callable, Sequence
from typing import Any

import peewee

from ..drivers.base import Result

__all__ = ["RowPlans", "populate"]

_PLAIN_ACCESSORS = (peewee.FieldAccessor, peewee.ForeignKeyAccessor)
_NoneType = type(None)


class _Plan:
    """What ``initialize()`` set on a wrapper for one description, and a fast builder."""

    __slots__ = ("build", "description", "names", "state")

    def __init__(self, description: Any, names: tuple[str, ...], state: dict[str, Any],
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
        state = {k: v for k, v in wrapper.__dict__.items()
                 if k not in before or before[k] is not v}
        plan = _Plan(description, _names(description), state, _fast_builder(wrapper))
        if len(self._plans) >= 4:  # the same shape rarely yields more descriptions
            self._plans.pop(0)
        self._plans.append(plan)
        return plan


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
    if rows:
        if plans is None:
            wrapper.initialize()
            build = None
        else:
            plan = plans.find(result.description)
            if plan is None:
                plan = plans.learn(wrapper, result.description)
            else:
                wrapper.__dict__.update(plan.state)
            build = plan.build
        wrapper.initialized = True
        if build is not None:
            out = build(rows)
        else:
            process = wrapper.process_row
            out = [process(row) for row in rows]
    else:
        out = []
    wrapper.row_cache = out
    wrapper.count = len(out)
    wrapper.populated = True
    return out


def _fast_builder(wrapper: Any) -> Callable[[Sequence[Any]], list[Any]] | None:
    """A builder of plain model instances equal to peewee's, or None if not applicable."""
    if type(wrapper) is not peewee.ModelObjectCursorWrapper or not wrapper.is_model:
        return None
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
    # peewee's ModelDictCursorWrapper.process_row: unconverted columns first, then the
    # converted ones; the instance's __data__ keeps that order.
    order = [*wrapper.no_convert, *wrapper.convert]
    keys = tuple(names[i] for i in order)
    pick = operator.itemgetter(*order) if len(order) > 1 else lambda row: (row[order[0]],)
    # (position in the picked values, native type, converter) of converted columns
    nplain = len(wrapper.no_convert)
    checks = [(nplain + j, _native_type(wrapper.converters[i]), wrapper.converters[i],
               _text_parser(wrapper.converters[i])) for j, i in enumerate(wrapper.convert)]
    new = object.__new__

    def build(rows: Sequence[Any]) -> list[Any]:
        # Column by column: a converter runs over a column unless every value in it is
        # already of the type it would return unchanged (or None, which it keeps).
        columns = list(zip(*map(pick, rows), strict=False))
        for j, native, convert, parse in checks:
            column = columns[j]
            if native is not None and set(map(type, column)) <= {native, _NoneType}:
                continue
            if parse is not None:
                try:  # a column of text the converter would parse the same way
                    columns[j] = list(map(parse, column))
                    continue
                except (TypeError, ValueError):
                    pass
            columns[j] = list(map(convert, column))
        out = []
        append = out.append
        for values in zip(*columns, strict=False):
            obj = new(cls)
            attrs = obj.__dict__
            attrs["__data__"] = dict(zip(keys, values, strict=False))
            attrs["_dirty"] = set()
            attrs["__rel__"] = {}
            append(obj)
        return out

    return build


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


def _class_attr(cls: type, name: str) -> Any:
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    return None
