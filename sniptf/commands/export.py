"""Export a trained run's best model as a SavedModel (stripped: plain Keras layers).

    sniptf-export --checkpoint_dir=out/lenet5_snip --output_dir=out/lenet5_snip/export
"""

from absl import app
from absl import flags
from absl import logging

from sniptf import saved_model
from sniptf import training

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint_dir", None, "A sniptf-train --output_dir (or its checkpoints/).")
flags.DEFINE_string("output_dir", None, "Where the SavedModel goes.")
flags.DEFINE_bool("overwrite", False, "Replace an existing --output_dir.")
flags.mark_flags_as_required(["checkpoint_dir", "output_dir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        training.check_output_dir(FLAGS.output_dir)
        saved_model.export_checkpoint(FLAGS.checkpoint_dir, FLAGS.output_dir, overwrite=FLAGS.overwrite)
    except (ValueError, FileExistsError) as e:
        message = str(e).replace("checkpoint_dir=", "--checkpoint_dir=").replace(
            "overwrite=True", "--overwrite")
        raise app.UsageError(training.as_flags(message)) from e
    logging.info("SavedModel written to %s", FLAGS.output_dir)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
