"""Export a trained run's best model as a SavedModel (stripped: plain Keras layers).

    python scripts/export.py --checkpoint_dir=out/lenet5_snip --output_dir=out/lenet5_snip/export
"""

from absl import app
from absl import flags
from absl import logging

from sniptf import training

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint_dir", None, "A scripts/train.py --output_dir (or its checkpoints/).")
flags.DEFINE_string("output_dir", None, "Where the SavedModel goes.")
flags.DEFINE_bool("overwrite", False, "Replace an existing --output_dir.")
flags.mark_flags_as_required(["checkpoint_dir", "output_dir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        training.check_output_dir(FLAGS.output_dir + ".parent-check")
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    finally:
        import shutil
        shutil.rmtree(FLAGS.output_dir + ".parent-check", ignore_errors=True)
    try:
        training.export_checkpoint(FLAGS.checkpoint_dir, FLAGS.output_dir, overwrite=FLAGS.overwrite)
    except (ValueError, FileExistsError) as e:
        raise app.UsageError(str(e)) from e
    logging.info("SavedModel written to %s", FLAGS.output_dir)


if __name__ == "__main__":
    app.run(main)
