"""The paper's figures: ``python -m selectscale.figures {fig3,fig4,cam} ...``.

- ``fig3``: drops switched on at inference in a network trained without drop (:mod:`.fig3`).
- ``fig4``: the top-rate and retaining-rate sweeps of SelectScale for WRN-20-8 on CIFAR-100 (:mod:`.fig4`).
- ``cam``: class activation maps (Zhou et al. 2016) of runs side by side, Figures 1 and 5 (:mod:`.cam`).
"""

from __future__ import annotations

import argparse
import sys

from selectscale.errors import FigureError, SelectScaleError, one_line

__all__ = ["FigureError", "main"]


def _commands() -> dict:
    from selectscale.figures import cam, fig3, fig4

    return {"fig3": fig3, "fig4": fig4, "cam": cam}


def main(argv: list[str] | None = None) -> int:
    commands = _commands()
    parser = argparse.ArgumentParser(prog="python -m selectscale.figures", description=__doc__.split("\n")[0])
    subparsers = parser.add_subparsers(dest="figure", required=True)
    for name, module in commands.items():
        module.add_arguments(subparsers.add_parser(name, help=module.__doc__.split("\n")[0]))
    args = parser.parse_args(argv)
    try:
        for path in commands[args.figure].run(args):
            print(f"wrote {path}")
    except SelectScaleError as error:  # FigureError, and a run directory refused (RunDirError, ForeignRunError)
        print(f"error: {one_line(error)}", file=sys.stderr)
        return error.exit_status
    except KeyboardInterrupt:
        print("stopped by Ctrl-C; nothing was written", file=sys.stderr)
        return 130
    return 0
