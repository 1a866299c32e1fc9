"""sniptf-train's flags are made from TrainConfig's declarations (one per field, with its
type, default, help and choices) and give the config back; metrics.json records the same fields."""

import dataclasses

import pytest
from absl import flags

from sniptf import train_config
from sniptf.commands import config_flags
from sniptf.during_training import registry


def _flags(argv=()):
    values = flags.FlagValues()
    config_flags.define_flags(train_config.TrainConfig, values)
    values(["prog", *argv])
    return values


def test_one_flag_per_field_with_its_default_help_and_choices():
    values = _flags()
    fields = dataclasses.fields(train_config.TrainConfig)
    assert sorted(values) == sorted(f.name for f in fields)
    for f in fields:
        assert values[f.name].default == f.default, f.name
        assert values[f.name].help.endswith(f.metadata["help"]) and f.metadata["help"], f.name
    assert set(values["during_training"].parser.enum_values) == {"", *registry.METHODS}
    assert "rigl" in values["during_training"].parser.enum_values and "momentum" in values["optimizer"].parser.enum_values
    assert values["gradual_pruning_scope"].default == "layerwise"
    assert values["score_batches"].validators  # lower_bound=1


def test_flags_give_the_config_back_and_refuse_a_bad_value():
    values = _flags(["--during_training=rigl", "--update_every=7", "--kappa=0.2", "--standardize"])
    config = config_flags.config_from_flags(train_config.TrainConfig, values)
    assert (config.during_training, config.update_every, config.kappa, config.standardize) == ("rigl", 7, 0.2, True)
    assert train_config.record(config)["update_every"] == 7
    with pytest.raises(flags.IllegalFlagValueError):
        _flags(["--score_batches=0"])
    with pytest.raises(flags.IllegalFlagValueError):
        _flags(["--during_training=lottery"])


def test_a_methods_settings_join_the_config_by_themselves():
    # what a new method brings: its Settings dataclass; TrainConfig has its fields
    names = {f.name for f in dataclasses.fields(train_config.TrainConfig)}
    for cls in registry.METHODS.values():
        assert {f.name for f in dataclasses.fields(cls.Settings)} <= names, cls.name
