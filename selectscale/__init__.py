"""SelectScale: selective and soft dropout for CNNs (Chen, Niu, Liu, Tang; IJCAI 2020).

``selectscale.drop`` holds the paper's five drop methods as layers and functions.
"""

__version__ = "0.1.0"
