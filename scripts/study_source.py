"""Refuse to add runs to a study from another code version (issue 22: one code version for every run of it).

    python scripts/study_source.py mini_overfit      # exit 0: this checkout may train the study's missing runs

Reads ``code.source`` of every committed run of the spec's rows (``results/STUDY/runs/<row>/seed<k>``) and
compares it with this checkout's (selectscale.engine.results.source_version; an uncommitted change counts as
another version). On a mismatch it prints one line naming the study's commit and how to go on from it, and
exits 2; nothing is trained or changed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from selectscale.engine.results import git_commit
from selectscale.report.specs import ExperimentError, load_table

REPO = Path(__file__).resolve().parents[1]


def study_sources(name: str) -> dict[str, str]:
    """``{code.source: code.commit}`` of the committed runs of the study's rows."""
    table = load_table(name)
    if not table.runs_folder:
        raise ExperimentError(f"{name} keeps no committed runs (its spec has no runs_folder)")
    found = {}
    for row in table.rows:
        for path in sorted((REPO / table.runs_folder / row.label).glob("seed*/result.json")):
            code = json.loads(path.read_text()).get("code") or {}
            found.setdefault(str(code.get("source")), str(code.get("commit")))
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python scripts/study_source.py STUDY (e.g. mini_overfit)", file=sys.stderr)
        return 2
    try:
        sources = study_sources(argv[0])
    except ExperimentError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    here = git_commit()
    if not sources:
        print(f"{argv[0]}: no committed runs yet; this checkout ({here['source']}) starts the study")
        return 0
    if len(sources) > 1 or here["dirty"] or here["source"] not in sources:
        source, commit = next(iter(sources.items()))
        state = "uncommitted changes" if here["dirty"] else f"code version {here['source']}"
        print(f"error: the committed runs of {argv[0]} come from code version(s) {', '.join(sources)} (commit "
              f"{commit}); this checkout has {state}: train the rest from a worktree of that commit with the "
              f"committed runs copied in (results/{argv[0]}/README.md, 'Going on')", file=sys.stderr)
        return 2
    print(f"{argv[0]}: this checkout has the study's code version {here['source']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
