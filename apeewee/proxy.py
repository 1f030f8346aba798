"""``apeewee.DatabaseProxy``: peewee's proxy whose atomic()/connection() are the async ones."""

from __future__ import annotations

from typing import Any

import peewee

__all__ = ["DatabaseProxy"]


class DatabaseProxy(peewee.DatabaseProxy):
    """A ``peewee.DatabaseProxy`` that forwards ``atomic()``, ``transaction()``,
    ``savepoint()``, ``connection()`` and ``connection_context()`` to the apeewee
    database it was initialized with (peewee's proxy builds sync blocks itself).
    Models and queries work through a plain ``peewee.DatabaseProxy`` as well."""

    def _target(self) -> Any:
        if self.obj is None:
            raise AttributeError("Cannot use uninitialized Proxy.")
        return self.obj

    def atomic(self, *args: Any, **kwargs: Any) -> Any:
        return self._target().atomic(*args, **kwargs)

    def transaction(self, *args: Any, **kwargs: Any) -> Any:
        return self._target().transaction(*args, **kwargs)

    def savepoint(self) -> Any:
        return self._target().savepoint()

    def connection(self) -> Any:
        return self._target().connection()

    def connection_context(self) -> Any:
        return self._target().connection_context()

    @property
    def Model(self) -> type[peewee.Model]:
        """A base model class bound to this proxy, with the async methods."""
        model = getattr(self, "_Model", None)
        if model is None:
            from .models import Model

            meta = type("Meta", (), {"database": self})
            model = type("BaseModel", (Model,), {"Meta": meta})
            self._Model = model
        return model
