#!/usr/bin/env bash
# Commit a study's finished runs as results (issue 22): for every run under SOURCE whose result.json says
# "complete": true, copy result.json, metrics.jsonl and config.yaml to the same place under DEST (a folder of
# this repository, e.g. results/mini_overfit/runs) and commit them. Unfinished runs stay out: on a new machine
# they start again, finished ones are skipped. SOURCE may be the study's worktree (a run queue training from
# a fixed commit while this checkout moves on); it defaults to DEST.
#   usage: scripts/commit_runs.sh DEST [SOURCE]
set -euo pipefail
dest=${1:?usage: scripts/commit_runs.sh DEST [SOURCE]   e.g. results/mini_overfit/runs}
source_dir=${2:-$dest}
[ -d "$source_dir" ] || { echo "error: $source_dir is not a folder of runs" >&2; exit 2; }
python3 - "$source_dir" "$dest" <<'PY'
import json, shutil, sys
from pathlib import Path

source, dest = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
copied = 0
for result in sorted(source.rglob("result.json")):
    try:
        complete = json.loads(result.read_text()).get("complete") is True
    except (OSError, ValueError, AttributeError):
        complete = False
    if not complete:
        continue
    target = dest / result.parent.relative_to(source)
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "metrics.jsonl", "result.json"):  # result.json last: it marks the run done
        if (result.parent / name).is_file() and (result.parent / name).resolve() != (target / name).resolve():
            shutil.copyfile(result.parent / name, target / name)
    copied += 1
print(f"{copied} finished runs under {source}")
PY
git add -- "$dest"
if git diff --cached --quiet -- "$dest"; then
  echo "nothing new to commit under $dest"
else
  count=$(git diff --cached --name-only -- "$dest" | grep -c '/result.json$' || true)
  git commit --quiet -m "$dest: $count finished run(s) committed (result.json, metrics.jsonl, config.yaml)" -- "$dest"
  echo "committed $count run(s) under $dest"
fi
