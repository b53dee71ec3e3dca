"""Result objects: the CLI's JSON, with every list of numbers as a numpy array.

A result is the JSON that `memprune ... --json FILE` writes for the same settings (its
`to_dict()` returns exactly that), read with attribute or item access:

* a JSON object becomes a `Result`;
* a list of numbers becomes a numpy array (float64, int64 or bool, as the values are);
* a list of objects that all have the same keys and plain values (one record per unit, per
  point, per layer row) becomes a `Result` of columns, one array per key, so that
  ``r.layers[0].units.score`` is the layer's UnitMem per unit;
* anything else (strings, lists of strings, nested lists) stays as JSON gives it.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Iterator

import numpy as np


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _array(values: list) -> Any:
    if all(isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=bool)
    if all(_is_number(v) for v in values):
        if all(isinstance(v, int) for v in values):
            return np.asarray(values, dtype=np.int64)
        return np.asarray(values, dtype=np.float64)
    return None


def _columns(records: list) -> Any:
    keys = list(records[0].keys())
    if any(not isinstance(r, dict) or list(r.keys()) != keys for r in records):
        return None
    cols = {}
    for k in keys:
        values = [r[k] for r in records]
        if any(isinstance(v, (dict, list)) for v in values):
            return None
        if any(v is None for v in values):
            cols[k] = values
            continue
        arr = _array(values)
        cols[k] = arr if arr is not None else values
    return Result(cols, _raw=records)


def _convert(v: Any) -> Any:
    if isinstance(v, dict):
        return Result(v)
    if isinstance(v, list) and v:
        arr = _array(v)
        if arr is not None:
            return arr
        if isinstance(v[0], dict):
            cols = _columns(v)
            if cols is not None:
                return cols
            return [_convert(x) for x in v]
        if isinstance(v[0], list):
            try:
                arr = np.asarray(v, dtype=np.float64)
                if arr.dtype == np.float64 and arr.ndim >= 2:
                    return arr
            except (TypeError, ValueError):
                pass
            return [_convert(x) for x in v]
    if isinstance(v, list):
        return np.asarray(v, dtype=np.float64) if not v else v
    return v


class Result:
    """A memprune result: attribute and item access over the CLI's JSON (see the module)."""

    def __init__(self, data: dict, _raw: Any = None):
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_raw", data if _raw is None else _raw)
        object.__setattr__(self, "_cache", {})

    def __getitem__(self, key: str) -> Any:
        cache = self._cache
        if key not in cache:
            cache[key] = _convert(self._data[key])
        return cache[key]

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("memprune results are read-only")

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def keys(self):
        return self._data.keys()

    def __dir__(self):
        return list(self._data.keys()) + ["to_dict", "to_json", "keys"]

    def to_dict(self) -> Any:
        """The JSON the CLI writes for the same settings (a deep copy)."""
        return copy.deepcopy(self._raw)

    def to_json(self) -> str:
        return json.dumps(self._raw)

    def __repr__(self) -> str:
        keys = ", ".join(list(self._data.keys())[:8])
        more = ", ..." if len(self._data) > 8 else ""
        return f"memprune.Result({keys}{more})"


def from_json(text: str) -> Result:
    return Result(json.loads(text))
