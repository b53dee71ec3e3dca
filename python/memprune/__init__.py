"""memprune from Python: find where self-supervised vision encoders memorize.

Each function runs the memprune command of the same name in-process and returns a
`Result` whose lists of numbers are numpy arrays and whose ``to_dict()`` is the JSON the
command writes. A checkpoint may be a path or a dict of name -> array; data may be a path or
a uint8 array N x H x W (x C), an ``(images, labels)`` pair, or ``{"train": ..., "test": ...}``.
Errors raise `memprune.Error` (a ValueError) with the command's one-line message.
"""

from ._memprune import Error, __version__
from ._api import (
    embed,
    inspect,
    measure_class,
    measure_layer,
    measure_unit,
    plan,
    probe,
    run_policy,
)
from ._results import Result

__all__ = [
    "Error",
    "Result",
    "__version__",
    "embed",
    "inspect",
    "measure_class",
    "measure_layer",
    "measure_unit",
    "plan",
    "probe",
    "run_policy",
]
