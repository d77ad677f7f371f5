"""SelectScale's Hydra configs, shipped inside the package as ``selectscale.configs`` (pyproject maps it here)."""
