"""Refuse to add runs to a study from another code version or another machine kind (issue 22: every run of a
study comes from one code version and one machine kind).

    python scripts/study_source.py mini_overfit      # exit 0: this checkout and machine may train the missing runs
    python scripts/study_source.py --commit mini_overfit   # the commit to train the rest from (machine checked)
    python scripts/study_source.py --blocked-seeds mini_overfit_pool   # seeds another machine kind has started

Reads ``code.source`` and ``environment`` of every committed run of the spec's rows
(``results/STUDY/runs/<row>/seed<k>``) and compares them with this checkout's (an uncommitted change counts as
another version) and this machine's: CPU model, native bf16, Python, torch and torchvision
(:data:`MACHINE_KEYS`). On a mismatch it prints one line naming what differs and how to go on, and exits 2;
nothing is trained or changed. Why the machine counts: a study of ``trainer.cpu_amp=true`` runs emulates bf16 on
a CPU without native bf16 (measured 2026-12-03 on an AMD EPYC: 16 images/s against 672 on the study's Xeon), and
runs from two CPU kinds or torch builds do not compute the same numbers.

A study whose spec says ``seed_blocks: true`` (issue 37) needs one kind per SEED, not per study: all rows of a
seed on one kind, seeds on any. There this machine may go on with every seed that no other kind has started;
``--blocked-seeds`` prints the others (comma-separated; empty when none) for ``experiments run --skip-seeds``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from selectscale.report.specs import ExperimentError, load_table
from selectscale.runs.result import environment, git_commit

REPO = Path(__file__).resolve().parents[1]
MACHINE_KEYS = ("cpu_model", "cpu_native_bf16", "python", "torch", "torchvision")  # cpu_count: 2 on every kind


def committed_results(name: str) -> list[dict]:
    """The result.json of every committed run of the study's rows."""
    table = load_table(name)
    if not table.runs_folder:
        raise ExperimentError(f"{name} keeps no committed runs (its spec has no runs_folder)")
    return [json.loads(path.read_text()) for row in table.rows
            for path in sorted((REPO / table.runs_folder / row.label).glob("seed*/result.json"))]


def study_sources(results: list[dict]) -> dict[str, str]:
    """``{code.source: code.commit}`` of the committed runs."""
    found = {}
    for result in results:
        code = result.get("code") or {}
        found.setdefault(str(code.get("source")), str(code.get("commit")))
    return found


def machine_kind(env: dict) -> tuple:
    return tuple(env.get(key) for key in MACHINE_KEYS)


def describe(kind: tuple) -> str:
    values = dict(zip(MACHINE_KEYS, kind, strict=True))
    bf16 = "native bf16" if values["cpu_native_bf16"] else "no native bf16"
    return (f"{values['cpu_model']} ({bf16}), Python {values['python']}, torch {values['torch']}, "
            f"torchvision {values['torchvision']}")


def blocked_seeds(results: list[dict], here: dict) -> list[int]:
    """The seeds with a committed run from another machine kind than ``here``'s (their blocks are that kind's)."""
    return sorted({int(result["seed"]) for result in results
                   if machine_kind(result.get("environment") or {}) != machine_kind(here)})


def machine_mismatch(name: str, results: list[dict], here: dict) -> str | None:
    """One line saying how this machine differs from the committed runs' one kind, or None when it is that kind."""
    kinds = list(dict.fromkeys(machine_kind(result.get("environment") or {}) for result in results))
    if kinds == [machine_kind(here)]:
        return None
    return (f"error: the committed runs of {name} were trained on {' and on '.join(map(describe, kinds))}; this "
            f"machine is {describe(machine_kind(here))}: train the rest on a machine of the study's kind "
            f"(results/{name}/README.md, 'Going on'), or start a new study on this kind")


def newest_commit(results: list[dict]) -> str:
    """The newest of the commits the runs record (the most commits behind it): its spec is the study's last."""
    commits = {str((result.get("code") or {}).get("commit")) for result in results}

    def depth(commit: str) -> int:
        done = subprocess.run(["git", "rev-list", "--count", commit], cwd=REPO, capture_output=True, text=True)
        return int(done.stdout) if done.returncode == 0 else -1

    return max(sorted(commits), key=depth)


def print_commit(name: str, results: list[dict]) -> int:
    """``--commit``: print the commit to train the missing runs from, after checking this machine's kind."""
    sources = study_sources(results)
    problem = (f"error: {name} has no committed runs: start it from this checkout" if not sources else
               f"error: the committed runs of {name} mix code versions {', '.join(sources)}" if len(sources) > 1
               else None if load_table(name).seed_blocks else machine_mismatch(name, results, environment()))
    if problem:
        print(problem, file=sys.stderr)
        return 2
    print(newest_commit(results))
    return 0


def main(argv: list[str]) -> int:
    mode = argv[0] if argv[:1] in (["--commit"], ["--blocked-seeds"]) else None
    argv = argv[1:] if mode else argv
    if len(argv) != 1:
        print("usage: python scripts/study_source.py [--commit | --blocked-seeds] STUDY (e.g. mini_overfit)",
              file=sys.stderr)
        return 2
    try:
        results = committed_results(argv[0])
    except ExperimentError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if mode == "--commit":
        return print_commit(argv[0], results)
    blocks = load_table(argv[0]).seed_blocks
    if mode == "--blocked-seeds":
        print(",".join(map(str, blocked_seeds(results, environment()))) if blocks else "")
        return 0
    here, sources = git_commit(), study_sources(results)
    if not sources:
        print(f"{argv[0]}: no committed runs yet; this checkout ({here['source']}) starts the study")
        return 0
    mismatch = None if blocks else machine_mismatch(argv[0], results, environment())
    if mismatch:
        print(mismatch, file=sys.stderr)
        return 2
    if len(sources) > 1 or here["dirty"] or here["source"] not in sources:
        source, commit = next(iter(sources.items()))
        state = "uncommitted changes" if here["dirty"] else f"code version {here['source']}"
        print(f"error: the committed runs of {argv[0]} come from code version(s) {', '.join(sources)} (commit "
              f"{commit}); this checkout has {state}: train the rest from a worktree of that commit with the "
              f"committed runs copied in (results/{argv[0]}/README.md, 'Going on')", file=sys.stderr)
        return 2
    skipped = blocked_seeds(results, environment()) if blocks else []
    kind = (f"; seeds {', '.join(map(str, skipped))} were started on another machine kind and are left to it"
            if skipped else " and this machine its kind" if not blocks else "; no seed was started on another kind")
    print(f"{argv[0]}: this checkout has the study's code version {here['source']}{kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
