"""``fit(cfg)``: train one model on one data set with one drop method, from a laptop CPU to many GPUs.

Flow: validate -> process group -> run directory checks -> data, model, optimizer -> resume ->
epochs (train, evaluate, log, checkpoint, result.json) -> final result.json with ``complete: true``.
"""

from __future__ import annotations

import logging
import os
import shlex
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from selectscale.data.loader import derive_seed
from selectscale.errors import ConfigError, Preempted
from selectscale.runs import directory as rundir
from selectscale.runs.checkpoint import load_checkpoint, save_checkpoint, save_snapshot
from selectscale.runs.history import flatten, is_runtime_key, with_added_keys
from selectscale.runs.layout import CONFIG_FILE
from selectscale.runs.lock import RunDirLock
from selectscale.runs.metrics import read_metrics, truncate_metrics
from selectscale.runs.result import SCHEMA_VERSION, environment, git_commit, hardware, read_result, write_result

from . import distributed
from .config import Precision, resolve_precision, validate
from .data_setup import build_data
from .model_setup import build_model
from .pool import POOL_KEY, final_pool_scores
from .profiling import step_profiler
from .recipe import RecipeSwitches
from .records import MetricsLogger
from .signals import PreemptionFlag
from .steps import StepContext, StepSettings, evaluate, train_epoch

log = logging.getLogger("selectscale")


def fit(cfg: DictConfig) -> dict:
    """Train as ``cfg`` says; return the result.json content. Raises ConfigError on bad settings."""
    validate(cfg, distributed.world_size_from_env())
    if cfg.trainer.resume == "never" and int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0:
        # A job SLURM requeued (after SIGUSR2 and our checkpoint): it continues its own run by itself.
        log.info("requeued SLURM job (SLURM_RESTART_COUNT=%s): resuming", os.environ["SLURM_RESTART_COUNT"])
        cfg.trainer.resume = "auto"
    ctx = distributed.setup(cfg.trainer.device, cfg.trainer.dist_timeout_s)
    try:
        run_dir = rundir.resolve_run_dir(cfg)
        asked_precision = cfg.trainer.precision
        # Every rank resolves (a contradiction is a ConfigError on each), rank 0's answer is everyone's.
        precision = resolve_precision(cfg.trainer, ctx.device, _kept_precision(cfg, run_dir))
        precision = distributed.broadcast_object(precision)
        cfg.trainer.precision = precision.value  # the resolved value is what config.yaml and result.json record
        start = distributed.broadcast_object(rundir.check_run_dir(run_dir, cfg) if ctx.is_main else None)
        if start == "complete":
            log.info("run directory %s already holds a complete run; nothing to do", run_dir)
            result = read_result(run_dir)
            if cfg.dataset.get("eval_pool") and "eval_pool" not in (result or {}):
                log.info("its result.json has no evaluation pool: score it from its checkpoint with "
                         "selectscale-evaluate %s --pool --record", shlex.quote(str(run_dir)))
            return result
        created = ctx.is_main and not run_dir.exists()
        lock = RunDirLock(run_dir)
        try:
            if ctx.is_main:
                rundir.check_writable(run_dir)
                lock.acquire()  # one writer per run directory, for the whole run
                if rundir.check_run_dir(run_dir, cfg) == "complete":  # again, under the lock: another may have written
                    raise ConfigError(f"run directory {run_dir} was completed by another process meanwhile; "
                                      "nothing to do")
                rundir.recover(run_dir)  # finish a checkpoint rotation that a kill interrupted
            trainer = Trainer(cfg, ctx, run_dir)  # data and model: bad files fail here, before anything is written
            trainer.precision, trainer.asked_precision = precision, asked_precision
            with rundir.held_log_records() as early_records:  # for train.log, which does not exist yet
                trainer.resume()  # a checkpoint of other settings is refused before config.yaml or train.log exist
        except BaseException:
            lock.release()
            if created:
                rundir.remove_if_empty(run_dir)
            raise
        log_handler = rundir.prepare(run_dir, cfg, early_records) if ctx.is_main else None
        try:
            return trainer.run()
        finally:
            rundir.release_log(log_handler)
            lock.release()
    finally:
        distributed.teardown()


def precision_of(config) -> str | None:
    """The precision a saved config (a DictConfig or YAML text) trained in: its ``trainer.precision``, or for a run
    recorded before the key what ``trainer.cpu_amp`` / ``trainer.amp`` meant (runs.history.ADDED_KEYS)."""
    try:
        container = OmegaConf.to_container(OmegaConf.create(config) if isinstance(config, str) else config,
                                           resolve=True)
    except Exception:  # noqa: BLE001  (damaged: the resume checks name it)
        return None
    if not isinstance(container, dict):
        return None
    value = with_added_keys(flatten(container)).get("trainer.precision")
    return value if value in ("fp32", "bf16") else None


def _kept_precision(cfg: DictConfig, run_dir: Path) -> str | None:
    """With ``trainer.resume=auto``: the precision the run in ``run_dir`` started in, from its config.yaml (None
    without one; a checkpoint's own config is read in :meth:`Trainer.resume`)."""
    if cfg.trainer.resume != "auto":
        return None
    try:
        saved = rundir.load_saved_config(run_dir / CONFIG_FILE)
    except Exception:  # noqa: BLE001  (a damaged or foreign config.yaml: check_run_dir refuses it, one line)
        return None
    return precision_of(saved) if saved is not None else None


class Trainer:
    def __init__(self, cfg: DictConfig, ctx: distributed.DistContext, run_dir: Path) -> None:
        self.cfg, self.ctx, self.run_dir = cfg, ctx, run_dir
        if cfg.trainer.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = not cfg.trainer.deterministic
        self.data = build_data(cfg, ctx)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.model = build_model(cfg, self.data.num_classes, ctx.device)
        if ctx.distributed and cfg.trainer.sync_bn:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        # Drop-layer randomness: an independent stream per rank, so masks are i.i.d. across the batch.
        torch.manual_seed(derive_seed(cfg.seed, "train", ctx.rank))
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=cfg.schedule.lr, momentum=cfg.trainer.momentum,
            nesterov=cfg.trainer.nesterov, weight_decay=cfg.trainer.weight_decay,
            foreach=None if ctx.device.type == "cuda" else True,
        )
        # EMA, mixer, best checkpoint (issue 36): each None or off unless configured
        self.switches = RecipeSwitches(cfg, self.model, self.data.num_classes, self.data.info["evaluated_on"],
                                       run_dir, ctx.is_main)
        self.network = self._wrap(self.model)
        # Evaluation shards may differ in length across ranks: evaluate without DDP, which could wait
        # in a collective for a rank that has finished.
        self.eval_network = self.model if ctx.distributed else self.network
        self.steps_per_epoch = len(self.data.train)
        if cfg.trainer.max_steps_per_epoch is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.trainer.max_steps_per_epoch)
        self.epoch, self.next_batch, self.global_step, self.wall_time = 0, 0, 0, 0.0
        self.partial: dict | None = None  # this rank's sums of an epoch interrupted mid-way
        self.resume_note: str | None = None
        self.code = git_commit()  # the code version, recorded in every result.json
        self.environment = environment()  # torch, torchvision, CPU model: what one study's runs must share
        # fit() sets both: the resolved precision and what the command line asked (auto, fp32 or bf16)
        self.precision = Precision(str(cfg.trainer.precision), "as configured")
        self.asked_precision = str(cfg.trainer.precision)

    def _wrap(self, model: nn.Module) -> nn.Module:
        """DDP across ranks, then torch.compile, as configured."""
        if self.ctx.distributed:
            device_ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        if self.cfg.trainer.compile:
            model = torch.compile(model)
        return model

    # --- checkpoints -------------------------------------------------------------------------------
    def _gather(self, value) -> list | None:
        """``value`` of every rank, as a list indexed by rank, on every rank (a collective)."""
        if not self.ctx.distributed:
            return None if value is None else [value]
        gathered = [None] * self.ctx.world_size
        torch.distributed.all_gather_object(gathered, value)
        return None if gathered[0] is None else gathered

    def save(self) -> None:
        rng_states = self._gather(torch.get_rng_state())  # collectives: every rank takes part
        partials = self._gather(self.partial)
        if not self.ctx.is_main:
            return
        state = dict(model=self.model.state_dict(), optimizer=self.optimizer.state_dict(), epoch=self.epoch,
                     next_batch=self.next_batch, global_step=self.global_step, wall_time=self.wall_time,
                     world_size=self.ctx.world_size, cpu_rng=rng_states, partial=partials,
                     cuda_rng=torch.cuda.get_rng_state(self.ctx.device) if self.ctx.device.type == "cuda" else None,
                     config=OmegaConf.to_yaml(self.cfg, resolve=True))  # resume checks it even without config.yaml
        state.update(self.switches.checkpoint_state())  # nothing unless a switch is on
        save_checkpoint(state, self.run_dir)

    def resume(self) -> None:
        if self.cfg.trainer.resume != "auto":
            return
        state = load_checkpoint(self.run_dir, map_location="cpu")
        if state is None:  # nothing usable: start afresh, without records a killed first epoch left
            if self.ctx.is_main:
                truncate_metrics(self.run_dir, 0)
            return
        self._keep_checkpoint_precision(state.get("config"))
        rundir.check_checkpoint_settings(self.run_dir, state, self.cfg)
        if state["world_size"] != self.ctx.world_size:
            raise ConfigError(f"trainer.resume=auto: the checkpoint in {self.run_dir} was written by "
                             f"{state['world_size']} processes, not {self.ctx.world_size}; resume with the same count")
        rundir.load_weights(self.run_dir, self.model, self.optimizer, state)
        self.switches.load(state, self.run_dir)
        self.epoch, self.next_batch = state["epoch"], state["next_batch"]
        self.global_step, self.wall_time = state["global_step"], state["wall_time"]
        self.partial = state["partial"][self.ctx.rank] if state["partial"] is not None else None
        torch.set_rng_state(state["cpu_rng"][self.ctx.rank])
        if state["cuda_rng"] is not None and self.ctx.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.ctx.device)
        if self.ctx.is_main:
            truncate_metrics(self.run_dir, self.epoch)
        self.resume_note = f"resumed {self.run_dir} at epoch {self.epoch + 1}, batch {self.next_batch}"

    def _keep_checkpoint_precision(self, carried) -> None:
        """A resumed run keeps the precision it started in: with ``trainer.precision=auto``, the checkpoint's own
        (it counts where config.yaml is gone, or says otherwise)."""
        kept = precision_of(carried) if isinstance(carried, str) else None
        if self.asked_precision == "auto" and kept is not None and kept != self.cfg.trainer.precision:
            self.cfg.trainer.precision = kept
            self.precision = Precision(kept, "auto: kept from the run being resumed (its checkpoint)")

    # --- the loop ----------------------------------------------------------------------------------
    def run(self) -> dict:
        if self.resume_note:
            log.info("%s", self.resume_note)  # now that train.log is attached
        loggers = OmegaConf.to_container(self.cfg.logger, resolve=True) if "logger" in self.cfg else None
        logger = MetricsLogger(self.run_dir, enabled=self.ctx.is_main, loggers=loggers, first_epoch=self.epoch + 1,
                               first_step=self.global_step, partial_first_epoch=self.next_batch > 0)
        settings = StepSettings.from_config(self.cfg, self.ctx.device)  # the config read once for the steps
        if self.ctx.is_main:
            log.info("%s", self.precision.line())
        if settings.autocast_device == "cpu" and not self.precision.reason.startswith("auto: native") and \
                not self.environment["cpu_native_bf16"] and self.ctx.is_main:
            log.warning("bf16 (%s) on a CPU without native bf16 (%s): bf16 is emulated there, measured ~40x slower "
                        "than on a CPU with it (results/mini_overfit/README.md); trainer.precision=auto picks fp32 "
                        "on such a CPU, unless bf16 numerics are the point", self.precision.reason,
                        self.environment["cpu_model"])
        step_ctx = StepContext(settings, self.optimizer, self.ctx.device, self.model, self.steps_per_epoch,
                               self.cfg.trainer.progress_bar and self.ctx.is_main, None, self.global_step,
                               ema=self.switches.ema, mixer=self.switches.mixer)
        if logger.loggers:  # per-step scalars to the loggers (issue 36): rank 0 only, the only rank with loggers
            step_ctx.log_every, step_ctx.on_step = int((loggers or {}).get("log_every_n_steps") or 0), logger.log_step
        try:
            profile_steps = self.cfg.trainer.get("profile_steps", 0) if self.ctx.is_main else 0  # debug=profile
            with PreemptionFlag() as preemption, \
                    step_profiler(profile_steps, self.run_dir, self.ctx.device) as step_ctx.profiler:
                step_ctx.preemption = preemption
                while self.epoch < self.cfg.trainer.epochs:
                    self._one_epoch(step_ctx, logger)
                    if self.epoch < self.cfg.trainer.epochs and distributed.broadcast_flag(
                            preemption.received is not None, self.ctx.device):
                        self.save()
                        raise Preempted(self._resume_hint(preemption.received or "a peer's signal"))
            self._log_hparams(logger)
        finally:
            logger.close()
        return self._write_result(complete=True, pool=self._score_pool(settings.autocast_device))

    def _score_pool(self, autocast_type: str | None) -> dict | None:
        """dataset.eval_pool: the final network on the unused training images and the test images (issue 37)."""
        if self.data.pool is None:
            return None
        return final_pool_scores(self.eval_network, self.data, self.cfg.dataset, self.ctx, autocast_type)

    def _log_hparams(self, logger: MetricsLogger) -> None:
        """The loggers' hyperparameters (TensorBoard's HParams): every result-changing setting beside the final
        errors (fractions)."""
        last = (read_metrics(self.run_dir) or [{}])[-1] if self.ctx.is_main else {}
        hparams = {key: value for key, value in flatten(OmegaConf.to_container(self.cfg, resolve=True)).items()
                   if not is_runtime_key(key)}
        logger.log_hparams(hparams, {f"hparam/{key}": last.get(key) for key in
                                     ("test_top1_error", "test_top5_error", "train_top1_error", "test_loss")})

    def _one_epoch(self, step_ctx: StepContext, logger: MetricsLogger) -> None:
        cfg, epochs = self.cfg, self.cfg.trainer.epochs
        self.data.train.set_epoch(self.epoch, self.next_batch)
        resumed = (self.partial or {}).get("images", 0)  # trained before a resume: not in this process's images/s
        started = time.perf_counter()
        outcome = train_epoch(self.network, self.data.train, self.epoch, self.next_batch, step_ctx, self.partial)
        self.global_step, self.partial = step_ctx.global_step, None
        preempted = distributed.broadcast_flag(not outcome.finished, self.ctx.device)
        if preempted:
            self.next_batch = outcome.next_batch
            self.wall_time += time.perf_counter() - started
            self.partial = outcome.partial()
            self.save()
            raise Preempted(self._resume_hint(step_ctx.preemption.received or "a peer's signal"))
        totals = distributed.sum_across_ranks(torch.cat([outcome.sums, outcome.sums.new_tensor(
            [float(outcome.images), float(outcome.images - resumed)])])).tolist()
        last = self.epoch + 1 == epochs
        record = dict(epoch=self.epoch + 1, epochs=epochs, lr=outcome.lr, drop_strength=outcome.strength,
                      train_loss=totals[0] / totals[2], train_top1_error=1 - totals[1] / totals[2])
        if last or (self.epoch + 1) % cfg.trainer.eval_every == 0:
            record.update(evaluate(self.eval_network, self.data.test, self.ctx.device,
                                   step_ctx.settings.autocast_device))
            self.switches.evaluate(record, self.data.test, self.ctx.device, step_ctx.settings.autocast_device)
        if self.ctx.device.type == "cuda":
            torch.cuda.synchronize(self.ctx.device)
        seconds = time.perf_counter() - started
        self.wall_time += seconds
        record.update(images_per_second=totals[3] / seconds, seconds=seconds)
        self.epoch, self.next_batch = self.epoch + 1, 0
        logger.log_epoch(record)
        self.switches.after_epoch(record, self.epoch, self.model)
        if self.ctx.is_main and self.epoch in cfg.trainer.snapshot_epochs:
            save_snapshot(self.model.state_dict(), self.run_dir, self.epoch)
        if last or self.epoch % cfg.trainer.checkpoint_every == 0:
            self.save()
        if not last and self.ctx.is_main:
            self._write_result(complete=False, record=record)

    def _resume_hint(self, signal_name: str) -> str:
        run_dir = shlex.quote(str(self.run_dir))
        return (f"stopped by {signal_name} at epoch {self.epoch + 1}, batch {self.next_batch}; checkpoint saved in "
                f"{run_dir}. Resume with the same overrides plus trainer.resume=auto "
                f"{shlex.quote(f'output_dir={self.run_dir}')}")

    def _write_result(self, complete: bool, record: dict | None = None, pool: dict | None = None) -> dict:
        record = record or (read_metrics(self.run_dir) or [{}])[-1]
        result = dict(
            schema_version=SCHEMA_VERSION, complete=complete, epochs_completed=self.epoch,
            test_top1_error=record.get("test_top1_error"), test_top5_error=record.get("test_top5_error"),
            test_loss=record.get("test_loss"), train_loss=record.get("train_loss"), seed=self.cfg.seed,
            dataset=self.data.info, config=OmegaConf.to_container(self.cfg, resolve=True), code=self.code,
            torch_version=torch.__version__, environment=self.environment, device=hardware(self.ctx.device),
            precision=self.cfg.trainer.precision, precision_reason=self.precision.reason,
            world_size=self.ctx.world_size,
            wall_time_seconds=self.wall_time,
            # What an epoch was: a run capped by trainer.max_steps_per_epoch saw only part of the data.
            steps_per_epoch=self.steps_per_epoch, full_epochs=self.steps_per_epoch == len(self.data.train),
            **self.switches.result_fields(record),
            **({POOL_KEY: pool} if pool else {}),
        )
        if self.ctx.is_main:
            write_result(self.run_dir, result)  # atomic: a full disk leaves the previous result.json intact
        return result
