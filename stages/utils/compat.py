"""Compatibility shims for third-party code written for older numpy."""

from __future__ import annotations

import numpy as np


def ensure_numpy_aliases() -> None:
    """lvis 0.5.3 uses np.float (removed in numpy 2): restore the builtin aliases if missing."""
    for name, value in (("float", float), ("int", int), ("bool", bool), ("object", object)):
        if name not in np.__dict__:
            setattr(np, name, value)
