"""The registry of mini-LVIS presets (``minilvis.preset``): name -> generator(cfg, seed, out_dir)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from stages.core.registry import Registry

MiniLvisPreset = Callable[[dict[str, Any], int, Path], dict[str, Any]]
MINILVIS_PRESETS: Registry[MiniLvisPreset] = Registry("minilvis.preset")
