"""`snakemake --lint`, with the one lint these machines cannot act on left out: every rule is asked
for a conda environment or container, and no conda environment can be built or tested here (the
environment is envs/requirements.txt in .venv/). Any other lint fails.

`python -m tests.snakemake_lint [REPO]` (`make lint` runs it; so does the test suite) prints the
remaining lints and exits 1 when there are any. Snakemake's ``--lint json`` is not used: its CLI
prints text whatever the format asked (snakemake 9.27).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

# Lints that are left out, by the start of their title.
IGNORED = ("Specify a conda environment or container for each rule",)
# Lints of a rule being rewritten, left out by (rule, title start) until it lands; the test suite
# fails once such a lint is gone, so that its entry is removed with it. None pending now.
PENDING: tuple[tuple[str, str], ...] = ()

_ITEM = re.compile(r"^Lints for (?:rule (?P<rule>\S+) \(line \d+, (?P<rule_file>[^)]+)\)|snakefile (?P<file>.+)):$")
_LINT = re.compile(r"^    \* (?P<title>.+?):$")


def lints(repo: Path) -> list[tuple[str, str]]:
    """Every lint of the workflow in ``repo`` as (where: a rule name or a snakefile, title)."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    done = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=repo, capture_output=True, text=True,
                          env=env, timeout=600)
    found, where = [], None
    for line in (done.stdout + done.stderr).splitlines():
        if item := _ITEM.match(line):
            where = item["rule"] or item["file"]
        elif (lint := _LINT.match(line)) and where is not None:
            found.append((where, lint["title"]))
    if done.returncode != 0 and not found:
        raise RuntimeError(f"snakemake --lint failed without a lint:\n{(done.stdout + done.stderr)[-3000:]}")
    return found


def remaining(found: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The lints that count: all but the IGNORED and the PENDING ones."""
    return [(where, title) for where, title in found if not title.startswith(IGNORED)
            and not any(where == rule and title.startswith(start) for rule, start in PENDING)]


def main(argv: list[str] | None = None) -> int:
    repo = Path((argv or sys.argv[1:] or [Path(__file__).resolve().parent.parent])[0])
    left = remaining(lints(repo))
    for where, title in left:
        print(f"snakemake lint: {where}: {title}")
    print(f"snakemake --lint: {len(left)} lint(s) besides the conda/container one")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
