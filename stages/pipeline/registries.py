"""The config keys whose values name a registered variant, checked before any job runs.

The registries are the one list of each method axis; the schema leaves these keys as plain strings,
so a new variant is one decorated function in the module that owns its registry.
"""

from __future__ import annotations

from typing import Any

from stages.core.pseudo_labels import STUDENT_VARIANTS
from stages.core.registry import Registry
from stages.core.smoothing import SMOOTHING
from stages.data.minilvis.registry import MINILVIS_PRESETS
from stages.evaluation.lvis_eval import EVALUATORS
from stages.utils.config import ConfigError, declared_values

# dotted config key -> the registry its value (or every item of its list) must name
REGISTRY_KEYS: dict[str, Registry] = {
    "teacher.smoothing": SMOOTHING,
    "sweep.variants": SMOOTHING,
    "student.variants": STUDENT_VARIANTS,
    "evaluation.evaluator": EVALUATORS,
    "minilvis.preset": MINILVIS_PRESETS,
}


def check_registered(config: dict[str, Any]) -> None:
    """Raise ConfigError naming every config value that no registry knows."""
    errors = []
    for key, value in declared_values(config, tuple(REGISTRY_KEYS)).items():
        registry = REGISTRY_KEYS[key]
        for name in value if isinstance(value, list) else [value]:
            if name not in registry:
                errors.append(f"config key '{key}': {name!r} is not one of {', '.join(registry.names())}")
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
