"""Export a trained run's best model for serving (stripped: plain Keras layers).

    sniptf-export --checkpoint_dir=out/lenet5_snip --output_dir=out/lenet5_snip/export
    sniptf-export ... --format=sparse_saved_model   # kept values + compact index
    sniptf-export ... --format=tflite --output_dir=out/lenet5_snip/model.tflite
    sniptf-export ... --compact   # dead units removed first: a smaller dense model
"""

from absl import app
from absl import flags
from absl import logging

from sniptf import exporters
from sniptf import training
from sniptf.commands import flag_errors
from sniptf.commands import run_command

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint_dir", None, "A sniptf-train --output_dir (or its checkpoints/).")
flags.DEFINE_string("output_dir", None, "Where the SavedModel goes.")
flags.DEFINE_bool("overwrite", False, "Replace an existing --output_dir.")
flags.DEFINE_enum("format", "saved_model", list(exporters.FORMATS),
                  "saved_model, sparse_saved_model (smaller; TensorFlow alone loads it) or tflite.")
flags.DEFINE_bool("compact", False, "Remove the dead units first (sniptf.compact): a smaller dense "
                  "model with the same outputs, in any --format.")
flags.mark_flags_as_required(["checkpoint_dir", "output_dir"])


def main(argv):
    """The command (the module docstring says what it does); `argv` after flag parsing."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    with flag_errors(renames={"overwrite=True": "--overwrite"},
                     errors=(ValueError, TypeError, FileExistsError)):
        training.check_output_dir(FLAGS.output_dir)
        exporters.export_checkpoint(FLAGS.checkpoint_dir, FLAGS.output_dir,
                                    overwrite=FLAGS.overwrite, format=FLAGS.format, compact=FLAGS.compact)
    logging.info("%s%s written to %s", FLAGS.format, " (compacted)" if FLAGS.compact else "", FLAGS.output_dir)


def run():
    """Console entry point: parses the flags and calls `main`."""
    run_command(main)


if __name__ == "__main__":
    run()
