"""absl flags made from a configuration dataclass whose fields are `sniptf.settings.setting`s
(one flag per field: its name, type, default, help, choices, lower bound), and the
dataclass back from the parsed flags (as open_lth's `Hparams` make their flags)."""

import dataclasses

from absl import flags

from sniptf import settings


def define_flags(config_class, flag_values=flags.FLAGS):
    """Defines one flag per field of `config_class`."""
    for field in dataclasses.fields(config_class):
        name, default, help_text = field.name, field.default, field.metadata.get("help", "")
        choices = settings.choices_of(field)
        if field.type is bool:
            flags.DEFINE_bool(name, default, help_text, flag_values=flag_values)
        elif field.type is int:
            flags.DEFINE_integer(name, default, help_text, lower_bound=field.metadata.get("lower_bound"),
                                 flag_values=flag_values)
        elif field.type is float:
            flags.DEFINE_float(name, default, help_text, flag_values=flag_values)
        elif choices is not None:
            flags.DEFINE_enum(name, default, list(choices), help_text, flag_values=flag_values)
        else:
            flags.DEFINE_string(name, default, help_text, flag_values=flag_values)


def config_from_flags(config_class, flag_values=flags.FLAGS):
    """The `config_class` the parsed flags describe."""
    return config_class(**{f.name: flag_values[f.name].value for f in dataclasses.fields(config_class)})
