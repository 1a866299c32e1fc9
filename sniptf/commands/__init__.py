"""Command-line programs, importable from an installed package.

Each module defines its absl flags and a `main(argv)`; `run()` is its console
entry point (`sniptf-train`, ...), `python -m sniptf.commands.<name>` works
too, and `scripts/<name>.py` is a thin shell over the same `main`. Import one
command module per process: they share flag names such as `--seed`.
"""

import re
import sys

from absl import app
from absl import flags

# absl says "flag --name=value: why"; every other error of ours ends "Received: ..."
_ABSL_MESSAGE = re.compile(r"flag (--[\w-]+=.*?): (.*)", re.S)


def parse_flags(argv):
    """absl's flag parsing, whose errors end like every sniptf error:
    "why. Received: --name=value" (then exit 1, as absl does)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        message = str(e)
        match = _ABSL_MESSAGE.match(message)
        if match:
            message = f"{match.group(2).rstrip('.')}. Received: {match.group(1)}"
        sys.stderr.write(f"FATAL Flags parsing error: {message}\n"
                         "Pass --helpshort or --helpfull to see help on flags.\n")
        sys.exit(1)


def run_command(main):
    """`app.run(main)` with `parse_flags`."""
    app.run(main, flags_parser=parse_flags)


def check_dir_flags(*names):
    """Raises `app.UsageError` naming the flag if a directory flag cannot be written
    (`run_dir.check`; nothing is created)."""
    from sniptf import run_dir
    for name in names:
        try:
            run_dir.check(flags.FLAGS[name].value)
        except ValueError as e:
            raise app.UsageError(str(e).replace("Received: output_dir=", f"Received: --{name}=")) from e
