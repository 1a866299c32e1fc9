"""Export a trained run's best model as a SavedModel (stripped: plain Keras layers).

A thin shell over `sniptf.commands.export` (installed as `sniptf-export`); --help lists the flags.
"""

from sniptf.commands.export import run

if __name__ == "__main__":
    run()
