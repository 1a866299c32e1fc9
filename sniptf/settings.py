"""Settings: one declaration per value (type, default, help, allowed values), and the
checks that name a bad one.

A configuration dataclass declares each field with `setting(...)`; the command-line
flags (`sniptf.commands.config_flags`) and the record in `metrics.json` are made
from those declarations, so a field, its flag and its record cannot drift apart.
A check raises `BadSetting` (a `ValueError`) that carries the name it was given;
code that checks a value under another name (a callback's `begin_step`, a
`TrainConfig`'s `gradual_pruning_begin_step`) renames it, it does not rewrite text.
"""

import dataclasses
import numbers

import numpy as np


class BadSetting(ValueError):
    """A value that is not what its setting takes; the message names both."""

    def __init__(self, name, value, expected):
        self.name, self.value, self.expected = name, value, expected
        super().__init__(f"Expected `{name}` to be {expected}. Received: {name}={value!r}")

    def renamed(self, names):
        """The same error under the name `names` maps this one's to (a dict), if any."""
        return BadSetting(names.get(self.name, self.name), self.value, self.expected)


def setting(default, help, *, choices=None, lower_bound=None):  # noqa: A002 (absl's word)
    """A dataclass field with what its flag needs: `help`, and for a string the allowed
    `choices` (a tuple, or a function returning one: read when the flags are made), for
    an int its `lower_bound`."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices,
                                                        "lower_bound": lower_bound})


def choices_of(field):
    """The allowed values of a `setting` (None: any)."""
    choices = field.metadata.get("choices")
    return tuple(choices() if callable(choices) else choices) if choices is not None else None


def check_int(name, value, *, minimum=0):
    """`value` as an int >= `minimum` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise BadSetting(name, value, f"an int >= {minimum}")
    return int(value)


def check_fraction(name, value, *, low_open=False, high_open=False):
    """`value` as a float in [0, 1], the ends open as asked (bools refused)."""
    interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not ((0.0 < value) if low_open else (0.0 <= value)) \
            or not ((value < 1.0) if high_open else (value <= 1.0)):
        raise BadSetting(name, value, f"a float in {interval}")
    return float(value)


def check_choice(name, value, choices):
    """`value`, one of `choices`."""
    if value not in choices:
        raise BadSetting(name, value, f"one of {tuple(choices)}")
    return value
