"""Items as they leave a callback: a dict, a dataclass, an attrs class, a pydantic model or any
mapping (a Scrapy ``Item`` among them, with no need of Scrapy here) becomes a plain dict of
JSON values, where the callback yields it, so the store, the feeds and the messages between
stages only ever see plain JSON-able dicts.

A value JSON cannot hold (a ``datetime`` in a dataclass, a ``Decimal``, bytes, a set, NaN)
fails the page with a sentence naming the field and the type, instead of failing later in
the store stage for the whole batch. A pydantic model is dumped in its JSON mode, so its
dates and decimals become its own JSON text."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

# the longest repr of an offending value quoted in the error
VALUE_REPR_CHARS = 60


class ItemError(TypeError):
    """An item that cannot become JSON: which field, which type."""


def _object_fields(value: Any) -> dict[str, Any] | None:
    """The fields of a dataclass, attrs or pydantic instance, or of a mapping; None for
    anything else."""
    if isinstance(value, dict):
        return value
    kind = type(value)
    if hasattr(kind, "model_fields") and callable(getattr(value, "model_dump", None)):  # pydantic 2
        try:
            dumped: dict[str, Any] = value.model_dump(mode="json")
        except Exception as exc:  # noqa: BLE001 - pydantic's own serialisation error, made readable
            reason = " ".join(str(exc).split())
            raise ItemError(f"{kind.__name__} cannot be dumped as JSON: {reason}") from None
        return dumped
    if hasattr(kind, "__fields__") and callable(getattr(value, "dict", None)):  # pydantic 1
        return dict(value.dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    attributes = getattr(kind, "__attrs_attrs__", None)
    if attributes is not None and not isinstance(value, type):
        return {attribute.name: getattr(value, attribute.name) for attribute in attributes}
    if isinstance(value, Mapping):
        return dict(value)
    return None


def is_item(value: Any) -> bool:
    """Whether ``value`` is something a callback may yield as an item."""
    return isinstance(value, (dict, Mapping)) or _object_fields_kind(value)


def _object_fields_kind(value: Any) -> bool:
    kind = type(value)
    return (hasattr(kind, "model_fields") or hasattr(kind, "__fields__") or hasattr(kind, "__attrs_attrs__")
            or (dataclasses.is_dataclass(value) and not isinstance(value, type)))


def _plain(value: Any, path: str) -> Any:
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ItemError(f"field {path!r} holds {value}, which JSON cannot hold")
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(element, f"{path}[{index}]") for index, element in enumerate(value)]
    fields = _object_fields(value) if is_item(value) else None
    if fields is not None:
        return _plain_fields(fields, path)
    text = repr(value)
    if len(text) > VALUE_REPR_CHARS:
        text = text[:VALUE_REPR_CHARS - 1] + "…"
    raise ItemError(f"field {path!r} holds a value of type {type(value).__name__} ({text}), which JSON "
                    "cannot hold: "
                    "convert it in the callback (str(), float(), .isoformat(), list())")


def _plain_fields(fields: Mapping[Any, Any], path: str) -> dict[str, Any]:
    plain: dict[str, Any] = {}
    for key, value in fields.items():
        if not isinstance(key, str):
            where = f" in field {path!r}" if path else ""
            raise ItemError(f"key {key!r}{where} is of type {type(key).__name__}; an item's keys must be "
                           "strings")
        plain[key] = _plain(value, f"{path}.{key}" if path else key)
    return plain


def as_item(value: Any) -> dict[str, Any] | None:
    """``value`` as a plain dict of JSON values; None when it is not an item at all (the
    caller says what was yielded); :class:`ItemError` naming the field and its type when
    a value cannot be JSON."""
    if not is_item(value):
        return None
    fields = _object_fields(value)
    return None if fields is None else _plain_fields(fields, "")
