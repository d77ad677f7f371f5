"""Train one model: `python train.py model=wrn20_8 drop=selectscale [key=value ...]`.

Hydra composes configs/ (see `python train.py --help`, `--cfg job` prints the resolved recipe);
`torchrun --nproc_per_node=N train.py ...` trains on N processes. Everything happens in
`selectscale.engine.fit(cfg)`; this file only turns known failures into one-line errors.
"""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from selectscale.cli import KNOWN_FAILURES, composition_error, final_summary, remove_if_empty, report_failure
from selectscale.engine import fit, register_configs
from selectscale.engine.rundir import resolve_run_dir

register_configs()


@hydra.main(config_path="configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        result = fit(cfg)
    except KNOWN_FAILURES as error:
        remove_if_empty(resolve_run_dir(cfg))  # Hydra created it before the run was refused
        sys.exit(report_failure(error))
    if int(os.environ.get("RANK", "0")) == 0:
        print(final_summary(result, resolve_run_dir(cfg)))


if __name__ == "__main__":
    problem = composition_error(sys.argv[1:], Path(__file__).resolve().parent / "configs")
    if problem:  # Hydra's own report of this is several lines with exit status 1
        sys.exit(print(f"error: {problem}", file=sys.stderr) or 2)
    if "--cfg" in sys.argv and "--resolve" not in sys.argv:
        sys.argv.append("--resolve")  # print the recipe with every value worked out
    main()
