"""Steps-to-result vs batch size for several sparsity levels (Lee et al., ICLR 2021).

A thin shell over `sniptf.commands.steps_to_result` (installed as `sniptf-steps-to-result`);
--help lists the flags. Actions: prepare | work | resume | report.
"""

from sniptf.commands.steps_to_result import run

if __name__ == "__main__":
    run()
