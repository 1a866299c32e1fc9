"""Prune at initialization, train, evaluate and export, under any tf.distribute strategy.

A thin shell over `sniptf.commands.train` (installed as `sniptf-train`); --help lists the flags.
"""

from sniptf.commands.train import run

if __name__ == "__main__":
    run()
