"""RigL against SET with per-update survival of grown connections (issue 38).

A thin shell over `sniptf.commands.rigl_vs_set` (installed as `sniptf-rigl-vs-set`);
--help lists the flags.
"""

from sniptf.commands.rigl_vs_set import run

if __name__ == "__main__":
    run()
