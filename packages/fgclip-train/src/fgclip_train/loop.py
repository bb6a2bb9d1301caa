"""The stage-2 training loop: a short function over composable pieces (data, model, engine, checkpointer,
logger, validator)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from .checkpoint import Checkpointer
from .config import TrainConfig, dump_config
from .data import build_data, load_tokenizer, read_sources, total_steps, training_records
from .engine import DistEnv, build_engine, setup_distributed
from .families import get_family
from .metrics import MetricsLogger
from .model import parameter_groups
from .plots import plot_training_curves
from .preflight import RunError, check_output_dir, check_paths, check_start, clear_earlier_run, resolve_init

MAX_CONSECUTIVE_SKIPS = 10
LOSS_TERMS = ("loss", "loss_long", "loss_short", "loss_region", "loss_tic", "loss_hard")


class NonFiniteLoss(RuntimeError):
    """A loss term became NaN or inf."""


# read on the host by the model (position resizing, feature-map geometry): moving them would force a sync
HOST_TENSORS = ("spatial_shapes",)


def to_device(batch: dict, device: torch.device) -> dict:
    return {
        k: (v.to(device, non_blocking=True) if torch.is_tensor(v) and k not in HOST_TENSORS else v)
        for k, v in batch.items()
    }


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


def train(config: TrainConfig) -> dict:
    """Run stage 1 or 2 as configured; returns the validation metrics before / after and the run's figures."""
    if config.runtime.threads:
        torch.set_num_threads(config.runtime.threads)
    out_dir = Path(config.runtime.output_dir)
    # every check that can fail on the configuration, before any process group or engine exists (all ranks
    # read the same files, so all raise the same RunError)
    check_start(config)
    config = resolve_init(config)  # an earlier run's output_dir (a stage-1 run) -> its newest checkpoint
    check_paths(config)
    check_output_dir(config, resumable=Checkpointer(out_dir, None, 0).latest() is not None)
    # data first: FG-Shapes generation forks worker processes, which must happen before the process group's
    # threads exist; concurrent ranks are serialised by the generator's lock file
    sources, records, val_records = read_sources(config)
    if records is not None and not records:
        raise RunError(f"data.train: {sources.train} holds no valid record (every record was rejected)")
    env = setup_distributed()
    torch.manual_seed(config.schedule.seed)
    if env.main:
        if config.runtime.overwrite:
            clear_earlier_run(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(dump_config(config))
    if dist.is_initialized():
        dist.barrier()  # the earlier run is gone on every rank's view before anything is written

    family = get_family(config.model.family)
    tokenizer = load_tokenizer(config, training_records(sources, records), family.tokenizer_layout)
    model = family.build_model(config, tokenizer)
    data = build_data(config, family, sources, records, val_records, tokenizer, model.config, env.rank, env.world)
    total = total_steps(config, data.steps_per_epoch)
    engine, _, scheduler = build_engine(config, model, parameter_groups(model, config, family.no_decay(model)), total)
    checkpointer = Checkpointer(out_dir, config.runtime.save_total_limit, env.rank)
    state = (checkpointer.resume(engine) if config.runtime.resume else None) or {"step": 0, "skipped": {}}
    step, skipped = state["step"], dict(state.get("skipped", {}))
    family.restore(engine.module, state)  # per-step state of the family (FG-CLIP 2: the margin τ)

    validator = None
    wants_eval = config.runtime.eval_before or config.runtime.eval_after
    if env.main and val_records and wants_eval and family.build_validator:
        validator = family.build_validator(config, val_records, sources, tokenizer, data.collate, data.resize)
    results: dict = {"before": None, "after": None}
    log = MetricsLogger(
        out_dir,
        total,
        step,
        env.main,
        config.runtime.tensorboard,
        config.runtime.wandb,
        config.model_dump(mode="json"),
        desc=f"stage{config.stage}",
    )
    if validator and config.runtime.eval_before and step == 0:
        results["before"] = validator(engine.module, env.device)
        log.write({"step": 0, "eval": "before", **results["before"]})

    extras = [tokenizer, data.collate.image_processor]
    kwargs = family.loss_kwargs(config)
    started = time.perf_counter()
    samples_seen = consecutive = 0
    while step < total:
        epoch, position = divmod(step * config.schedule.grad_accum, data.steps_per_epoch)
        for batch in data.epoch(epoch, position):
            for reason, n in batch.pop("skipped", {}).items():
                skipped[reason] = skipped.get(reason, 0) + n
            if any_rank(batch.pop("empty", False), env):  # every rank skips it, or the gathers would hang
                continue
            out = engine(**to_device(batch, env.device), **kwargs)
            bad = check_finite(out)
            if bad:
                message = f"step {step + 1}: non-finite loss term(s) {', '.join(bad)}"
                consecutive += 1
                if config.loss.on_nonfinite == "error" or consecutive > MAX_CONSECUTIVE_SKIPS:
                    raise NonFiniteLoss(
                        message + f" (loss.on_nonfinite=skip skips up to {MAX_CONSECUTIVE_SKIPS} such steps in a row)"
                    )
                skipped["non-finite loss (step skipped)"] = skipped.get("non-finite loss (step skipped)", 0) + 1
                engine.zero_grad()
                step += 1  # the step happens, without an update
                log.advance(0)
                if step >= total:
                    break
                continue
            consecutive = 0
            engine.backward(out.loss)
            engine.step()
            samples_seen += config.schedule.batch_size * env.world
            if not engine.is_gradient_accumulation_boundary():
                continue
            step += 1
            log.advance(config.schedule.batch_size * env.world * config.schedule.grad_accum)
            if step % config.runtime.log_every == 0 or step == total:
                losses = {k: float(getattr(out, k).detach()) for k in LOSS_TERMS if getattr(out, k, None) is not None}
                extra = {"epoch": epoch, "skipped": sum(skipped.values())}
                if getattr(out, "hard_margin", None) is not None:
                    extra["hard_margin"] = float(out.hard_margin)
                log.step(step, losses, scheduler.get_last_lr()[0], extra)
            if validator and config.runtime.eval_every and step % config.runtime.eval_every == 0 and step < total:
                log.write({"step": step, "eval": "during", **validator(engine.module, env.device)})
            every = config.runtime.save_every
            if (every and step % every == 0) or step == total:
                trainer_state = {"step": step, "skipped": skipped, "epoch": epoch, **family.state(engine.module)}
                checkpointer.save(engine, step, trainer_state, extras)
            if step >= total:
                break
    elapsed = time.perf_counter() - started
    if validator and config.runtime.eval_after:
        results["after"] = validator(engine.module, env.device)
        log.write({"step": step, "eval": "after", **results["after"]})
    log.close()
    if env.main and log.path.is_file():
        plot_training_curves(log.path)
    results.update(
        steps=step,
        seconds=elapsed,
        samples=samples_seen,
        skipped=skipped,
        checkpoint=str(checkpointer.latest()) if checkpointer.latest() else None,
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
