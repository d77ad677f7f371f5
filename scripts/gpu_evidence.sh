#!/usr/bin/env bash
# One call that turns a lent GPU into evidence (issue 12). Every step writes under $OUT (default gpu_evidence/)
# and has its own time limit, so the whole script ends within ~9 minutes on one H200 even if a step hangs; a
# failed or timed-out step is recorded in the report and the next step still runs.
#
#   scripts/gpu_evidence.sh --prepare   # here, once: wheels of hydra-core/omegaconf/antlr4 into .whl/,
#                                       # the mini CIFAR images into .data/cifar-mini (both git-ignored)
#   scripts/gpu_evidence.sh --dry-run   # here, on the CPU: every step at toy size (a few minutes; CI runs it)
#   scripts/gpu_evidence.sh             # on the GPU machine, with .whl and .data carried along
#
# Steps: environment (GPU, torch, CUDA) -> install missing packages from .whl -> CUDA-only tests (pytest -m cuda)
# -> scripts/bench_train.py on resnet110, wrn20_4, wrn20_8, resnext29_8x64d (none / selectscale; eager and
# trainer.compile=true: images/s, MFU, SelectScale overhead, Table 1 projection) -> the mini CIFAR-10 evidence
# (configs/paper/mini_cifar10.yaml) with the full 200-epoch recipe, PARALLEL runs at once on the one GPU,
# until its time is up (finished runs are complete; the rest are left out and said so) -> report.md.
# At most 8 files come back from the device machine, so raw files go into one archive, raw.tar.gz.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
MODE=${1:-gpu}
OUT=${OUT:-gpu_evidence}
WHEELS=${WHEELS:-.whl}
DATA=${DATA:-.data/cifar-mini}
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ "$MODE" != gpu ] && PY=${PYTHON:-.venv/bin/python}

if [ "$MODE" = --prepare ]; then
  set -e
  mkdir -p "$WHEELS" "$(dirname "$DATA")"
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$WHEELS" hydra-core==1.3.2 omegaconf==2.3.0
  "$PY" -m pip wheel --quiet --no-deps -w "$WHEELS" antlr4-python3-runtime==4.9.3  # sdist only on PyPI: build it
  cp -r "${SELECTSCALE_SHARED:-../shared}/data/cifar-mini" "$DATA"
  du -sh "$WHEELS" "$DATA"
  echo "prepared: carry [\"$WHEELS\", \"$DATA\"] and run: bash scripts/gpu_evidence.sh"
  exit 0
fi
case "$MODE" in
  gpu) DEVICE=cuda;;
  --dry-run) DEVICE=cpu;;
  *) echo "error: unknown option $MODE: use --prepare, --dry-run or nothing (the GPU run)" >&2; exit 2;;
esac

# Per-step limits in seconds (GPU run). Sum: 30 + 45 + 60 + 75 + 4 x 35 + 150 + 20 = 520 s = 8.7 minutes at most.
# Compiled benchmarks run one model per step, so a slow compilation costs that model only.
LIMIT_ENV=30 LIMIT_INSTALL=45 LIMIT_TESTS=60 LIMIT_BENCH_EAGER=75 LIMIT_BENCH_COMPILED=35 LIMIT_EVIDENCE=150
LIMIT_REPORT=20
PARALLEL=${PARALLEL:-8}  # runs at once on the one GPU (16 CPU cores: 2 threads each)
SEEDS=${SEEDS:-5}
EPOCHS=${EPOCHS:-200}
BENCH_MODELS=(resnet110 wrn20_4 wrn20_8 resnext29_8x64d)
BENCH_ARGS=(--warmup 5 --steps 10 --rounds 3 --workers 8)
COMPILED_DROPS=(none selectscale)
TRAIN_EXTRA=()
if [ "$DEVICE" = cpu ]; then  # toy sizes: the same steps and files in a few minutes on 2 cores
  PARALLEL=2 SEEDS=2 EPOCHS=1
  BENCH_MODELS=(resnet8)
  BENCH_ARGS=(--device cpu --batch-size 16 --warmup 1 --steps 1 --rounds 1 --workers 0)
  COMPILED_DROPS=(none) LIMIT_BENCH_COMPILED=240  # inductor on 2 busy cores: about a minute
  # A CPU is far slower than the GPU the limits are for: generous limits, so only a real failure fails CI.
  LIMIT_TESTS=180 LIMIT_BENCH_EAGER=180 LIMIT_EVIDENCE=400 LIMIT_REPORT=120
  TRAIN_EXTRA=(dataset=synthetic dataset.train_size=64 dataset.test_size=64 trainer.batch_size=32
               trainer.max_steps_per_epoch=1 trainer.device=cpu)
fi

rm -rf "$OUT" && mkdir -p "$OUT/raw" "$OUT/mini_cifar10"
OUT=$(cd "$OUT" && pwd)
RAW=$OUT/raw
STATUS=$RAW/steps.tsv
export PYTHONUNBUFFERED=1 PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
: >"$STATUS"

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, log to raw/NAME.log, record status and seconds
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  echo "== $name (limit ${limit}s)"
  timeout -s INT -k 15 "$limit" bash -c '"$@"' step "$@" >"$RAW/$name.log" 2>&1  # functions are exported
  rc=$?
  local state=ok
  [ $rc -eq 124 ] && state="timed out after ${limit}s"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && state="failed (exit $rc)"
  printf '%s\t%s\t%s\n' "$name" "$state" "$(( $(date +%s) - start ))" >>"$STATUS"
  echo "   $state, $(( $(date +%s) - start )) s"
}

environment() {
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  uname -srm
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" - <<'EOF'
import os, sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| cuDNN", torch.backends.cudnn.version(), "| CPU cores", os.cpu_count())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("GPU", p.name, f"{p.total_memory / 2**30:.0f} GiB", f"capability {p.major}.{p.minor}", f"{p.multi_processor_count} SMs")
else:
    print("no CUDA device: CPU only")
for name in ("hydra", "omegaconf", "scipy", "matplotlib", "tensorboard", "tqdm", "pytest"):
    try:
        module = __import__(name)
        print(name, getattr(module, "__version__", "?"))
    except ImportError:
        print(name, "MISSING")
EOF
}

install_missing() {  # the GPU image has torch but not hydra-core/omegaconf: install them from the carried wheels
  if "$PY" -c "import hydra, omegaconf" 2>/dev/null; then echo "hydra and omegaconf present"; return 0; fi
  ls "$WHEELS"/*.whl >/dev/null 2>&1 || { echo "no wheels in $WHEELS: run scripts/gpu_evidence.sh --prepare here and carry $WHEELS"; return 3; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
}

evidence() {
  "$PY" -m selectscale.experiments run mini_cifar10 --seeds "$SEEDS" --epochs "$EPOCHS" --parallel "$PARALLEL" \
    --runs "$RAW/runs" --data "$DATA" --rows none,spatial_dropout,spatial_scale,selectscale \
    trainer.progress_bar=false $TRAIN_EXTRA_TEXT  # word-split on purpose: overrides without spaces
}

export -f environment install_missing evidence
export PY WHEELS DATA SEEDS EPOCHS PARALLEL RAW
export TRAIN_EXTRA_TEXT="${TRAIN_EXTRA[*]}"
step environment "$LIMIT_ENV" environment
step install "$LIMIT_INSTALL" install_missing
[ -d /tmp/site ] && export PYTHONPATH="/tmp/site:$PYTHONPATH"
cp "$RAW/environment.log" "$OUT/env.txt"
step cuda_tests "$LIMIT_TESTS" "$PY" -m pytest -q -m cuda -rs -p no:cacheprovider tests
step bench_eager "$LIMIT_BENCH_EAGER" "$PY" scripts/bench_train.py --models "${BENCH_MODELS[@]}" --drops none selectscale \
  --variant "eager=" "${BENCH_ARGS[@]}" --out "$OUT/bench.md"
for model in "${BENCH_MODELS[@]}"; do
  step "bench_compiled_$model" "$LIMIT_BENCH_COMPILED" "$PY" scripts/bench_train.py --models "$model" \
    --drops "${COMPILED_DROPS[@]}" --variant "compiled=trainer.compile=true" "${BENCH_ARGS[@]}" --out "$OUT/bench.md"
done
step evidence "$LIMIT_EVIDENCE" evidence
step report "$LIMIT_REPORT" "$PY" -m selectscale.experiments report mini_cifar10 --seeds "$SEEDS" --runs "$RAW/runs" \
  --out "$OUT" --extra-columns
mv "$OUT/mini_cifar10/table.tex" "$RAW/" 2>/dev/null  # at most 8 files come back: the .tex travels in raw.tar.gz

{
  echo "# GPU evidence: $(grep -m1 -E '^(GPU|no CUDA)' "$OUT/env.txt") ($MODE)"
  echo
  echo "Made by \`bash scripts/gpu_evidence.sh${MODE/gpu/}\` at commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
  [ "$DEVICE" = cpu ] && echo "**Dry run on the CPU at toy size: no figure here is a measurement of anything.**"
  echo
  echo "## Steps"
  echo
  echo "| step | status | seconds |"
  echo "|---|---|---|"
  awk -F'\t' '{printf "| %s | %s | %s |\n", $1, $2, $3}' "$STATUS"
  echo
  echo "## Environment"
  echo
  sed 's/^/    /' "$OUT/env.txt"
  echo
  echo "## CUDA-only tests (\`pytest -m cuda\`)"
  echo
  tail -n 12 "$RAW/cuda_tests.log" | sed 's/^/    /'
  echo
  echo "# Throughput (scripts/bench_train.py)"
  cat "$OUT/bench.md" 2>/dev/null || echo "no benchmark output: see raw/bench_*.log"
  echo
  echo "# Mini CIFAR-10 evidence: $EPOCHS epochs, $SEEDS seeds x 4 methods, $PARALLEL at once on one device"
  echo
  echo "Mini data (5,438 train / 1,017 test real CIFAR-10 images), not the official set. Runs that did not finish"
  echo "within the step's limit are left out of the table (listed at its end); they resume from raw/runs."
  echo
  cat "$OUT/mini_cifar10/table.md" 2>/dev/null || echo "no table: see raw/evidence.log and raw/report.log"
  echo
  echo "Evidence step wall time: $(awk -F'\t' '$1=="evidence"{print $3}' "$STATUS") s for the runs listed in"
  echo "raw/evidence.log ([done] lines: $(grep -c '\[done\]' "$RAW/evidence.log" 2>/dev/null || echo 0))."
} >"$OUT/report.md"

NOT_OK=$(awk -F'\t' '$2 != "ok"' "$STATUS" | wc -l)
# One archive of the raw files (logs, result.json, metrics.jsonl, run logs; no checkpoints or TensorBoard files).
(cd "$OUT" && find raw -type f ! -name '*.pt' ! -name '*.sha256' ! -path '*/tensorboard/*' -print0 |
  tar --null -czf raw.tar.gz -T - && rm -rf raw)
echo "== files under $OUT"
ls -la "$OUT" "$OUT/mini_cifar10"
tail -n 20 "$OUT/report.md"
if [ "$NOT_OK" -gt 0 ]; then
  echo "$NOT_OK step(s) not ok (see the Steps table in $OUT/report.md)" >&2
  [ "$DEVICE" = cpu ] && exit 1  # the dry run guards the script in CI; on the GPU every figure that came is kept
fi
exit 0
