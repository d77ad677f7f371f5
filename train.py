"""Training entrypoint: `python train.py model=wrn20_8 drop=selectscale` (Hydra).

Placeholder until the training engine lands (issue 5): it refuses to run rather than pretend.
"""

import sys

if __name__ == "__main__":
    sys.exit("train.py: the training engine is not built yet (issue 5); use `make demo` to try the drop layers")
