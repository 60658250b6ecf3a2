"""What each stage reads of the config, for the rule that runs it.

Every stage CLI declares the config keys it reads in a module constant ``CONFIG_KEYS`` (dotted:
``teacher`` for a section, ``teacher.gamma`` for one value), and reads the config through
stages.utils.config.load_stage_config, which refuses anything undeclared. The rules' rerun trigger
is a hash of exactly those values (:func:`declared_hash`), so a change reruns the stages that read
it and nothing else. The constant is read from the module's source (no import: the Snakefile
parses quickly and stays free of torch).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from stages.utils.config import declared_values

CLI_DIR = Path(__file__).resolve().parent.parent / "cli"


@functools.cache
def declared_keys(stage: str) -> tuple[str, ...]:
    """The ``CONFIG_KEYS`` literal of stages/cli/<stage>.py."""
    path = CLI_DIR / f"{stage}.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "CONFIG_KEYS" for t in targets) and node.value is not None:
            keys = ast.literal_eval(node.value)
            if not isinstance(keys, tuple) or not all(isinstance(k, str) for k in keys):
                raise ValueError(f"{path}: CONFIG_KEYS must be a tuple of strings")
            return keys
    raise ValueError(f"{path}: no CONFIG_KEYS constant (the config keys the stage reads)")


def declared_hash(config: dict[str, Any], stage: str) -> str:
    """Rerun trigger of a rule running ``stage``: the hash of the values of its declared keys."""
    payload = json.dumps(declared_values(config, declared_keys(stage)), sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def stage_names() -> list[str]:
    """The rule CLIs: the modules of stages/cli/."""
    return sorted(p.stem for p in CLI_DIR.glob("*.py") if p.stem != "__init__")
