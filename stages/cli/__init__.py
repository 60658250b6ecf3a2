"""The rule CLIs: one module per Snakemake rule (or rule family), ``python -m stages.cli.<name>``.

Each holds ``main()`` and its ``CONFIG_KEYS`` (the config keys it reads) and nothing else; the
library lives in the sibling packages. The workflow finds the stages by listing this folder.
"""
