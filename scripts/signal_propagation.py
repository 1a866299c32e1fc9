"""Signal propagation at initialization (Lee et al., ICLR 2020): JSV, trainability,

A thin shell over `sniptf.commands.signal_propagation` (installed as `sniptf-signal-propagation`); --help lists the flags.
"""

from sniptf.commands.signal_propagation import run

if __name__ == "__main__":
    run()
