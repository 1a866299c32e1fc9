"""SNIP against training budget (does the gap to dense close at convergence?).

A thin shell over `sniptf.commands.snip_budgets` (installed as `sniptf-snip-budgets`);
--help lists the flags.
"""

from sniptf.commands.snip_budgets import run

if __name__ == "__main__":
    run()
