# SelectScale: every command a researcher needs, self-documenting (`make` or `make help`).
# Each target installs what it needs first, into .venv, so it works on a fresh machine with Python.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install test test-all lint demo demo-layers bench bench-drop bench-data bench-ceiling bench-selection bench-levers clean smoke-tables fig3 fig3-report cam \
	cam-report gpu-evidence-dry-run wheel-check

help: ## Show this help
	@echo "usage: make <target>"
	@grep -E '^[a-zA-Z0-9_ -]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  %-12s %s\n", $$1, $$2}'

# torch and torchvision are pinned (constraints/torch.txt) so that every run of a study shares one environment;
# CONSTRAINTS= (empty) installs whatever pip resolves.
CONSTRAINTS ?= constraints/torch.txt
$(INSTALLED): pyproject.toml $(CONSTRAINTS)
	@$(PY) -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv --clear $(VENV)  # new, or repair a broken one
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[dev]' $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
	@touch $@

install: $(INSTALLED) ## Create .venv (if missing) and install selectscale with the dev extra
	@$(PY) -c "import selectscale, torch; print('selectscale', selectscale.__version__, '| torch', torch.__version__)"

test: $(INSTALLED) ## Run the fast test suite (README: measured time)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# Test processes at once for every test (pytest-xdist): the slow tests mostly wait on train.py subprocesses, so
# two on 2 cores took them from 1,477 s to 789 s (AMD EPYC, 2026-12-03); the fast suite is compute-bound (333 s
# either way), so `make test` stays one process. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2

test-all: $(INSTALLED) ## Run every test, slow ones included (torch.compile, DDP, real-data training)
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

wheel-check: $(INSTALLED) ## Build the wheel, install it outside the repository, run its commands from an empty folder
	scripts/wheel_check.sh $(PY)

lint: $(INSTALLED) ## Check style with ruff
	$(PY) -m ruff check .

DEMO_ARGS ?=
demo: $(INSTALLED) ## Train resnet20 + SelectScale on built-in synthetic data on the CPU (~30 s on 2 cores), print the errors
	$(PY) train.py dataset=synthetic dataset.train_size=4000 model=resnet20 drop=selectscale schedule=cosine \
	  trainer.epochs=4 trainer.device=cpu 'hydra.run.dir=runs/demo/$${now:%Y-%m-%d_%H-%M-%S}' $(DEMO_ARGS)

demo-layers: $(INSTALLED) ## Forward/backward through every drop layer, with a short table
	$(PY) scripts/demo_layers.py

bench-drop: $(INSTALLED) ## Benchmark the drop layers against a 3x3 conv and a bare multiply
	$(PY) scripts/bench_drop.py

BENCH_ARGS ?= --variant "default=" --variant "cpu_amp=trainer.cpu_amp=true"
bench: $(INSTALLED) ## Training images/s of train.py's path vs the common PyTorch recipe, side by side (BENCH_ARGS)
	$(PY) scripts/bench_train.py $(BENCH_ARGS)

bench-ceiling: $(INSTALLED) ## Each network's training step against this CPU's matmul and conv ceilings (issue 23)
	$(PY) scripts/bench_ceiling.py

bench-selection: $(INSTALLED) ## SelectScale's step cost, HEAD's selection beside a6785d4's (issue 23; needs git history)
	$(PY) scripts/bench_selection.py

bench-levers: $(INSTALLED) ## SGD loop / foreach / fused and the evaluation pass, side by side (issue 23)
	$(PY) scripts/bench_levers.py

bench-data: $(INSTALLED) ## Images/s of the device-resident CIFAR loader vs torchvision's pipeline, and JPEG decoding
	$(PY) scripts/bench_data.py

# The paper's tables: SEEDS runs per row (5), EPOCHS to shorten (default: the paper's), DATA = dataset.root,
# PARALLEL = runs of the run queue training at once (default 1), LAUNCHER = a Hydra launcher (joblib,
# submitit_slurm: one multirun per row instead of the queue), RUNS = where run directories live. Ctrl-C or SIGTERM
# stops a table at its runs' next checkpoints: one line says how to go on, then make's own `Error 3` (or
# `Interrupt`) line; run the same target again to go on. A report lists every run it does not count.
SEEDS ?= 5
EPOCHS ?=
DATA ?=
LAUNCHER ?=
PARALLEL ?=
RUNS ?= runs
TABLES := table1 table2 table3 table4 fig4
TABLE_REPORTS := $(addsuffix -report,$(TABLES))
SMOKE_PARALLEL ?= 2  # smoke runs at once (the run queue gives each cores / SMOKE_PARALLEL threads)
.PHONY: $(TABLES) $(TABLE_REPORTS)
EXPERIMENT_ARGS = --seeds $(SEEDS) --runs $(RUNS) $(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(DATA),--data $(DATA)) \
	$(if $(LAUNCHER),--launcher $(LAUNCHER)) $(if $(PARALLEL),--parallel $(PARALLEL))

table1 table2 table3 table4 fig4: $(INSTALLED) ## Train (or resume) the unfinished runs of a paper table (or Figure 4's sweeps; PARALLEL=k: k at once), then render results/<name>.*
	$(PY) -m selectscale.experiments run $@ $(EXPERIMENT_ARGS)

table1-report table2-report table3-report table4-report fig4-report: $(INSTALLED) ## Render results/<name>.md, .tex (fig4: .png) from finished runs only, listing the others
	$(PY) -m selectscale.experiments report $(@:-report=) --seeds $(SEEDS) --runs $(RUNS) $(if $(EPOCHS),--epochs $(EPOCHS))

# Issue 12's long-schedule evidence on the real mini CIFAR-10 images (CPU, about 3 hours on 2 cores; not in CI).
MINI_DATA ?= $(or $(SELECTSCALE_SHARED),../shared)/data/cifar-mini
# Seeds a row: 5, and 25 for mini_overfit_pool (planned from its pilot: results/mini_overfit_pool/pilot.md).
MINI_SEEDS ?= $(if $(filter mini_overfit_pool,$(OVERFIT)),25,5)
.PHONY: mini-evidence mini-evidence-report
mini-evidence: $(INSTALLED) ## Evidence: ResNet-8 on the mini CIFAR-10 images, every row (8) x MINI_SEEDS, PARALLEL (2) at once -> results/mini_cifar10/
	$(PY) -m selectscale.experiments run mini_cifar10 --seeds $(MINI_SEEDS) --runs $(RUNS) --data $(MINI_DATA) \
	  --parallel $(or $(PARALLEL),2) $(if $(EPOCHS),--epochs $(EPOCHS))

mini-evidence-report: $(INSTALLED) ## results/mini_cifar10/ (table, summary.json, curves.png) from existing runs only
	$(PY) -m selectscale.experiments report mini_cifar10 --seeds $(MINI_SEEDS) --runs $(RUNS)

# Issue 22's studies where the network overfits (CPU, not in CI). OVERFIT names the study: mini_overfit_subset (the
# default: the finished one, ResNet-8 on 68 images a class, fp32; results/mini_overfit_subset/pilot.md),
# mini_overfit (ResNet-20, all 5,438 images, bf16 on a native-bf16 CPU, paused at 18 of 35 runs;
# results/mini_overfit/pilot.md) or mini_overfit_pool (issue 37: the subset study with 25 seeds a row scored on the
# evaluation pool and compared seed by seed, fp32, seeds as machine-kind blocks; results/mini_overfit_pool/pilot.md).
# Their runs are results, committed under results/$(OVERFIT)/runs/ as they finish (scripts/commit_runs.sh); on a
# new machine of the same kind (any kind, seed by seed, for mini_overfit_pool) the same target skips the committed
# runs and trains the rest.
SELECT_SEEDS ?= 1
OVERFIT ?= mini_overfit_subset
.PHONY: mini-overfit-select mini-overfit mini-overfit-resume mini-overfit-report
mini-overfit-select: $(INSTALLED) ## Study step 1: the rate grid on a validation split (no test images) -> results/$(OVERFIT)/selection.md
	$(PY) -m selectscale.experiments run $(OVERFIT)_selection --seeds $(SELECT_SEEDS) --data $(MINI_DATA) \
	  --parallel $(or $(PARALLEL),2)

mini-overfit: $(INSTALLED) ## Study step 2: its methods x MINI_SEEDS at the chosen rates -> results/$(OVERFIT)/ (OVERFIT=mini_overfit: the paused ResNet-20 study)
	$(PY) scripts/study_source.py $(OVERFIT)  # refuses another code version or machine kind than the committed runs'
	$(PY) -m selectscale.experiments run $(OVERFIT) --seeds $(MINI_SEEDS) --data $(MINI_DATA) --parallel $(or $(PARALLEL),2) \
	  --skip-seeds "$$($(PY) scripts/study_source.py --blocked-seeds $(OVERFIT))"  # seed blocks of another machine kind

mini-overfit-resume: $(INSTALLED) ## Go on with the study on a machine of its kind: worktree of its commit, committed runs copied in, trains detached
	PY=$(PY) OVERFIT=$(OVERFIT) MINI_SEEDS=$(MINI_SEEDS) scripts/resume_study.sh $(OVERFIT) mini-overfit \
	  $(or $(WORKTREE),$(if $(filter mini_overfit_pool,$(OVERFIT)),../pool,../study))  # one worktree a study

mini-overfit-report: $(INSTALLED) ## selection.md and the study's table, summary.json, curves.png from the committed runs only
	$(if $(wildcard configs/paper/$(OVERFIT)_selection.yaml),$(PY) -m selectscale.experiments report $(OVERFIT)_selection --seeds $(SELECT_SEEDS))
	$(PY) -m selectscale.experiments report $(OVERFIT) --seeds $(MINI_SEEDS)

FIG3_RUN = $(RUNS)/fig3/base
fig3: $(INSTALLED) ## Figure 3: train WRN-20-4 without drop (or resume), then drops at inference -> results/fig3.*
	$(PY) train.py dataset=cifar10 model=wrn20_4 drop=none seed=0 $(if $(EPOCHS),trainer.epochs=$(EPOCHS)) \
	  $(if $(DATA),dataset.root=$(DATA)) output_dir=$(FIG3_RUN) trainer.resume=auto
	$(PY) -m selectscale.figures fig3 $(FIG3_RUN) --repeats 3

fig3-report: $(INSTALLED) ## Figure 3 from the existing run only
	$(PY) -m selectscale.figures fig3 $(FIG3_RUN) --repeats 3

# Figures 1 and 5 (class activation maps): Table 4's no-drop and SelectScale runs, seed 0, with CAM_SNAPSHOTS
# weight snapshots over training (Figure 1 uses the no-drop run's). CAM_RUNS: any runs to compare instead.
CAM_SNAPSHOTS ?= 6
CAM_RUNS ?= $(RUNS)/table4/none/seed0 $(RUNS)/table4/selectscale/seed0
CAM_LABELS ?= no drop,SelectScale
CAM_OUT ?= results
CAM_ARGS ?=
cam: $(INSTALLED) ## Figures 1 and 5: train (or resume) Table 4's no-drop and SelectScale runs (seed 0), then CAMs
	$(PY) -m selectscale.experiments run table4 --rows none,selectscale --seeds 1 --snapshots $(CAM_SNAPSHOTS) \
	  --runs $(RUNS) $(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(DATA),--data $(DATA)) $(if $(LAUNCHER),--launcher $(LAUNCHER)) \
	  $(CAM_ARGS)
	$(MAKE) --no-print-directory cam-report

cam-report: $(INSTALLED) ## Figures 1 and 5 from existing runs only -> results/cam.png, cam_epochs.png (+ .md)
	$(PY) -m selectscale.figures cam $(CAM_RUNS) --labels "$(CAM_LABELS)" --out $(CAM_OUT)
	$(PY) -m selectscale.figures cam $(firstword $(CAM_RUNS)) --snapshots --name cam_epochs --out $(CAM_OUT)

SMOKE_DIR := .smoke
SMOKE_TRAIN := dataset=synthetic dataset.train_size=16 dataset.test_size=16 trainer.batch_size=8 trainer.device=cpu \
	trainer.progress_bar=false
smoke-tables: $(INSTALLED) ## Every table and figure end to end on tiny synthetic data, 1 seed, 1 epoch, CPU
	$(PY) -m selectscale.experiments smoke $(TABLES) --parallel $(SMOKE_PARALLEL)
	$(PY) -m selectscale.experiments smoke mini_cifar10 --launcher basic  # one table through per-row Hydra multiruns (LAUNCHER=)
	rm -rf $(SMOKE_DIR) && $(MAKE) --no-print-directory cam RUNS=$(SMOKE_DIR)/runs EPOCHS=2 CAM_SNAPSHOTS=2 \
	  CAM_OUT=$(SMOKE_DIR)/results CAM_ARGS="$(SMOKE_TRAIN) trainer.max_steps_per_epoch=1"
	test -s $(SMOKE_DIR)/results/cam.png && test -s $(SMOKE_DIR)/results/cam_epochs.md
	$(PY) train.py $(SMOKE_TRAIN) trainer.epochs=1 model=wrn20_4 drop=none output_dir=$(SMOKE_DIR)/fig3/base
	$(PY) -m selectscale.figures fig3 $(SMOKE_DIR)/fig3/base --repeats 1 --out $(SMOKE_DIR)/results
	test -s $(SMOKE_DIR)/results/fig3.png && test -s $(SMOKE_DIR)/results/fig3.md && rm -rf $(SMOKE_DIR)

gpu-evidence-dry-run: $(INSTALLED) ## scripts/gpu_evidence.sh --dry-run: every step of the GPU evidence at toy size on the CPU
	OUT=$(SMOKE_DIR)/gpu_evidence bash scripts/gpu_evidence.sh --dry-run
	test -s $(SMOKE_DIR)/gpu_evidence/report.md && test -s $(SMOKE_DIR)/gpu_evidence/mini_cifar10/summary.json
	rm -rf $(SMOKE_DIR)/gpu_evidence

# A real one-node Slurm on this machine (issue 33; root and Debian's slurmctld slurmd slurm-client munge): daemons in the
# background, stopped by PID. The same code starts the Slurm of tests/test_slurm.py. stdlib only: no .venv needed.
SLURM_DIR ?= /tmp/selectscale-slurm
.PHONY: slurm-up slurm-down
slurm-up: ## Start a one-node Slurm (partition debug) in SLURM_DIR and print the `export SLURM_CONF=...` line
	$(PYTHON) scripts/slurm_local.py up $(SLURM_DIR)

slurm-down: ## Stop the Slurm of slurm-up (its jobs cancelled, its daemons stopped by PID)
	$(PYTHON) scripts/slurm_local.py down $(SLURM_DIR)

# Mutation testing (issue 34) of what decides fidelity: all of selectscale/drop/, the drop placement in the model
# families (models/cifar_resnet, resnet, resnext, resnet_torchvision), engine/schedule.py and the curriculum's way
# into the layers (engine/steps.py's _set_progress) ([tool.mutmut] in pyproject.toml: scope and tests). It runs in a
# copy under build/mutation/ (ignored); MUTANTS= mutant-name globs to run part, e.g.
# 'selectscale.engine.schedule.*'; MUTATION_CHILDREN= mutants tested at once. Not in CI: docs/mutation.md has the
# measured time, the score and every survivor with the reason it is equivalent.
MUTATION_DIR := build/mutation
MUTATION_CHILDREN ?= 1
MUTANTS ?= 'selectscale.drop.*' 'selectscale.models.*' 'selectscale.engine.schedule.*' \
  'selectscale.engine.steps.x__set_progress__*'
.PHONY: mutation
mutation: $(INSTALLED) ## Mutation testing (mutmut) of the drop layers, placement and schedule -> build/mutation/ (docs/mutation.md)
	rm -rf $(MUTATION_DIR) && mkdir -p $(MUTATION_DIR)
	cp -r selectscale tests configs pyproject.toml train.py README.md $(MUTATION_DIR)/
	cd $(MUTATION_DIR) && OMP_NUM_THREADS=1 $(abspath $(VENV))/bin/mutmut run --max-children $(MUTATION_CHILDREN) $(MUTANTS)
	cd $(MUTATION_DIR) && $(abspath $(VENV))/bin/mutmut results

clean: ## Remove caches (keeps .venv and every run directory)
	rm -rf .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +
