"""Command-line programs, importable from an installed package.

Each module defines its absl flags and a `main(argv)`; `run()` is its console
entry point (`sniptf-train`, ...), `python -m sniptf.commands.<name>` works
too, and `scripts/<name>.py` is a thin shell over the same `main`. Import one
command module per process: they share flag names such as `--seed`.
"""
