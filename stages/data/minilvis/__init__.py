"""Mini-LVIS: seeded, long-tailed instance segmentation data sets in the LVIS v1 json format, made on
the fly for the embedded default and the tests.

Presets (``minilvis.preset``, registered in :mod:`.registry`):
- ``lvis_shaped`` (:mod:`.lvis_shaped`, the default): derived from LVIS v1's published statistics:
  hundreds of classes with LVIS's r/c/f shares and image-count curve (compressed to a small data
  set), look-alike classes, several objects per image with occlusion and clutter;
- ``shapes`` (:mod:`.shapes`): 40 classes, 1-3 objects per image; fast, for the tests.

Files written by :func:`make_minilvis`: images/{train,val,pool}/*.png, train.json, val.json, pool.json,
pool_truth.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stages.data.minilvis import lvis_shaped, shapes  # noqa: F401  (register the presets)
from stages.data.minilvis.registry import MINILVIS_PRESETS


def make_minilvis(cfg: dict[str, Any], seed: int, out_dir: Path) -> dict[str, Any]:
    """Generate the preset ``cfg["preset"]`` of the ``minilvis`` config section into ``out_dir``;
    returns a summary (classes, counts per frequency, images, annotations).

    Raises ValueError for an unknown preset (naming the registered ones)."""
    return MINILVIS_PRESETS.get(cfg["preset"])(cfg, seed, Path(out_dir))
