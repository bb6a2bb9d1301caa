"""The training loop of both stages: :func:`train` is a short loop over composable pieces — the checks before
anything starts (:func:`preflight`), the run's parts (:func:`build_run`: family, data, engine, checkpointer,
logger, validator) and one optimisation step (:func:`train_step`)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from fgclip_model.machine import machine_record

from .checkpoint import Checkpointer
from .config import TrainConfig, dump_config
from .data import (
    TrainData,
    build_data,
    corpus,
    load_tokenizer,
    read_sources,
    tokenizer_source,
    total_steps,
    training_records,
)
from .engine import DistEnv, build_engine, setup_distributed
from .families import TrainingFamily, get_family, loss_switches, loss_weights
from .metrics import MetricsLogger
from .model import bind_objective, parameter_groups
from .plots import plot_training_curves
from .preflight import (
    RunError,
    check_family_options,
    check_output_dir,
    check_paths,
    check_start,
    clear_earlier_run,
    resolve_init,
)
from .vocabulary import extend_vocabulary

MAX_CONSECUTIVE_SKIPS = 10
LOSS_TERMS = ("loss", "loss_long", "loss_short", "loss_region", "loss_tic", "loss_hard")


class NonFiniteLoss(RuntimeError):
    """A loss term became NaN or inf."""


def check_finite(out) -> list[str]:
    """Names of the non-finite loss terms (one host sync for all of them)."""
    terms = [(name, getattr(out, name)) for name in LOSS_TERMS if getattr(out, name, None) is not None]
    finite = torch.isfinite(torch.stack([t.detach().float().reshape(()) for _, t in terms]))
    if bool(finite.all()):
        return []
    return [name for (name, _), ok in zip(terms, finite.tolist(), strict=True) if not ok]


def any_rank(flag: bool, env: DistEnv) -> bool:
    """True on every rank when ``flag`` is true on any (one small all-reduce; no collective with one rank)."""
    if env.world == 1:
        return flag
    value = torch.tensor([float(flag)], device=env.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def preflight(config: TrainConfig) -> tuple[TrainConfig, tuple]:
    """Every check that can fail on the configuration, before any process group or engine exists (all ranks
    read the same files, so all raise the same RunError), then the data: FG-Shapes generation forks worker
    processes, which must happen before the process group's threads exist (ranks are serialised by its lock)."""
    if config.runtime.threads:
        torch.set_num_threads(config.runtime.threads)
    check_start(config)
    check_family_options(config, get_family(config.model.family))
    config = resolve_init(config)  # an earlier run's output_dir (a stage-1 run) -> its newest checkpoint
    check_paths(config)
    check_output_dir(config, resumable=Checkpointer(Path(config.runtime.output_dir), None, 0).latest() is not None)
    sources, records, val_records = read_sources(config)
    if records is not None and not records:
        raise RunError(f"data.train: {sources.train} holds no valid record (every record was rejected)")
    return config, (sources, records, val_records)


def start_output(config: TrainConfig, env: DistEnv) -> Path:
    """The output folder, emptied of an earlier run with ``runtime.overwrite``, holding this run's config."""
    out_dir = Path(config.runtime.output_dir)
    if env.main:
        if config.runtime.overwrite:
            clear_earlier_run(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(dump_config(config))
    if dist.is_initialized():
        dist.barrier()  # the earlier run is gone on every rank's view before anything is written
    return out_dir


@dataclass(kw_only=True)
class Run:
    """The composable pieces of a run and its progress (what a checkpoint restores)."""

    config: TrainConfig
    env: DistEnv
    family: TrainingFamily
    tokenizer: object
    data: TrainData
    engine: object
    scheduler: object
    checkpointer: Checkpointer
    log: MetricsLogger
    validator: Callable | None
    total: int
    step: int = 0
    skipped: dict = field(default_factory=dict)
    samples: int = 0
    bad_in_a_row: int = 0

    def count_skips(self, reasons: dict[str, int]) -> None:
        for reason, n in reasons.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + n

    def validate(self, when: str) -> dict:
        metrics = self.validator(self.engine.module, self.env.device)
        self.log.write({"step": self.step, "eval": when, **metrics})
        return metrics

    def save(self, epoch: int) -> None:
        state = {"step": self.step, "skipped": self.skipped, "epoch": epoch, **self.family.state(self.engine.module)}
        self.checkpointer.save(self.engine, self.step, state, [self.tokenizer, self.data.collate.image_processor])


def build_run(config: TrainConfig, sources, records, val_records, env: DistEnv, out_dir: Path) -> Run:
    """Training family, tokenizer, model (its forward bound to the training loss), data, engine, checkpointer
    (resumed when asked), validator and logger."""
    family = get_family(config.model.family)
    tokenizer = load_tokenizer(config, training_records(sources, records), family.tokenizer_layout)
    model = family.build_model(config, tokenizer)
    if config.data.extend_vocabulary:  # new words of the training records: tokenizer and token embeddings grow
        texts = corpus(training_records(sources, records))
        tokenizer = extend_vocabulary(model, tokenizer, texts, tokenizer_source(config), config.data.extend_vocabulary)
    bind_objective(model, loss_weights(config, family), loss_switches(config))
    data = build_data(
        config,
        family,
        sources=sources,
        records=records,
        val=val_records,
        tokenizer=tokenizer,
        model_config=model.config,
        rank=env.rank,
        world=env.world,
    )
    total = total_steps(config, data.steps_per_epoch)
    engine, _, scheduler = build_engine(config, model, parameter_groups(model, config, family.no_decay(model)), total)
    checkpointer = Checkpointer(out_dir, config.runtime.save_total_limit, env.rank)
    state = (checkpointer.resume(engine) if config.runtime.resume else None) or {"step": 0, "skipped": {}}
    family.restore(engine.module, state)  # per-step state of the family (FG-CLIP 2: the margin τ)
    runtime = config.runtime
    validator = None
    wants_eval = runtime.eval_before or runtime.eval_after or runtime.eval_every
    if env.main and val_records and wants_eval and family.build_validator:
        validator = family.build_validator(config, val_records, sources, tokenizer, data.collate, data.resize)
    log = MetricsLogger(
        out_dir,
        total,
        state["step"],
        env.main,
        runtime.tensorboard,
        runtime.wandb,
        config.model_dump(mode="json"),
        desc=f"stage{config.stage}",
    )
    return Run(
        config=config,
        env=env,
        family=family,
        tokenizer=tokenizer,
        data=data,
        engine=engine,
        scheduler=scheduler,
        checkpointer=checkpointer,
        log=log,
        validator=validator,
        total=total,
        step=state["step"],
        skipped=dict(state.get("skipped", {})),
    )


def train_step(run: Run, batch, epoch: int) -> bool:
    """One micro-batch: forward, finiteness check, backward, optimiser step. Returns whether an optimisation
    step completed (False inside gradient accumulation); a skipped non-finite step counts as a step."""
    config = run.config
    out = run.engine(batch.to(run.env.device))  # the model's compute_loss (bind_objective)
    bad = check_finite(out)
    if bad:
        run.bad_in_a_row += 1
        if config.loss.on_nonfinite == "error" or run.bad_in_a_row > MAX_CONSECUTIVE_SKIPS:
            raise NonFiniteLoss(
                f"step {run.step + 1}: non-finite loss term(s) {', '.join(bad)} "
                f"(loss.on_nonfinite=skip skips up to {MAX_CONSECUTIVE_SKIPS} such steps in a row)"
            )
        run.count_skips({"non-finite loss (step skipped)": 1})
        run.engine.zero_grad()
        run.step += 1  # the step happens, without an update
        run.log.advance(0)
        return True
    run.bad_in_a_row = 0
    run.engine.backward(out.loss)
    run.engine.step()
    per_step = config.schedule.batch_size * run.env.world
    run.samples += per_step
    if not run.engine.is_gradient_accumulation_boundary():
        return False
    run.step += 1
    run.log.advance(per_step * config.schedule.grad_accum)
    if run.step % config.runtime.log_every == 0 or run.step == run.total:
        losses = {k: float(getattr(out, k).detach()) for k in LOSS_TERMS if getattr(out, k, None) is not None}
        extra = {"epoch": epoch, "skipped": sum(run.skipped.values())}
        if getattr(out, "hard_margin", None) is not None:
            extra["hard_margin"] = float(out.hard_margin)
        run.log.step(run.step, losses, run.scheduler.get_last_lr()[0], extra)
    return True


def train(config: TrainConfig) -> dict:
    """Run stage 1 or 2 as configured; returns the validation metrics before / after and the run's figures."""
    config, (sources, records, val_records) = preflight(config)
    env = setup_distributed()
    torch.manual_seed(config.schedule.seed)
    out_dir = start_output(config, env)
    run = build_run(config, sources, records, val_records, env, out_dir)
    runtime = config.runtime
    results: dict = {"before": None, "after": None}
    if run.validator and runtime.eval_before and run.step == 0:
        results["before"] = run.validate("before")

    started = time.perf_counter()
    while run.step < run.total:
        epoch, position = divmod(run.step * config.schedule.grad_accum, run.data.steps_per_epoch)
        for batch in run.data.epoch(epoch, position):
            run.count_skips(batch.skipped)
            if any_rank(batch.empty, env):  # every rank skips it, or the gathers would hang
                continue
            if not train_step(run, batch, epoch):
                continue
            if run.validator and runtime.eval_every and run.step % runtime.eval_every == 0 and run.step < run.total:
                run.validate("during")
            if (runtime.save_every and run.step % runtime.save_every == 0) or run.step == run.total:
                run.save(epoch)
            if run.step >= run.total:
                break
    elapsed = time.perf_counter() - started
    if run.validator and runtime.eval_after:
        results["after"] = run.validate("after")
    run.log.close()
    if env.main and run.log.path.is_file():
        plot_training_curves(run.log.path)
    latest = run.checkpointer.latest()
    results.update(
        steps=run.step,
        seconds=elapsed,
        samples=run.samples,
        skipped=run.skipped,
        checkpoint=str(latest) if latest else None,
        machine=machine_record(),  # the CPU (model, instruction-set class, threads) and GPU the figures came from
    )
    if env.main:
        (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    if dist.is_initialized():
        dist.barrier()
    return results


def finish_distributed() -> None:
    """End the process group cleanly (a rank exiting without it can abort with 'terminate called ...')."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    os.environ.pop("FGCLIP_TRAIN_ACTIVE", None)
