"""Typed stubs of memprune's Python API (the functions run the CLI's commands in-process)."""

import os
from typing import Any, Iterator, KeysView, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

PathLike = Union[str, os.PathLike[str]]
Array = npt.ArrayLike
Checkpoint = Union[PathLike, Mapping[str, Array]]
Split = Union[Array, Tuple[Array, Array]]
Data = Union[PathLike, Split, Mapping[str, Split]]

class Error(ValueError):
    """memprune refused or failed: the CLI's one-line message."""

class Result:
    """The CLI's JSON: objects as Results, lists of numbers as numpy arrays, lists of
    records as a Result of columns."""

    def __getitem__(self, key: str) -> Any: ...
    def __getattr__(self, key: str) -> Any: ...
    def __contains__(self, key: str) -> bool: ...
    def __iter__(self) -> Iterator[str]: ...
    def keys(self) -> KeysView[str]: ...
    def to_dict(self) -> Any: ...
    def to_json(self) -> str: ...

def measure_unit(
    checkpoint: Optional[Checkpoint] = None,
    data: Optional[Data] = None,
    *,
    metadata: Optional[Mapping[str, str]] = None,
    points: Optional[int] = None,
    views: Optional[int] = None,
    seed: Optional[int] = None,
    batch: Optional[int] = None,
    control: Optional[bool] = None,
    augment: Optional[PathLike] = None,
    heads: Optional[int] = None,
    prefix: Optional[str] = None,
    key: Optional[str] = None,
    stem: Optional[str] = None,
    pool: Optional[str] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    threads: Optional[int] = None,
    progress: bool = True,
    **options: Any,
) -> Result: ...
def measure_class(
    checkpoint: Optional[Checkpoint] = None,
    data: Optional[Data] = None,
    *,
    metadata: Optional[Mapping[str, str]] = None,
    points: Optional[int] = None,
    views: Optional[int] = None,
    seed: Optional[int] = None,
    batch: Optional[int] = None,
    control: Optional[bool] = None,
    heads: Optional[int] = None,
    threads: Optional[int] = None,
    progress: bool = True,
    **options: Any,
) -> Result: ...
def measure_layer(
    f: Optional[Checkpoint] = None,
    reference: Optional[Checkpoint] = None,
    data: Optional[Data] = None,
    *,
    metadata: Optional[Mapping[str, str]] = None,
    points: Optional[int] = None,
    views: Optional[int] = None,
    seed: Optional[int] = None,
    batch: Optional[int] = None,
    control: Optional[bool] = None,
    pairing: Optional[str] = None,
    tokens: Optional[str] = None,
    score: Optional[str] = None,
    heads: Optional[int] = None,
    threads: Optional[int] = None,
    progress: bool = True,
    **options: Any,
) -> Result: ...
def probe(
    checkpoint: Optional[Checkpoint] = None,
    data: Optional[Data] = None,
    *,
    metadata: Optional[Mapping[str, str]] = None,
    knn: Optional[bool] = None,
    epochs: Optional[int] = None,
    threads: Optional[int] = None,
    progress: bool = True,
    **options: Any,
) -> Result: ...
def embed(
    checkpoint: Optional[Checkpoint] = None,
    data: Optional[Data] = None,
    *,
    metadata: Optional[Mapping[str, str]] = None,
    split: Optional[str] = None,
    layer: Optional[str] = None,
    batch: Optional[int] = None,
    progress: bool = True,
    **options: Any,
) -> Result: ...
def inspect(
    checkpoint: Optional[Checkpoint] = None,
    *,
    metadata: Optional[Mapping[str, str]] = None,
    size: Optional[int] = None,
    heads: Optional[int] = None,
    prefix: Optional[str] = None,
    key: Optional[str] = None,
    **options: Any,
) -> Result: ...
def plan(policy: PathLike, *, progress: bool = True, **options: Any) -> Result: ...
def run_policy(policy: PathLike, *, progress: bool = True, **options: Any) -> Result: ...
