"""Turn `snakemake --rulegraph mermaid-js` output into the DAG picture of docs/design.md.

Every rule reads its config file (config/<stage>.yaml); those edges are left out so that the data flow shows.
`make dag` runs this and rewrites the block between the markers in docs/design.md.

Usage: snakemake --rulegraph mermaid-js -- paper_tables | python docs/rulegraph.py docs/design.md
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

BEGIN, END = "<!-- rulegraph: begin (make dag) -->", "<!-- rulegraph: end -->"
HIDDEN = {"stage_config", "experiment_stage_config"}


def mermaid(rulegraph: str) -> str:
    names = dict(re.findall(r"^\s*(id\d+)\[(\w+)\]", rulegraph, re.M))
    edges = re.findall(r"^\s*(id\d+) --> (id\d+)", rulegraph, re.M)
    shown = {i: n for i, n in names.items() if n not in HIDDEN}
    lines = ["```mermaid", "flowchart TB"]
    lines += [f"    {n}[{n}]" for n in sorted(shown.values())]
    lines += sorted(f"    {shown[a]} --> {shown[b]}" for a, b in edges if a in shown and b in shown)
    return "\n".join(lines + ["```"])


def main() -> None:
    target = Path(sys.argv[1])
    text = target.read_text()
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    target.write_text(text[:start] + "\n" + mermaid(sys.stdin.read()) + "\n" + text[stop:])


if __name__ == "__main__":
    main()
