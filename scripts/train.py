"""Prune at initialization, train, evaluate and export, under any tf.distribute strategy.

A thin shell over `sniptf.commands.train` (installed as `sniptf-train`); --help lists the flags.
"""

from absl import app

from sniptf.commands.train import main

if __name__ == "__main__":
    app.run(main)
