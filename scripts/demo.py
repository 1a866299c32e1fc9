"""The main job: SNIP vs random pruning vs dense LeNet-300-100 on mnist10k.

A thin shell over `sniptf.commands.demo` (installed as `sniptf-demo`); --help lists the flags.
"""

from sniptf.commands.demo import run

if __name__ == "__main__":
    run()
