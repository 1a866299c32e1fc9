"""Command-line programs, importable from an installed package.

Each module defines its absl flags and a `main(argv)`; `run()` is its console
entry point (`sniptf-train`, ...), `python -m sniptf.commands.<name>` works
too, and `scripts/<name>.py` is a thin shell over the same `main`. Import one
command module per process: they share flag names such as `--seed`.
"""

import contextlib
import os
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


def as_flag_message(message, names=None, renames=None):
    """A library error's message in flag words: `name=` becomes `--name=` for each of
    `names` (default: every defined flag), and `renames` maps a library's word to a
    flag's (`{"seed=": "--seeds=", "overwrite=True": "--overwrite"}`)."""
    for old, new in (renames or {}).items():
        message = message.replace(old, new)
    names = sorted(flags.FLAGS) if names is None else list(names)
    if names:
        message = re.sub(r"(?<![\w-])(" + "|".join(map(re.escape, names)) + r")=", r"--\1=", message)
    return message


@contextlib.contextmanager
def flag_errors(names=None, renames=None, errors=(ValueError, TypeError)):
    """Turns the library errors raised inside into `app.UsageError`s that name the flags
    (`as_flag_message`): the one "library error -> --flag wording" rewriter."""
    try:
        yield
    except errors as e:
        raise app.UsageError(as_flag_message(str(e), names, renames)) from e


def check_dir_flags(*names):
    """Raises `app.UsageError` naming the flag if a directory flag cannot be written
    (`run_dir.check`; nothing is created)."""
    from sniptf import run_dir
    for name in names:
        with flag_errors((), {"Received: output_dir=": f"Received: --{name}="}):
            run_dir.check(flags.FLAGS[name].value)


def prepare_output(*names):
    """The preamble of a command that writes directories: checks every directory flag
    in `names` (`check_dir_flags`), then makes them and writes `flags.txt` (whole)
    into the first."""
    from sniptf import run_dir
    check_dir_flags(*names)
    for name in names:
        os.makedirs(flags.FLAGS[name].value, exist_ok=True)
    run_dir.write_text(os.path.join(flags.FLAGS[names[0]].value, "flags.txt"),
                       flags.FLAGS.flags_into_string())


def scaled_budgets(budgets, percent):
    """`{model: (train_steps, eval_every, lr_decay_every)}` scaled to `percent` (each >= 1)."""
    return {m: tuple(max(1, int(round(v * percent / 100))) for v in b) for m, b in budgets.items()}


def check_sparsities(sparsities):
    """A study's --sparsities: each in (0, 1); a UsageError naming the flag otherwise."""
    if not all(0.0 < s < 1.0 for s in sparsities):
        raise app.UsageError(f"Expected --sparsities in (0, 1). Received: --sparsities={list(sparsities)}")
