#!/usr/bin/env bash
# Build the wheel and use it outside the repository, as a user who ran `pip install selectscale` would:
# the packaged Hydra configs, `python -m selectscale.train`, and the console scripts, from an empty folder.
# Usage: scripts/wheel_check.sh [PYTHON]   (make wheel-check; CI runs it)
set -euo pipefail
PY="$(cd "$(dirname "${1:-.venv/bin/python}")" && pwd)/$(basename "${1:-.venv/bin/python}")"
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$work/dist" . 2>&1 | grep -v "^WARNING: Location" || true
wheel="$(ls "$work"/dist/selectscale-*.whl)"
# the wheel carries the configs and py.typed. Outputs go to files before grep: `grep -q` exits at the first
# match, and under pipefail the writer's broken pipe would fail the check (CI, stop 19).
"$PY" -m zipfile -l "$wheel" > "$work/listing.txt"
for member in selectscale/configs/train.yaml selectscale/configs/paper/table1.yaml selectscale/py.typed; do
  grep -q "$member" "$work/listing.txt" || { echo "wheel check: $member missing from $(basename "$wheel")"; exit 1; }
done
"$PY" -m pip install --quiet --no-deps --target "$work/site" "$wheel" 2>&1 | grep -v "^WARNING: Location" || true
mkdir "$work/elsewhere" && cd "$work/elsewhere"
export PYTHONPATH="$work/site"  # ahead of the checkout's editable install: the wheel's copy is the one imported
"$PY" -c "import selectscale, sys; sys.exit(0 if selectscale.__file__.startswith('$work/site') else \
  f'imported {selectscale.__file__}, not the wheel')"
"$PY" -m selectscale.train --version
"$PY" -m selectscale.train --cfg job model=wrn20_8 drop=selectscale > job.yaml
grep -q "name: wrn20_8" job.yaml
"$work/site/bin/selectscale-train" --cfg job +experiment=table1_wrn20_4_selectscale > experiment.yaml
grep -q "top_rate: 0.2" experiment.yaml
"$work/site/bin/selectscale-experiments" --version
"$work/site/bin/selectscale-experiments" run mini_cifar10 --rows none --seeds 1 --epochs 1 --runs runs \
  dataset=synthetic dataset.train_size=64 dataset.test_size=64 trainer.batch_size=32 trainer.max_steps_per_epoch=1 \
  trainer.device=cpu trainer.progress_bar=false > run.log 2>&1 || { cat run.log; exit 1; }
test -f runs/mini_cifar10/none/seed0/result.json
"$work/site/bin/selectscale-evaluate" runs/mini_cifar10/none/seed0 > evaluate.log
grep -q "top-1" evaluate.log
echo "wheel check: $(basename "$wheel") installs and runs outside the repository"
