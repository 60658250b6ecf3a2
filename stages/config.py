"""The one loader of the pipeline's configuration and of the paths derived from it.

Snakemake validates the config against workflow/schemas/config.schema.yaml (filling defaults)
and writes the resolved config to ``results/<run>/config.yaml``; every stage CLI reads that file
with :func:`load_config`. The layout of ``results/<run>/`` is known only to
workflow/rules/common.smk; stages receive explicit paths.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG_PATH = REPO_ROOT / "config.yaml"


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


def _set_defaults(config: dict, schema: dict) -> dict:
    """Fill missing keys with the schema's defaults (recursively), like snakemake's validate."""
    for key, sub in schema.get("properties", {}).items():
        if key not in config and "default" in sub:
            config[key] = copy.deepcopy(sub["default"])
        if sub.get("type") == "object" and isinstance(config.get(key), dict):
            _set_defaults(config[key], sub)
    return config


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate ``config`` against the schema, fill defaults, and return it.

    Raises ConfigError naming the offending key and the problem.
    """
    import jsonschema

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for err in errors:
            key = ".".join(str(p) for p in err.absolute_path) or "<top level>"
            lines.append(f"config key '{key}': {err.message}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    return _set_defaults(config, schema)


def load_config(path: str | Path | None = None) -> dict[str, Any]:
    """Read a config yaml (default: the repository's config.yaml), validate it, fill defaults."""
    path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return validate_config(raw)
