"""The one loader of the pipeline's configuration.

config.yaml is the defaults: Snakemake merges a ``--configfile`` over it, and :func:`validate_config`
fills any key a config leaves out from it; workflow/schemas/config.schema.yaml holds the types and
ranges. The rule ``stage_config`` writes the validated config to ``results/<run>/config/<stage>.yaml`` whenever a value
the stage declares changes. Every stage CLI reads the config file it is given with
:func:`load_stage_config`, which returns only the keys the stage declares in its ``CONFIG_KEYS``. The layout of ``results/<run>/`` is known only to workflow/rules/common.smk; stages receive
explicit paths.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stages.core.splits import halving_problem

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG_PATH = REPO_ROOT / "config.yaml"


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


def default_config() -> dict[str, Any]:
    """config.yaml as written: the defaults of every key (not validated here)."""
    return yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())


def merged_over(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` merged over a copy of ``base``, nested mappings key by key and anything else
    replaced: Snakemake's merge of a ``--configfile`` over config.yaml (its keys keep config.yaml's
    order, new ones follow)."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged_over(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def fill_defaults(config: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``config`` (changed in place and returned) merged over ``defaults`` (:func:`merged_over`), so
    that a config read here means what it means in the workflow."""
    merged = merged_over(defaults, config)
    config.clear()
    config.update(merged)
    return config


def non_finite_keys(config: Any, prefix: str = "") -> list[str]:
    """The dotted keys (list items as key[i]) holding NaN or an infinity."""
    if isinstance(config, dict):
        return [k for key, value in config.items() for k in non_finite_keys(value, f"{prefix}{key}.")]
    if isinstance(config, list):
        return [k for i, value in enumerate(config) for k in non_finite_keys(value, f"{prefix[:-1]}[{i}].")]
    if isinstance(config, float) and not math.isfinite(config):
        return [prefix[:-1]]
    return []


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Fill the keys ``config`` leaves out from config.yaml (in place), validate it against the
    schema, and return it.

    Raises ConfigError naming every offending key and its problem. NaN and infinities are refused
    anywhere: a JSON-schema bound is false for NaN, so ``minimum``/``maximum`` would let them pass.
    """
    import jsonschema

    fill_defaults(config, default_config())
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    # JSON Schema counts 100.0 as an integer; the stages do not (range(100.0) fails deep inside
    # detectron2), so an integer key takes Python ints only and 100.0 is refused here, by key.
    strict_integers = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool))
    validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=strict_integers)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    lines = [f"config key '{key}': {config_value(config, key)!r} is not a finite number" for key in non_finite_keys(config)]
    for err in errors:
        key = ".".join(str(p) for p in err.absolute_path) or "<top level>"
        lines.append(f"config key '{key}': {err.message}")
    if lines:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    lines = combination_problems(config)
    if lines:
        raise ConfigError("invalid configuration (values that cannot work together):\n  " + "\n  ".join(lines))
    return config


def combination_problems(config: dict[str, Any]) -> list[str]:
    """Values each valid on its own that cannot work together, one line per problem naming the key:
    a holdout too small to halve (mini-LVIS, whose train size the config sets; a user's LVIS train set
    is counted by the split stage, which names the key too), batch sizes that do not split over the
    training processes, an LVIS source without its files. Checked with the schema, before the DAG runs."""
    lines = []
    dataset = config.get("dataset", {})
    minilvis = config.get("minilvis", {})
    # the shapes preset sets its train size; lvis_shaped derives thousands of images from LVIS's
    # statistics, and a user's LVIS train set is counted by the split stage (which names the key too)
    train_images = minilvis.get(minilvis.get("preset"), {}).get("train_images")
    fraction = config.get("split", {}).get("holdout_fraction")
    if dataset.get("source") == "minilvis" and isinstance(train_images, int) and isinstance(fraction, (int, float)):
        problem = halving_problem(train_images, fraction)
        if problem:
            lines.append(f"config key 'split.holdout_fraction': {problem}")
    if dataset.get("source") == "lvis":
        lines += [f"config key 'dataset.{key}' is required when dataset.source is 'lvis'"
                  for key in ("train_json", "val_json", "image_root", "unlabeled_dir") if not dataset.get(key)]
    distributed = config.get("distributed", {})
    per_machine = distributed.get("processes_per_machine", 1)
    for section, machines, keys in (("teacher", "teacher_machines", ("batch_size",)),
                                    ("student", "student_machines", ("labeled_batch_size", "unlabeled_batch_size"))):
        world = per_machine * distributed.get(machines, 1)
        for key in keys:
            value = config.get(section, {}).get(key)
            if isinstance(value, int) and value % world:
                lines.append(f"config key '{section}.{key}': {value} images per step do not split over {world} training "
                             f"processes (distributed.processes_per_machine {per_machine} x distributed.{machines} "
                             f"{distributed.get(machines, 1)}): use a multiple of {world}")
    return lines


def config_value(config: dict[str, Any], key: str) -> Any:
    """The value at a dotted key (``a.b`` or ``a.b[2]``)."""
    node: Any = config
    for part in key.split("."):
        name, _, index = part.partition("[")
        node = node[name]
        if index:
            node = node[int(index.rstrip("]"))]
    return node


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


# How a job runs, not what it computes: any stage may read these, and none of them is a rerun
# trigger (batches and model randomness are seeded per iteration, so workers and threads do not
# change results).
EXECUTION_KEYS = ("num_threads", "data_workers")


def execution_variable(key: str) -> str:
    """The environment variable that carries execution key ``key`` of the current Snakemake
    invocation to a job (``STAGES_NUM_THREADS``). A stage's config file is rewritten only when a
    value the stage declares changes, so a file written by an earlier invocation holds that
    invocation's execution keys; the workflow puts :func:`execution_environment` in Snakemake's
    environment, which every job inherits, and :func:`load_stage_config` takes them over the file's."""
    return f"STAGES_{key.upper()}"


def execution_environment(config: dict[str, Any]) -> dict[str, str]:
    """``{variable: value}`` of ``config``'s execution keys, as :func:`execution_overrides` reads them."""
    return {execution_variable(key): str(config[key]) for key in EXECUTION_KEYS}


def execution_overrides(environ: Mapping[str, str], path: str | Path) -> dict[str, int]:
    """The execution keys set in ``environ`` (see :func:`execution_variable`), as integers.
    ConfigError naming the variable (and the config file it was to apply to) for a value that is
    not an integer."""
    out = {}
    for key in EXECUTION_KEYS:
        value = environ.get(execution_variable(key))
        if value is None:
            continue
        try:
            out[key] = int(value)
        except ValueError:
            raise ConfigError(f"{path}: environment variable {execution_variable(key)}={value!r} (the run's "
                              f"{key}) is not an integer") from None
    return out


class DeclaredConfig(dict):
    """A config restricted to the keys a stage declares (its ``CONFIG_KEYS``): reading any other key
    is an error, so what a stage reads can never drift from what triggers its reruns."""

    def __init__(self, data: dict[str, Any], prefix: str = ""):
        super().__init__(data)
        self._prefix = prefix

    def _undeclared(self, key: Any) -> KeyError:
        return KeyError(f"config key '{self._prefix}{key}' is read by a stage that does not declare it in its "
                        f"CONFIG_KEYS (stages/<stage>.py); declare it, so that changing it reruns the stage")

    def __missing__(self, key: Any) -> Any:
        raise self._undeclared(key)

    def get(self, key: Any, default: Any = None) -> Any:
        if key in self:
            return self[key]
        raise self._undeclared(key)


def _get_path(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"declared config key '{key}' does not exist in the configuration")
        node = node[part]
    return node


def declared_values(config: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``{dotted key: value}`` of the declared ``keys`` (sections or single values)."""
    return {key: _get_path(config, key) for key in keys}


def restrict(config: dict[str, Any], keys: tuple[str, ...]) -> DeclaredConfig:
    """The part of ``config`` under ``keys`` (dotted: ``teacher`` or ``teacher.gamma``) plus
    EXECUTION_KEYS, as nested DeclaredConfigs."""
    tree: dict[str, Any] = {}
    for key in (*keys, *EXECUTION_KEYS):
        parts = key.split(".")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = copy.deepcopy(_get_path(config, key))

    def wrap(node: dict[str, Any], prefix: str) -> DeclaredConfig:
        return DeclaredConfig({k: wrap(v, f"{prefix}{k}.") if isinstance(v, dict) else v for k, v in node.items()},
                              prefix)

    return wrap(tree, "")


def load_stage_config(path: str | Path, keys: tuple[str, ...], environ: Mapping[str, str] | None = None
                      ) -> DeclaredConfig:
    """A stage's view of the config file at ``path``: validated, defaults filled, restricted to ``keys``,
    with the execution keys the environment sets (``environ``, default ``os.environ``; see
    :func:`execution_variable`) over the file's; each value that differs from the file's is said on
    stderr (the job's log). ConfigError for an invalid file or setting."""
    config = load_config(path)
    overrides = execution_overrides(os.environ if environ is None else environ, path)
    if overrides:
        try:
            merged = validate_config(config | overrides)
        except ConfigError as exc:
            raise ConfigError(f"{path} with {', '.join(f'{execution_variable(k)}={v}' for k, v in overrides.items())}"
                              f": {exc}") from None
        for key, value in overrides.items():
            if value != config[key]:
                print(f"{key} = {value} from {execution_variable(key)} (this invocation's), over {config[key]} in "
                      f"{path} (written by an earlier one)", file=sys.stderr)
        config = merged
    return restrict(config, keys)


def write_config(config: dict[str, Any], target: str | Path) -> None:
    """A config as YAML, atomically (the config file a stage of a run reads)."""
    from stages.utils.atomic import write_text

    plain = json.loads(json.dumps(config))  # plain dicts and lists, whatever mapping types came in
    write_text(yaml.safe_dump(plain, sort_keys=True), target)
