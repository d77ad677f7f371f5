"""The score table of the last ``make mutation`` run, from mutmut's own records (issue 34; docs/mutation.md).

Reads ``build/mutation/mutants/**/*.meta`` (mutmut 3's per-file results: mutant name -> exit code), maps exit codes
to statuses with mutmut's own table, keeps the mutants in scope (the globs ``make mutation`` runs, by default) and
prints a Markdown table per source file plus every mutant not killed, for docs/mutation.md.

    python scripts/mutation_report.py                      # after `make mutation`
    python scripts/mutation_report.py --glob 'selectscale.drop.*'
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import json
import sys
from pathlib import Path

from mutmut.stats import status_by_exit_code

SCOPE = ("selectscale.drop.*", "selectscale.models.*", "selectscale.engine.schedule.*",
         "selectscale.engine.steps.x__set_progress__*")  # the Makefile's MUTANTS default
COLUMNS = ("killed", "survived", "timeout", "no tests", "not checked")


def statuses(mutants_dir: Path, globs: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """{source file: {mutant name: status}} for the mutants that match ``globs``."""
    by_file: dict[str, dict[str, str]] = {}
    for meta in sorted(mutants_dir.rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        source = meta.relative_to(mutants_dir).as_posix().removesuffix(".meta")
        chosen = {name: status_by_exit_code[code] for name, code in codes.items()
                  if any(fnmatch.fnmatch(name, glob) for glob in globs)}
        if chosen:
            by_file[source] = chosen
    return by_file


def render(by_file: dict[str, dict[str, str]]) -> str:
    lines = ["| file | mutants | " + " | ".join(COLUMNS) + " |", "|---|---:|" + "---:|" * len(COLUMNS)]
    total: collections.Counter = collections.Counter()
    for source, chosen in by_file.items():
        counts = collections.Counter(chosen.values())
        total.update(counts)
        lines.append(f"| {source} | {len(chosen)} | " + " | ".join(str(counts[c]) for c in COLUMNS) + " |")
    lines.append(f"| **all** | {sum(total.values())} | " + " | ".join(str(total[c]) for c in COLUMNS) + " |")
    others = sorted((name, status) for chosen in by_file.values() for name, status in chosen.items()
                    if status != "killed")
    lines += ["", f"Not killed ({len(others)}):", ""] + [f"- `{name}`: {status}" for name, status in others]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=Path, default=Path("build/mutation/mutants"))
    parser.add_argument("--glob", action="append", default=None, help=f"mutant-name globs (default: {SCOPE})")
    args = parser.parse_args(argv)
    if not args.mutants.is_dir():
        print(f"error: {args.mutants} does not exist: run `make mutation` first", file=sys.stderr)
        return 2
    print(render(statuses(args.mutants, tuple(args.glob or SCOPE))), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
