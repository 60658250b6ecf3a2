"""The pipeline's stages: one module per stage, each importable and a CLI (python -m stages.<name>)."""
