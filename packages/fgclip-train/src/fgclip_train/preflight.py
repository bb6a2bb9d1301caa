"""Checks a run passes before any process group or DeepSpeed engine starts: every configured path exists, the
starting weights are complete files, and the output folder is this run's to use.

Each failure is one :class:`RunError` whose message names the setting or file and the fix; the ``stage2`` /
``finetune`` commands print it as one line and exit with code 2.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .config import STARTING_CHECKPOINTS, TrainConfig

# what a run writes into its output_dir (and, with runtime.overwrite, what it may remove)
RUN_FILES = ("config.yaml", "metrics.jsonl", "results.json", "training_curves.png", "tensorboard")
RUN_DIR_PREFIXES = ("checkpoint-", ".tmp-checkpoint-")


class RunError(ValueError):
    """A run that cannot start as configured."""


PATH_SETTINGS = (
    "data.train",
    "data.val",
    "data.images",
    "data.train_cn",
    "data.shards",
    "data.shards_cn",
    "data.tokenizer",
    "model.init",
    "runtime.deepspeed_config",
)


def _setting(config: TrainConfig, dotted: str):
    section, name = dotted.split(".")
    return getattr(getattr(config, section), name)


def check_start(config: TrainConfig) -> None:
    """A reference preset starts from a checkpoint: refuse to run one without ``model.init`` (it would train a
    full-size model from random weights)."""
    needed = STARTING_CHECKPOINTS.get(config.preset)
    if needed and config.model.init is None:
        raise RunError(
            f"preset {config.preset} starts from {needed}: set --model.init (random weights are for the FG-Shapes "
            "presets)"
        )


def check_family_options(config: TrainConfig, family) -> None:
    """Options that only some training families take (``model.text_length``: Long-CLIP's stretched length)."""
    if config.model.text_length is not None and not family.text_length_option:
        raise RunError(
            f"model.text_length is Long-CLIP's stretched text length (finetune); the {family.name} family keeps its "
            "text walks"
        )


def run_checkpoint_model(folder: str | Path) -> Path | None:
    """The model folder of the newest complete checkpoint of a run's output_dir (``checkpoint-N/model``), or None
    when ``folder`` is not such a run."""
    from .checkpoint import Checkpointer

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return None
    latest = Checkpointer(folder, None, 0).latest()
    return latest / "model" if latest is not None and (latest / "model" / "config.json").is_file() else None


def resolve_init(config: TrainConfig) -> TrainConfig:
    """``model.init`` given as an earlier run's output_dir (e.g. a stage-1 run) -> its newest checkpoint's model."""
    init = config.model.init
    model = run_checkpoint_model(init) if init is not None and Path(init).is_dir() else None
    if model is None:
        return config
    return config.model_copy(update={"model": config.model.model_copy(update={"init": str(model)})})


def check_paths(config: TrainConfig) -> None:
    """Every configured file or folder exists; model.init's safetensors files are complete."""
    for dotted in PATH_SETTINGS:
        value = _setting(config, dotted)
        if value is not None and not Path(value).exists():
            raise RunError(f"{dotted}: {value} does not exist (fix the path or leave the setting out)")
    init = config.model.init
    if init is not None and Path(init).is_dir():
        from fgclip_model.loading import check_checkpoint_files

        try:
            check_checkpoint_files(init)
        except ValueError as err:
            raise RunError(f"model.init: {err}") from err


def earlier_run(output_dir: Path) -> list[str]:
    """The files of an earlier run in ``output_dir`` (empty when there is none)."""
    if not output_dir.is_dir():
        return []
    return sorted(p.name for p in output_dir.iterdir() if p.name in RUN_FILES or p.name.startswith(RUN_DIR_PREFIXES))


def check_output_dir(config: TrainConfig, resumable: bool) -> None:
    """Refuse an output_dir holding an earlier run unless the run resumes it (``runtime.resume`` with a complete
    checkpoint: ``resumable``) or replaces it (``runtime.overwrite``): two runs' checkpoints and metrics never mix."""
    runtime = config.runtime
    found = earlier_run(Path(runtime.output_dir))
    if not found or runtime.overwrite or (runtime.resume and resumable):
        return
    shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
    why = "it has no complete checkpoint to resume from" if runtime.resume else "runtime.resume is false"
    raise RunError(
        f"runtime.output_dir: {runtime.output_dir} holds an earlier run ({shown}) and {why}: pass "
        "--runtime.overwrite=true to replace it, or choose another output_dir"
    )


def clear_earlier_run(output_dir: Path) -> None:
    """Remove what an earlier run wrote (``runtime.overwrite``); anything else in the folder is left alone."""
    for name in earlier_run(output_dir):
        path = output_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
