"""Checkpoints: a DeepSpeed state (model, optimiser, scheduler) + per-rank RNG + the data position, and an HF
folder ``model/`` that ``fgclip_model`` loads — written atomically (a temporary folder renamed when complete),
rotated to ``save_total_limit``, found again by ``resume``."""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from fgclip_model.loading import unsupported_global

from .adapters import lora_scalings, merged_state_dict

STEP_DIR = re.compile(r"^checkpoint-(\d+)$")


def rng_state() -> dict:
    """Python, NumPy and torch RNG states as plain types and tensors (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class UnsafeCheckpoint(ValueError):
    """A checkpoint file holds objects that only code execution could rebuild; it is not loaded."""


def deepspeed_safe_globals() -> list:
    """The classes DeepSpeed pickles into its ZeRO checkpoints besides tensors and containers: the loss scaler,
    the ZeRO stage enum and the fragment address of partitioned parameters (all plain data)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


@contextmanager
def weights_only_loading() -> Iterator[None]:
    """Inside the block every ``torch.load`` — DeepSpeed's own, which ask for ``weights_only=False`` — loads with
    ``weights_only=True`` and only :func:`deepspeed_safe_globals` allowed; a file needing more raises
    :class:`UnsafeCheckpoint` naming it. No code from a checkpoint runs."""
    real_load = torch.load
    allowed = deepspeed_safe_globals()

    def safe_load(f, *args, **kwargs):
        kwargs["weights_only"] = True
        try:
            with torch.serialization.safe_globals(allowed):
                return real_load(f, *args, **kwargs)
        except pickle.UnpicklingError as err:
            why = unsupported_global(err)
            raise UnsafeCheckpoint(
                f"{f}: refused, it holds objects that only code execution could rebuild{why}; fgclip loads "
                "training state with weights_only=True. Resume only from checkpoints written by fgclip-train, or "
                "start afresh with --runtime.resume=false in a new output_dir"
            ) from err

    torch.load = safe_load
    try:
        yield
    finally:
        torch.load = real_load


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def full_state_dict(engine) -> dict[str, torch.Tensor] | None:
    """The complete fp32 model weights on rank 0 (gathered from the shards under ZeRO-3), None elsewhere."""
    module = engine.module
    if engine.zero_optimization_stage() == 3:
        import deepspeed

        params = list(module.parameters())
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            state = {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}
    else:
        state = {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}
    return state if dist.get_rank() == 0 else None


def master_weights(checkpoint: Path, module_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The fp32 master weights of a mixed-precision run, read back from the DeepSpeed checkpoint just written,
    in the module's state-dict layout (names, shapes — e.g. the 0-dim temperatures — and non-trained tensors)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    fp32 = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag="deepspeed")
    out = {}
    for key, value in module_state.items():
        master = fp32.get(key)
        out[key] = master.float().reshape(value.shape).clone() if master is not None else value
    return out


class Checkpointer:
    def __init__(self, output_dir: str | Path, save_total_limit: int | None, rank: int) -> None:
        self.root = Path(output_dir)
        self.limit = save_total_limit
        self.rank = rank

    def checkpoints(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if p.is_dir() and STEP_DIR.match(p.name)]
        return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))

    def latest(self) -> Path | None:
        done = [p for p in self.checkpoints() if (p / "trainer_state.json").is_file()]
        return done[-1] if done else None

    def save(self, engine, step: int, state: dict, extras=()) -> Path:
        """Collective: every rank calls it. ``extras``: objects with ``save_pretrained`` (tokenizer, image
        processor) stored beside the model."""
        final = self.root / f"checkpoint-{step:07d}"
        tmp = self.root / f".tmp-checkpoint-{step:07d}"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        _barrier()
        engine.save_checkpoint(str(tmp), tag="deepspeed", client_state={"trainer": state})
        (tmp / "rng").mkdir(exist_ok=True)
        torch.save(rng_state(), tmp / "rng" / f"rank{self.rank}.pt")
        weights = full_state_dict(engine)
        if self.rank == 0:
            if engine.bfloat16_enabled() or engine.fp16_enabled():  # export the fp32 master weights
                weights = master_weights(tmp, weights)
            scalings = lora_scalings(engine.module)
            if scalings:  # LoRA folded into the weights: the checkpoint loads like a released one
                weights = merged_state_dict(weights, scalings)
            engine.module.save_pretrained(tmp / "model", state_dict=weights, safe_serialization=True)
            config_file = tmp / "model" / "config.json"
            config = json.loads(config_file.read_text())
            config["dtype"] = "float32"
            config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
            for extra in extras:
                extra.save_pretrained(tmp / "model")
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
        _barrier()
        if self.rank == 0:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            self._rotate()
        _barrier()
        return final

    def _rotate(self) -> None:
        if not self.limit:
            return
        for old in self.checkpoints()[: -self.limit]:
            shutil.rmtree(old, ignore_errors=True)

    def resume(self, engine) -> dict | None:
        """Restore the newest complete checkpoint into ``engine`` and this rank's RNG; returns the trainer state."""
        latest = self.latest()
        if latest is None:
            return None
        with weights_only_loading():
            _, client = engine.load_checkpoint(str(latest), tag="deepspeed", load_lr_scheduler_states=True)
            rng_file = latest / "rng" / f"rank{self.rank}.pt"
            if rng_file.is_file():
                set_rng_state(torch.load(rng_file))
        return (client or {}).get("trainer") or json.loads((latest / "trainer_state.json").read_text())
