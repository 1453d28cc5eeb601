"""Pydantic models built from trusted values on the hot path (``Trusted``)."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


class Trusted(Generic[M]):
    """Builds instances of a pydantic model from values that already have the declared types,
    without validation: what ``model_construct`` does, minus its per-field Python loop (a run
    builds a record and a request per node: this is the hot path).

    ``build(values)`` starts from the field defaults (factories called afresh), so ``values``
    may omit fields that have one. Every instance shares one fields-set naming every field, as
    ``model_construct`` would when every field is given; attribute assignment adds names already
    there, so it never changes. Refused (``TypeError``) for models this shortcut would get wrong:
    aliases, private attributes, ``model_post_init``, extra fields allowed, root models."""

    def __init__(self, cls: type[M]) -> None:
        fields = cls.model_fields
        if (any(f.alias or f.validation_alias for f in fields.values()) or cls.__private_attributes__
                or cls.__pydantic_post_init__ or cls.model_config.get("extra") == "allow"
                or cls.__pydantic_root_model__):
            raise TypeError(f"{cls.__name__} cannot be built with Trusted: use model_construct")
        self.cls = cls
        self._fields_set = set(fields)
        constant: dict[str, Any] = {}
        self._factories: dict[str, Callable[[], Any]] = {}
        for name, f in fields.items():
            if f.default_factory is not None:
                self._factories[name] = f.default_factory  # type: ignore[assignment]
            elif f.is_required():
                continue
            elif _immutable(f.default):
                constant[name] = f.default
            else:  # a fresh deep copy per instance, as pydantic gives
                self._factories[name] = functools.partial(copy.deepcopy, f.default)
        self._template = {**dict.fromkeys(fields), **constant}

    def build(self, values: dict[str, Any]) -> M:
        """An instance with ``values`` over the defaults (``values`` is not kept)."""
        data = self._template.copy()
        for name, factory in self._factories.items():
            if name not in values:
                data[name] = factory()
        data.update(values)
        return self._new(data)

    def copy(self, instance: M, **update: Any) -> M:
        """``instance.model_copy(update=update)`` for values already of their types."""
        data = dict(instance.__dict__)
        data.update(update)
        return self._new(data)

    def _new(self, data: dict[str, Any]) -> M:
        obj = self.cls.__new__(self.cls)
        object.__setattr__(obj, "__dict__", data)
        object.__setattr__(obj, "__pydantic_fields_set__", self._fields_set)
        object.__setattr__(obj, "__pydantic_extra__", None)
        object.__setattr__(obj, "__pydantic_private__", None)
        return obj


def _immutable(value: object) -> bool:
    if isinstance(value, BaseModel):
        return bool(value.model_config.get("frozen"))
    if isinstance(value, tuple):
        return all(_immutable(v) for v in value)
    return value is None or isinstance(value, (int, float, str, bytes, frozenset))
