"""Records built from values that are valid already (compiled with the core: see schemas/native.py)."""

from __future__ import annotations

from typing import Any, Final, TypeVar

from pydantic import BaseModel

__all__ = ["trusted"]

_M = TypeVar("_M", bound=BaseModel)
_new: Final = object.__new__
_set: Final = object.__setattr__
_FIELD_SETS: Final[dict[type[BaseModel], set[str]]] = {}


def trusted(cls: type[_M], values: dict[str, Any]) -> _M:
    """A record built from values that are valid already, without validating them again.

    Only for internal copies whose every value comes from validated records (a decision
    repeats its alert's id, asset and time): validation stays at the edges, where input
    arrives. `values` must hold every field, in declaration order (the order they serialise).
    """
    model = _new(cls)
    _set(model, "__dict__", values)
    # every field is set, so records of a class share one set of their names (as alerts do,
    # see schemas.adapters.fields.alert_from): frozen records never write it
    names = _FIELD_SETS.get(cls)
    if names is None or len(names) != len(values):
        names = set(values)
        if len(names) == len(cls.model_fields):
            _FIELD_SETS[cls] = names
    _set(model, "__pydantic_fields_set__", names)
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model
