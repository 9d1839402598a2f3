"""Turn arbitrary Python values into bounded, JSON-compatible copies.

Capturing must never fail and never change the value it looks at: no iterator is
consumed, no exception escapes, and the result is cut to a size budget so that a
huge argument cannot blow up memory or the export request.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import math
import uuid
from collections import deque
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any, Dict, List, Optional

TRUNCATED = "…[truncated]"
_MAX_DEPTH = 12
_MAX_ITEMS = 1000
_MAX_REPR = 2000

_SEQUENCES = (list, tuple, set, frozenset, deque)


def _float(value: float) -> Any:
    if math.isfinite(value):
        return value
    return str(value)


class _Capture:
    """One capture with a character budget shared by everything it converts."""

    __slots__ = ("budget", "seen", "max_text")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.seen: "set[int]" = set()
        # No single string inside a structure may take more than half of the budget,
        # so that one huge argument does not hide all the others.
        self.max_text = max(budget // 2, 64)

    def text(self, value: str) -> str:
        budget = self.budget
        size = len(value)
        if size <= budget and size <= self.max_text:
            self.budget = budget - size - 2
            return value
        if budget <= 0:
            self.budget = -1
            return TRUNCATED
        keep = min(budget, self.max_text)
        self.budget = budget - keep - 2
        return value[:keep] + TRUNCATED

    def convert(self, value: Any, depth: int = 0) -> Any:
        if self.budget < 0:
            return TRUNCATED
        cls = type(value)
        if cls is str:
            return self.text(value)
        if value is None or cls is bool:
            self.budget -= 4
            return value
        if cls is int:
            self.budget -= 8
            return value
        if cls is float:
            self.budget -= 8
            return _float(value)
        if isinstance(value, enum.Enum):
            return self.convert(value.value, depth)
        if isinstance(value, str):
            return self.text(str.__str__(value))
        if isinstance(value, bool):
            return bool(value)
        if isinstance(value, int):
            self.budget -= 8
            return int(value)
        if isinstance(value, float):
            self.budget -= 8
            return _float(float(value))
        if isinstance(value, (bytes, bytearray, memoryview)):
            return self.binary(value)
        if depth >= _MAX_DEPTH:
            return self.text(_safe_repr(value))
        if isinstance(value, Mapping):
            return self.mapping(value, depth)
        if isinstance(value, _SEQUENCES):
            return self.sequence(value, depth)
        if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
            return self.text(value.isoformat())
        if isinstance(value, datetime.timedelta):
            self.budget -= 8
            return value.total_seconds()
        if isinstance(value, (uuid.UUID, decimal.Decimal, PurePath, complex)):
            return self.text(str(value))
        if isinstance(value, BaseException):
            return self.mapping({"type": type(value).__name__, "message": _safe_str(value)}, depth)
        if isinstance(value, type):
            return self.text("<class %s.%s>" % (value.__module__, value.__qualname__))
        converted = self.structured(value, depth)
        if converted is not _NOTHING:
            return converted
        return self.text(_safe_repr(value))

    def binary(self, value: Any) -> Any:
        data = bytes(value[:_MAX_REPR]) if len(value) > _MAX_REPR else bytes(value)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return self.text("<%d bytes>" % len(value))
        if len(value) > _MAX_REPR:
            text += "…[%d bytes in all]" % len(value)
        return self.text(text)

    def mapping(self, value: Any, depth: int) -> Any:
        key = id(value)
        if key in self.seen:
            return self.text("<cycle>")
        self.seen.add(key)
        try:
            out: Dict[str, Any] = {}
            try:
                items = list(value.items())
            except Exception:
                return self.text(_safe_repr(value))
            for count, (k, v) in enumerate(items):
                if count >= _MAX_ITEMS or self.budget < 0:
                    out[TRUNCATED] = "%d more keys" % (len(items) - count)
                    self.budget = -1
                    break
                name = k if type(k) is str else _safe_str(k)
                self.budget -= len(name) + 4
                out[name] = self.convert(v, depth + 1)
            return out
        finally:
            self.seen.discard(key)

    def sequence(self, value: Any, depth: int) -> Any:
        key = id(value)
        if key in self.seen:
            return self.text("<cycle>")
        self.seen.add(key)
        try:
            out: List[Any] = []
            size = len(value)
            for count, item in enumerate(value):
                if count >= _MAX_ITEMS or self.budget < 0:
                    out.append("%s %d more items" % (TRUNCATED, size - count))
                    self.budget = -1
                    break
                self.budget -= 2
                out.append(self.convert(item, depth + 1))
            return out
        finally:
            self.seen.discard(key)

    def structured(self, value: Any, depth: int) -> Any:
        """Pydantic models, dataclasses and named tuples, as their fields."""
        try:
            dump = getattr(value, "model_dump", None)
            if callable(dump) and not isinstance(value, type):
                try:
                    data = dump(mode="json")
                except Exception:
                    data = dump()
                return self.convert(data, depth + 1)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                return self.mapping(
                    {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}, depth
                )
            as_dict = getattr(value, "_asdict", None)
            if callable(as_dict) and isinstance(value, tuple):
                return self.mapping(as_dict(), depth)
            legacy = getattr(value, "dict", None)
            if callable(legacy) and hasattr(value, "__fields__") and not isinstance(value, type):
                return self.convert(legacy(), depth + 1)
        except Exception:
            return _NOTHING
        return _NOTHING


_NOTHING: Any = object()


def _safe_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        try:
            return "<unrepresentable %s>" % type(value).__name__
        except Exception:
            return "<unrepresentable>"
    if len(text) > _MAX_REPR:
        return text[:_MAX_REPR] + TRUNCATED
    return text


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return _safe_repr(value)


def capture(value: Any, limit: int) -> Any:
    """A JSON-compatible copy of ``value`` of at most about ``limit`` characters."""
    cls = type(value)
    if cls is str:
        return value if len(value) <= limit else value[:limit] + TRUNCATED
    if value is None or cls is int or cls is bool:
        return value
    try:
        return _Capture(limit).convert(value)
    except Exception:
        return _safe_repr(value)


def capture_arguments(
    names: "tuple[str, ...]",
    skip: int,
    varargs: Optional[str],
    args: "tuple[Any, ...]",
    kwargs: Dict[str, Any],
    limit: int,
) -> Any:
    """A function's arguments as a name -> value mapping, captured with one budget."""
    out: Dict[str, Any] = {}
    count = len(names)
    extra: List[Any] = []
    for index in range(skip, len(args)):
        if index < count:
            out[names[index]] = args[index]
        else:
            extra.append(args[index])
    if extra:
        out[varargs or "args"] = extra
    if kwargs:
        out.update(kwargs)
    try:
        return _Capture(limit).mapping(out, 0)
    except Exception:
        return {"arguments": _safe_repr(out)}


class ItemCollector:
    """Captures the items a generator yields, within one budget."""

    __slots__ = ("capture", "items", "count")

    def __init__(self, limit: int) -> None:
        self.capture = _Capture(limit)
        self.items: List[Any] = []
        self.count = 0

    def add(self, item: Any) -> None:
        self.count += 1
        if self.capture.budget < 0:
            return
        try:
            self.items.append(self.capture.convert(item, 1))
        except Exception:
            self.items.append(_safe_repr(item))

    def result(self) -> Any:
        if self.count > len(self.items):
            return self.items + ["%s %d more items" % (TRUNCATED, self.count - len(self.items))]
        return self.items
