"""Train one model: `python train.py model=wrn20_8 drop=selectscale [key=value ...]`.

The thin entry point users know; the command line lives in `selectscale/train.py` (also `selectscale-train` and
`python -m selectscale.train` once installed). `torchrun --nproc_per_node=N train.py ...` trains on N processes.
"""

import sys

from selectscale.train import run

if __name__ == "__main__":
    sys.exit(run())
