"""Every private name of Optuna that sniptf uses, in one place (as `_keras_compat`
is for Keras and TensorFlow)."""


def trial_id(trial):
    """The storage's id of a `FrozenTrial` (Optuna keeps it private, `_trial_id`; the
    storages' public calls take it)."""
    return trial._trial_id
