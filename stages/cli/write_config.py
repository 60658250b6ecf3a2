"""Rule student_tuned_config: a run's config with a tuning choice put in (the choice json of
stages.cli.tune is a config overlay), validated, written for the stages that train with it.

CLI: python -m stages.cli.write_config --config BASE.yaml --overlay choice.json --out OUT.yaml
"""

from __future__ import annotations

import argparse

from stages.pipeline.experiments import merged_config
from stages.utils.config import load_config, validate_config, write_config
from stages.utils.readers import read_json

# Reads the whole base config to copy it; not a stage that computes from it.
CONFIG_KEYS: tuple[str, ...] = ()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A config with an overlay (e.g. a tuning choice) put in")
    parser.add_argument("--config", required=True)
    parser.add_argument("--overlay", required=True, action="append", help="json of nested config values; repeatable")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    for path in args.overlay:
        config = merged_config(config, read_json(path))
    write_config(validate_config(config), args.out)
    print(f"write_config: {args.config} + {', '.join(args.overlay)} -> {args.out}")


if __name__ == "__main__":
    main()
