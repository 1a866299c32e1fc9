"""`MaskUpdater`: the base of every method that changes masks while `fit` runs.

It owns what the methods share, so a method is its schedule and its rule:
- which steps update (`is_update_step`; with `steps_per_execution` > 1 Keras runs
  callbacks once per execution, and the latest step due inside one is made, at
  its end);
- collecting the masked weights (`sniptf.transform.masked_entries`) and, at the
  start of each `fit`, the invariant every method relies on: where a mask is 0
  the raw weight and its optimizer slots are exactly 0;
- applying new masks (`transform.change_masks`): only connections whose mask bit
  changes are touched — a removed one and a new one are set to 0 with their
  slots (momentum, Adam's moments) — so a connection dropped and regrown in one
  update keeps its value, as in google-research/rigl;
- the dense-gradient hook, for a method that sets `needs_dense_gradient`
  (`sniptf.masked_layer.DenseGradient`: ∂L/∂θ of the update step's batch,
  θ = W ⊙ C, from the training step's own backward pass, under any strategy;
  held only while `fit` runs, and replaced, not stacked, by the next `fit`);
- the record of each update (`updates`; `record()` for `metrics.json`).

Its state is the model's: the masks and the optimizer's step count, which
`.keras` files and `sniptf.backup.Backup` keep, so a resumed `fit` continues
the schedule. A subclass sets `name` (its registry key, see `registry.py`) and
`Settings` (the dataclass of its `TrainConfig` fields) and implements
`is_update_step`, `new_masks` and `from_config`.
"""

import keras
import tensorflow as tf

from sniptf import magnitude
from sniptf import masked_layer
from sniptf import transform


class MaskUpdater(keras.callbacks.Callback):
    """A callback that changes a wrapped model's masks at scheduled steps (see the module).

    Attributes:
        updates: one dict per update made: `step`, `kept` (weights kept after it),
            `changed` (mask bits that changed), `removed` (1 -> 0), `added`
            (0 -> 1), `survived` (of the connections the previous update added,
            how many are still kept after this one; None for the first update of
            a `fit`), `loss` (Keras's running mean of the training loss over the
            epoch so far, at the update step), and what the method adds.
        zero_pruned_at_start: enforce the invariant at `on_train_begin` (on by
            default; a test switches it off to show a method does not need it).
    """

    name = ""
    Settings = None
    needs_dense_gradient = False
    takes_structure = False  # keeps a structured mask's pattern (TrainConfig.structure)
    zero_pruned_at_start = True

    def __init__(self):
        super().__init__()
        self.updates = []
        self.dense_gradients = None
        self._entries = None
        self._seen = None
        self._added = None

    # what a method says -------------------------------------------------------

    def is_update_step(self, step):
        """Whether the masks change after optimizer step `step`."""
        raise NotImplementedError

    def new_masks(self, step, masks):
        """The masks after the update at `step`, from the current `masks` (boolean
        arrays in the order of `transform.masked_entries`); the weights are the
        model's. May set `self.extra` (a dict) to add to this update's record."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        """The callback a `TrainConfig` asks for (its `Settings` fields are there)."""
        raise NotImplementedError

    def begin(self, step):
        """Called once the masks are collected, at the start of each `fit` (at `step`)."""

    def latest_due(self, after, upto):
        """The latest update step in (after, upto], or None."""
        for step in range(upto, after, -1):
            if self.is_update_step(step):
                return step
        return None

    # what the base does -------------------------------------------------------

    @property
    def entries(self):
        """The model's masked weights (`transform.masked_entries`), once `fit` started."""
        return self._entries

    def optimizer_step(self):
        """The optimizer's step count."""
        return int(self.model.optimizer.iterations.numpy())

    def on_train_begin(self, logs=None):
        self._entries = transform.masked_entries(self.model)
        if not self._entries:
            raise ValueError(f"{type(self).__name__} needs a wrapped model (sniptf.prune or sniptf.wrap). "
                             f"Received: model '{self.model.name}' without MaskedLayers")
        self._seen = self.optimizer_step()
        self._added = None
        if self.zero_pruned_at_start:
            transform.zero_pruned(self._entries, magnitude.optimizer_of(self.model))
        if self.needs_dense_gradient:
            self._capture_dense_gradients()
        self.begin(self._seen)

    def on_train_batch_end(self, batch, logs=None):
        step = self.optimizer_step()
        due = self.latest_due(self._seen, step)
        self._seen = step
        if due is not None:
            self.update(due, logs)

    def on_train_end(self, logs=None):
        if self.dense_gradients is not None:
            masked_layer.release_dense_gradients([e.mask for e in self._entries])
            self.model.make_train_function(force=True)  # the step without the hook again

    def update(self, step, logs=None):
        """Makes the update at `step` now, from the current weights, and records it."""
        old = [transform.mask_bits(e) for e in self._entries]
        self.extra = {}
        new = self.new_masks(step, old)
        removed, added = transform.change_masks(self._entries, new, magnitude.optimizer_of(self.model), old=old)
        survived = None
        if self._added is not None:
            survived = int(sum(int((a & n).sum()) for a, n in zip(self._added, new)))
        loss = (logs or {}).get("loss")
        self.updates.append({
            "step": int(step), "kept": int(sum(int(n.sum()) for n in new)),
            "changed": int(sum(int(r.sum()) + int(a.sum()) for r, a in zip(removed, added))),
            "removed": int(sum(int(r.sum()) for r in removed)),
            "added": int(sum(int(a.sum()) for a in added)),
            "survived": survived, "loss": None if loss is None else float(loss), **self.extra})
        self._added = added

    def record(self):
        """What `metrics.json` keeps of this method: its name, settings and updates."""
        return {"method": self.name, "settings": self.settings_record(), "updates": self.updates}

    def settings_record(self):
        """The constructor's settings as given (a subclass with a `Settings` names them)."""
        return {}

    def _capture_dense_gradients(self):
        model = self.model
        strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
        iterations = model.optimizer.iterations
        with strategy.scope():
            # on-read: each replica writes its own (no collective inside the backward pass)
            def on_read(shape, dtype, name, aggregation):
                return tf.Variable(tf.zeros(shape, dtype), trainable=False, name=name,
                                   synchronization=tf.VariableSynchronization.ON_READ,
                                   aggregation=aggregation)
            sinks = [masked_layer.DenseGradient(
                on_read(e.weight.shape, tf.float32, f"dense_gradient_{i}", tf.VariableAggregation.SUM),
                on_read((), tf.int64, f"dense_gradient_step_{i}", tf.VariableAggregation.ONLY_FIRST_REPLICA),
                iterations, self._due_tensor) for i, e in enumerate(self._entries)]
        masked_layer.capture_dense_gradients([(e.mask, s) for e, s in zip(self._entries, sinks)])
        self.dense_gradients = [s.variable for s in sinks]
        model.make_train_function(force=True)  # the step with the hook

    def _due_tensor(self, step):
        """`is_update_step` in the graph (a method with a dense gradient overrides it)."""
        raise NotImplementedError(f"{type(self).__name__} needs a dense gradient: define _due_tensor")

