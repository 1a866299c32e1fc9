"""SNIP paper experiments (Lee et al., ICLR 2019) on the data this machine has.

A thin shell over `sniptf.commands.snip_experiments` (installed as `sniptf-snip-experiments`); --help lists the flags.
"""

from sniptf.commands.snip_experiments import run

if __name__ == "__main__":
    run()
