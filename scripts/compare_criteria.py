"""Pruning criteria compared on one recipe (issue 13).

A thin shell over `sniptf.commands.compare_criteria` (installed as `sniptf-compare-criteria`);
--help lists the flags.
"""

from sniptf.commands.compare_criteria import run

if __name__ == "__main__":
    run()
