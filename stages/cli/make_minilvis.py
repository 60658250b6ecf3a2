"""Rule make_minilvis: generate mini-LVIS, the embedded default's long-tailed dataset
(stages.data.minilvis).

CLI: python -m stages.cli.make_minilvis --config CFG --out DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.data.minilvis import make_minilvis
from stages.utils.config import load_stage_config

CONFIG_KEYS = ("minilvis", "seed")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate mini-LVIS (LVIS v1 format, long-tailed)")
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    config = load_stage_config(args.config, CONFIG_KEYS)
    summary = make_minilvis(config["minilvis"], config["seed"], args.out)
    print(f"minilvis: {summary}")


if __name__ == "__main__":
    main()
