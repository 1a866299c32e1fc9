"""Where pruning at initialization stands (issue 25).

A thin shell over `sniptf.commands.where_pai_stands` (installed as `sniptf-where-pai-stands`);
--help lists the flags.
"""

from sniptf.commands.where_pai_stands import run

if __name__ == "__main__":
    run()
