"""Export a trained run's best model as a SavedModel (stripped: plain Keras layers).

A thin shell over `sniptf.commands.export` (installed as `sniptf-export`); --help lists the flags.
"""

from absl import app

from sniptf.commands.export import main

if __name__ == "__main__":
    app.run(main)
