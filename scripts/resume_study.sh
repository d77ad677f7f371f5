#!/usr/bin/env bash
# Go on with a study from its committed runs, on a machine of the study's kind (issue 22; results/STUDY/README.md,
# 'Going on'). Checks this machine against the runs' (scripts/study_source.py --commit, which also names the
# commit to train from), makes or reuses a worktree of that commit, copies the committed runs in (they are
# skipped there), installs its .venv and starts the study's make target there, detached, logging to
# WORKTREE/resume.log. Commit runs as they finish with the command it prints.
#   usage: scripts/resume_study.sh STUDY MAKE_TARGET [WORKTREE]   e.g. scripts/resume_study.sh mini_overfit mini-overfit
set -euo pipefail
study=${1:?usage: scripts/resume_study.sh STUDY MAKE_TARGET [WORKTREE]   e.g. mini_overfit mini-overfit}
target=${2:?usage: scripts/resume_study.sh STUDY MAKE_TARGET [WORKTREE]   e.g. mini_overfit mini-overfit}
worktree=${3:-../study}
py=${PY:-.venv/bin/python}
[ -x "$py" ] || { echo "error: $py not found: run make install first (or set PY=)" >&2; exit 2; }
commit=$("$py" scripts/study_source.py --commit "$study")  # exits 2, with its one-line reason, on a mismatch
if [ -e "$worktree" ]; then
  here=$(git -C "$worktree" rev-parse HEAD 2>/dev/null || echo none)
  [ "$here" = "$commit" ] || { echo "error: $worktree exists at $here, not the study's commit $commit: give another WORKTREE" >&2; exit 2; }
else
  git worktree add --detach "$worktree" "$commit" >/dev/null
fi
mkdir -p "$worktree/results/$study/runs"
cp -r "results/$study/runs/." "$worktree/results/$study/runs/"
(cd "$worktree" && make install > install.log 2>&1) || { echo "error: make install failed in $worktree (see $worktree/install.log)" >&2; exit 2; }
(cd "$worktree" && nohup make "$target" > resume.log 2>&1 &)
echo "started: make $target in $worktree (commit ${commit:0:7}); log: $worktree/resume.log"
echo "commit finished runs with: scripts/commit_runs.sh results/$study/runs $worktree/results/$study/runs"
