"""The one validated configuration of a training run (stage 1 or stage 2), its presets, YAML files and
``--key=value`` overrides."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fgclip_model.tiny import tower


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FreezeConfig(_Strict):
    """Towers whose weights stay as loaded (open_clip's ``--lock-image`` / ``--lock-text``)."""

    vision: bool = Field(False, description="freeze the image tower")
    text: bool = Field(False, description="freeze the text tower")
    unlocked_layers: int = Field(
        0, ge=0, description="a frozen tower still trains its last N transformer blocks and what follows them"
    )


class LoraConfig(_Strict):
    """LoRA adapters (peft) on the towers' transformer blocks; every checkpoint holds them merged into the weights,
    so it loads like a released one. Everything else is frozen but, with ``train_heads``, the parameters outside the
    two towers (projections, region / long-text heads, temperatures)."""

    rank: int = Field(16, gt=0)
    alpha: float = Field(32.0, gt=0, description="the update is scaled by alpha / rank")
    dropout: float = Field(0.0, ge=0, lt=1)
    towers: list[Literal["vision_model", "text_model"]] = Field(default_factory=lambda: ["vision_model", "text_model"])
    modules: list[Literal["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
        description="attention (q/k/v/out_proj) and MLP (fc1/fc2) projections to adapt",
    )
    train_heads: bool = Field(True, description="also train the parameters outside the towers in full")


class ModelConfig(_Strict):
    """Which model to train and where its weights come from."""

    family: str = Field("fgclip2", description="fgclip, fgclip2 (or a registered family such as longclip)")
    init: str | None = Field(
        None, description="checkpoint folder to start from (FG-CLIP/FG-CLIP 2, or CLIP/SigLIP 2 with from_base)"
    )
    from_base: bool = Field(
        False, description="init is a plain CLIP (v1) / SigLIP 2 NaFlex (v2) checkpoint: stretch positions, copy heads"
    )
    size: dict[str, Any] = Field(
        default_factory=dict, description="config overrides for a model built from scratch (init: null)"
    )
    extra_logit_scale: float | None = Field(
        4.6052, description="reset the region / hard-negative temperatures to this (reference: ln 100); null keeps them"
    )
    gradient_checkpointing: bool = False
    freeze: FreezeConfig = Field(default_factory=FreezeConfig)
    lora: LoraConfig | None = Field(None, description="LoRA fine-tuning (e.g. --model.lora={rank: 16}); null: none")
    text_length: int | None = Field(
        None,
        gt=77,
        description="Long-CLIP (finetune): text positions after stretching CLIP's 77 (default 248; e.g. 512)",
    )


class DataConfig(_Strict):
    """Training and validation records (FineHARD layout) and how samples are built."""

    train: str | None = Field(
        None,
        description="record file / folder, or a record store (`fgclip-data store build`, memory-mapped: large sets); "
        "null (and no data.shards): FG-Shapes generated into the cache",
    )
    val: str | None = None
    images: str | None = Field(None, description="image root f_path resolves against")
    train_cn: str | None = Field(
        None, description="Chinese records (FG-CLIP 2): every global batch is all-English or all-Chinese"
    )
    shards: str | None = Field(
        None, description="a shard folder (`fgclip-data shards write`) streamed instead of data.train (large sets)"
    )
    shards_cn: str | None = Field(None, description="Chinese shards next to data.shards: monolingual global batches")
    shuffle_buffer: int = Field(
        1000, ge=0, description="shards: samples each loader worker draws its next one from (encoded bytes in memory)"
    )
    fgshapes_n: int = Field(5000, gt=0)
    fgshapes_lang: Literal["en", "both"] = Field("en", description="both: also train on FG-Shapes' Chinese captions")
    fgshapes_seed: int = 0
    tokenizer: str | None = Field(None, description="tokenizer folder; null: init's, or one built for FG-Shapes")
    extend_vocabulary: bool | Literal["auto"] = Field(
        False,
        description="add the training records' new words to a word-level tokenizer (init's) and grow the token "
        "embeddings (trained) to match; true refuses a subword tokenizer, auto leaves it as it is",
    )
    max_boxes: int = Field(4, ge=0)
    negatives: int | None = Field(10, gt=0)
    region_caption: Literal["random", "short", "long"] = "random"
    short_prefix: str = Field("a photo of ", description="prepended to English short captions (the reference)")
    image_size: int | None = Field(None, gt=0, description="v1: square image side (default: the model's)")
    max_num_patches: int | None = Field(
        64, gt=0, description="v2: fixed patch budget; null: the reference's batch bucket"
    )
    min_num_patches: int | None = Field(
        None,
        gt=0,
        description="v2: draw each training batch's patch budget from [min_num_patches, max_num_patches] (validation "
        "stays at max_num_patches); null: every batch at max_num_patches",
    )
    workers: int = Field(0, ge=0)
    val_limit: int | None = Field(1000, gt=0)


class LossConfig(_Strict):
    """Loss switches and weights (a weight left null is the model's default, the reference recipe's)."""

    long_text: bool = True
    region: bool = True
    hard_negatives: bool = True
    region_weight: float | None = Field(None, ge=0, description="null: the model's default_loss_weights")
    hard_weight: float | None = Field(None, ge=0, description="null: the model's default_loss_weights")
    tic_weight: float | None = Field(None, ge=0, description="null: the model's default_loss_weights")
    on_nonfinite: Literal["error", "skip"] = "error"


class OptimConfig(_Strict):
    lr: float = Field(1e-6, gt=0)
    text_lr: float | None = Field(None, gt=0)
    weight_decay: float = Field(0.001, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    grad_clip: float | None = Field(None, ge=0, description="DeepSpeed gradient_clipping (the reference had none)")
    decay_embeddings_and_scales: bool = Field(
        True, description="the reference decays embeddings, class token and temperatures; false exempts them"
    )


class ScheduleConfig(_Strict):
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0)
    batch_size: int = Field(32, gt=0, description="per-device micro batch")
    grad_accum: int = Field(1, gt=0)
    warmup_steps: int | None = Field(None, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, le=1)
    scheduler: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="after the warm-up: cosine or linear decay to zero, or constant"
    )
    seed: int = 42


class RuntimeConfig(_Strict):
    """Precision, DeepSpeed, checkpoints and logging."""

    precision: Literal["fp32", "bf16", "bf16-autocast", "auto"] = Field(
        "fp32",
        description="bf16: DeepSpeed's bf16 weights with fp32 master copies; bf16-autocast: fp32 weights, matmuls "
        "under torch.autocast; auto: bf16-autocast on a GPU, fp32 on the CPU",
    )
    zero_stage: Literal[0, 1, 2, 3] = 2
    deepspeed_config: str | None = Field(None, description="a DeepSpeed JSON to start from (default: shipped zero2/3)")
    output_dir: str = "runs/stage2"
    save_every: int | None = Field(None, gt=0, description="steps between checkpoints (default: end of run only)")
    save_total_limit: int | None = Field(3, gt=0)
    resume: bool = Field(True, description="continue from the newest checkpoint in output_dir")
    overwrite: bool = Field(
        False, description="start afresh in an output_dir that holds an earlier run, removing that run's files"
    )
    log_every: int = Field(1, gt=0)
    tensorboard: bool = False
    wandb: bool = False
    eval_before: bool = True
    eval_after: bool = True
    eval_every: int | None = Field(None, gt=0, description="steps between validations during the run (null: none)")
    threads: int | None = Field(None, gt=0)


class TrainConfig(_Strict):
    """A training run: which stage, model, data, losses, optimiser, schedule and runtime."""

    preset: str = "fgshapes"
    stage: Literal[1, 2] = Field(
        2, description="1: global alignment on long + short captions only; 2: also regions and hard negatives"
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        data = self.data
        if data.shards and (data.train or data.train_cn):
            raise ValueError("data.shards and data.train are two training sources: give one (Chinese: data.shards_cn)")
        if data.shards_cn and not data.shards:
            raise ValueError("data.shards_cn needs data.shards (the English shards)")
        if data.train and not data.images:
            raise ValueError("data.train needs data.images (the image root)")
        if data.val and not data.images:
            raise ValueError("data.val needs data.images (the image root of the validation records)")
        if data.min_num_patches is not None and (
            data.max_num_patches is None or data.min_num_patches > data.max_num_patches
        ):
            raise ValueError(
                f"data.min_num_patches ({data.min_num_patches}) draws each batch's budget up to data.max_num_patches, "
                f"which must be set and at least as large (got {data.max_num_patches}; --data.min_num_patches=null: "
                "every batch at data.max_num_patches)"
            )
        if self.runtime.precision == "bf16" and self.runtime.zero_stage == 0:
            raise ValueError(
                "runtime.precision=bf16 keeps fp32 master weights in ZeRO's optimizer partitions, which checkpoints "
                "export: give --runtime.zero_stage=1, 2 or 3 (or --runtime.precision=bf16-autocast)"
            )
        if self.stage == 1 and (self.loss.region or self.loss.hard_negatives):
            raise ValueError(
                "stage 1 is global alignment only: loss.region and loss.hard_negatives must be false (run stage2 "
                "for the regional losses)"
            )
        return self


# --------------------------------------------------------------------------------------------------- presets


def _merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


STAGE1 = {"stage": 1, "loss": {"region": False, "hard_negatives": False}}
SMALL_TOWER = tower(width=96, layers=3, heads=4, mlp=4)  # the FG-Shapes models' towers
# FG-Shapes texts are short attribute phrases: one text layer reads them as well as three (measured) at a third of
# the cost, and the text side, ~600 distinct texts a step, is most of the step
SMALL_TEXT_TOWER = tower(width=96, layers=1, heads=4, mlp=4)
# exact (erf) GELU instead of SigLIP's tanh approximation: the same curve (within 5e-4), 3x faster forward and
# backward in PyTorch on CPUs (measured here: 12 vs 39 ms on an isolated text-MLP activation; ~25 ms of a 0.5 s step)
FAST_GELU = {"hidden_act": "gelu"}

PRESETS: dict[str, dict[str, Any]] = {
    # the default: a small FG-CLIP 2 from scratch on FG-Shapes, minutes on a laptop CPU
    "fgshapes": {
        "model": {
            "family": "fgclip2",
            "size": {
                "text_config": {
                    **SMALL_TEXT_TOWER,
                    **FAST_GELU,
                    "max_position_embeddings": 24,
                    "longtext_len": 96,
                    "keep_len": 8,
                },
                # four vision layers with MLPs twice (not four times) as wide: the matmul FLOPs of three 4x layers, and
                # the depth that learns an object's size against the image's (hard negatives 0.94-0.95 vs 0.91-0.93)
                "vision_config": {
                    **SMALL_TOWER,
                    **FAST_GELU,
                    "num_hidden_layers": 4,
                    "intermediate_size": 192,
                    "num_patches": 256,
                    "patch_size": 16,
                },
                # fresh heads, positions and attention that keep each patch's place and content and let it read
                # its object's shape and extent from the first step (see FGCLIP2Config)
                "dense_head_init": "local",
                "position_init": "sincos",
                "attention_init": "mimetic",
            },
            # region / hard-negative temperatures start at 30: single-attribute rewrites differ by small margins
            "extra_logit_scale": 3.4,
        },
        # up to 256 patches of 16 px (shape needs the pixels), each batch's budget drawn from 128-256 so that objects
        # of one relative size cover varying numbers of patches (and the step is ~20 % cheaper); 20 000 scenes
        "data": {"fgshapes_n": 20000, "max_num_patches": 256, "min_num_patches": 128, "negatives": 10},
        # the region loss (boxes against their captions) weighs 5 (reference 0.2): box classification rises with it
        # (450-step runs: 0.74 / 0.77 / 0.79 / 0.81 at weights 1 / 2 / 3 / 5) while hard negatives stay level
        "loss": {"hard_weight": 2.0, "region_weight": 5.0},
        "optim": {"lr": 1e-3, "weight_decay": 0.05, "betas": (0.9, 0.98), "eps": 1e-6, "grad_clip": 1.0},
        # 1 400 steps of a cosine decay: hard negatives 0.929-0.967 over ten runs (1 300 steps of a linear decay:
        # 0.926-0.961 over three, 1 200 cosine 0.927 — measured; the size attribute is learnt last)
        "schedule": {"epochs": 2.491, "batch_size": 32, "warmup_steps": 20, "seed": 0},
        # ZeRO stage 0: the model has under 1 M parameters, so partitioning its optimizer state over ranks saves
        # nothing, and on one CPU process ZeRO-2's gradient copies cost ~10 % of a step (0.47 vs 0.53 s, measured)
        # validation before, at step 700 and after (each ~5 s: 2 000 images through the vision tower at 256 patches)
        "runtime": {"output_dir": "runs/fgshapes", "zero_stage": 0, "eval_every": 700},
    },
    # a small FG-CLIP v1 from scratch on FG-Shapes (CLIP token ids; 64 px squashed images)
    "fgshapes-v1": {
        "model": {
            "family": "fgclip",
            "size": {
                "text_config": {**SMALL_TOWER, "max_position_embeddings": 24},
                "vision_config": {**SMALL_TOWER, "image_size": 128, "patch_size": 16},
                "projection_dim": 96,
                "long_max_position_embeddings": 96,
                "long_keep_positions": 8,
            },
            "extra_logit_scale": 2.3,
        },
        "data": {"fgshapes_n": 5000, "negatives": 10},
        "optim": {"lr": 2e-3, "weight_decay": 0.05, "betas": (0.9, 0.98), "eps": 1e-6, "grad_clip": 1.0},
        "schedule": {"epochs": 2, "batch_size": 48, "warmup_steps": 20, "seed": 0},
        "runtime": {"output_dir": "runs/fgshapes-v1", "zero_stage": 0},  # tiny, as the fgshapes preset
    },
    # FG-CLIP v1 stage 2 (the reference's scripts/train.sh): 8 GPUs x 512, lr 1e-6, cosine, 200 warm-up steps, wd 0.001
    "fgclip-v1": {
        "model": {"family": "fgclip", "gradient_checkpointing": True},
        "data": {"max_boxes": 4, "negatives": 10, "image_size": 224},
        "optim": {"lr": 1e-6, "weight_decay": 0.001, "betas": (0.9, 0.999), "eps": 1e-8},
        "schedule": {"epochs": 1, "batch_size": 512, "warmup_steps": 200, "scheduler": "cosine", "seed": 42},
        "runtime": {
            "precision": "bf16",
            "zero_stage": 2,
            "output_dir": "runs/fgclip-v1-stage2",
            "save_total_limit": 6,
            "eval_before": False,
            "eval_after": False,
        },
    },
    # FG-CLIP 2 stage 2 (the reference's stage2_fgclip2.sh): from SigLIP 2 NaFlex, 8 GPUs x 512, 6 epochs, lr 1e-6,
    # wd 0.001, betas (0.9, 0.98), eps 1e-6, warm-up 3 %, cosine, per-batch patch bucket
    "fgclip2": {
        "model": {"family": "fgclip2", "from_base": True, "gradient_checkpointing": True},
        "data": {"max_boxes": 4, "negatives": 10, "max_num_patches": None},
        "optim": {"lr": 1e-6, "weight_decay": 0.001, "betas": (0.9, 0.98), "eps": 1e-6},
        "schedule": {"epochs": 6, "batch_size": 512, "warmup_ratio": 0.03, "scheduler": "cosine", "seed": 42},
        "runtime": {
            "precision": "bf16",
            "zero_stage": 2,
            "output_dir": "runs/fgclip2-stage2",
            "save_every": 2000,
            "save_total_limit": 36,
            "eval_before": False,
            "eval_after": False,
        },
    },
}


def _finetune(family: str, output_dir: str, **data: Any) -> dict[str, Any]:
    """A fine-tuning preset: a released checkpoint (``model.init``) trained further on your own records (e.g.
    ``fgclip-data import`` output) with LoRA on both towers, all three losses, bf16 autocast on a GPU (fp32 on the
    CPU), the held-out split evaluated before and after. ``--model.lora=null`` trains every weight (then lower
    ``optim.lr``, e.g. 1e-5)."""
    return {
        "model": {"family": family, "gradient_checkpointing": True, "lora": {"rank": 16, "alpha": 32}},
        "data": {"max_boxes": 4, "negatives": 10, "extend_vocabulary": "auto", **data},
        "optim": {"lr": 1e-4, "weight_decay": 0.01, "betas": (0.9, 0.98), "eps": 1e-6, "grad_clip": 1.0},
        "schedule": {"epochs": 3, "batch_size": 32, "warmup_ratio": 0.05, "scheduler": "cosine", "seed": 0},
        "runtime": {"precision": "auto", "zero_stage": 2, "output_dir": output_dir, "save_total_limit": 2},
    }


PRESETS.update(
    {
        "fgclip2-finetune": _finetune("fgclip2", "runs/fgclip2-finetune", max_num_patches=256),
        "fgclip-finetune": _finetune("fgclip", "runs/fgclip-finetune", image_size=224),
    }
)


def register_presets(presets: dict[str, dict[str, Any]]) -> None:
    """Make ``presets`` (name -> settings) selectable by ``--preset`` (another package's training family: see
    ``fgclip_train.register_family``). A name already taken is an error: presets are never replaced."""
    taken = sorted(set(presets) & set(PRESETS))
    if taken and any(PRESETS[name] != presets[name] for name in taken):
        raise ValueError(f"presets {taken} are already registered with other settings")
    PRESETS.update(copy.deepcopy(presets))


def _stage1(preset: str, **changes: Any) -> dict[str, Any]:
    """A stage-1 preset: the stage-2 preset ``preset`` with the global losses only, then ``changes``."""
    return _merge(_merge(PRESETS[preset], STAGE1), changes)


# Stage 1 of the papers: global alignment (long + short captions). The reference repositories ship no stage-1
# script, so the reference presets keep their stage-2 script's optimiser and schedule, starting from the base model
# (OpenAI CLIP with its positions stretched to 248 for v1, SigLIP 2 NaFlex for v2).
PRESETS.update(
    {
        "fgshapes-stage1": _stage1("fgshapes", runtime={"output_dir": "runs/fgshapes-stage1"}),
        "fgshapes-v1-stage1": _stage1("fgshapes-v1", runtime={"output_dir": "runs/fgshapes-v1-stage1"}),
        "fgclip-v1-stage1": _stage1(
            "fgclip-v1", model={"from_base": True}, runtime={"output_dir": "runs/fgclip-v1-stage1"}
        ),
        "fgclip2-stage1": _stage1("fgclip2", runtime={"output_dir": "runs/fgclip2-stage1"}),
    }
)

# the reference presets train a released checkpoint further: without model.init they would silently train a
# full-size model from random weights, so a run of one of them must say where it starts (checked before training)
STARTING_CHECKPOINTS: dict[str, str] = {
    "fgclip-v1": "an FG-CLIP v1 checkpoint (e.g. qihoo360/fg-clip-base, or a fgclip-v1-stage1 run), or an OpenAI "
    "CLIP checkpoint (e.g. openai/clip-vit-base-patch16) with --model.from_base=true",
    "fgclip2": "a SigLIP 2 NaFlex checkpoint (e.g. google/siglip2-base-patch16-naflex), as the reference script, or "
    "an FG-CLIP 2 / fgclip2-stage1 run's checkpoint with --model.from_base=false",
    "fgclip-v1-stage1": "an OpenAI CLIP checkpoint (e.g. openai/clip-vit-base-patch16)",
    "fgclip2-stage1": "a SigLIP 2 NaFlex checkpoint (e.g. google/siglip2-base-patch16-naflex)",
    "fgclip2-finetune": "an FG-CLIP 2 checkpoint (e.g. qihoo360/fg-clip2-base, or a stage2 run's checkpoint)",
    "fgclip-finetune": "an FG-CLIP v1 checkpoint (e.g. qihoo360/fg-clip-base, or a stage2 run's checkpoint)",
}


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], YAML-parsed value)."""
    key, sep, value = text.lstrip("-").partition("=")
    if not sep or not key:
        raise ValueError(f"override {text!r} is not key=value (e.g. --schedule.batch_size=64)")
    return key.split("."), yaml.safe_load(value)


def load_config(
    file: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = (), preset: str | None = None
) -> TrainConfig:
    """Preset, then the YAML file, then the overrides; validated as one :class:`TrainConfig`."""
    data: dict[str, Any] = {}
    if file is not None:
        data = read_config_file(file)
    for text in overrides:
        path, value = parse_override(text)
        if path == ["preset"]:
            data["preset"] = value
            continue
        node = data
        for depth, part in enumerate(path[:-1], 1):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                section = ".".join(path[:depth])
                raise ValueError(f"override {text!r}: {section} was set to {node!r}, not a section with fields")
        node[path[-1]] = value
    name = preset or data.get("preset", "fgshapes")
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    merged = _merge(PRESETS[name], data)
    merged["preset"] = name
    return TrainConfig.model_validate(merged)


def read_config_file(file: str | os.PathLike) -> dict[str, Any]:
    """The settings of a YAML (or JSON) config file; a clear ``ValueError`` naming the file when it is missing,
    empty, binary or not a mapping, or is not valid YAML (with the line)."""
    path = Path(file)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ValueError(f"config file {path} does not exist") from err
    except UnicodeDecodeError as err:
        raise ValueError(f"config file {path} is not text (binary content); expected YAML") from err
    if not text.strip():
        raise ValueError(f"config file {path} is empty; expected YAML settings (see --show-config)")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"config file {path} is not valid YAML{at}: {getattr(err, 'problem', err)}") from err
    if not isinstance(data, dict):
        raise ValueError(
            f"config file {path} must be a mapping of sections (see --show-config), not {type(data).__name__}"
        )
    return data


def dump_config(config: TrainConfig, comments: bool = False) -> str:
    """The config as YAML; ``comments`` adds each field's description and its constraint (``> 0`` ...)."""
    if not comments:
        return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    lines = []
    for name, value in config.model_dump(mode="json").items():
        section = getattr(config, name)
        if not isinstance(section, BaseModel):
            lines.append(yaml.safe_dump({name: value}, sort_keys=False, allow_unicode=True).rstrip())
            continue
        doc = (type(section).__doc__ or "").strip().splitlines()
        lines.append(f"{name}:" + (f"  # {doc[0]}" if doc else ""))
        for field, info in type(section).model_fields.items():
            text = yaml.safe_dump({field: value[field]}, sort_keys=False, allow_unicode=True, width=1_000).rstrip()
            note = "; ".join(filter(None, [info.description, _constraint(info)]))
            body = "\n".join("  " + line for line in text.splitlines())
            lines.append(body + (f"  # {note}" if note and "\n" not in text else ""))
    return "\n".join(lines) + "\n"


def _constraint(info) -> str:
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    parts = [f"{symbols[k]} {getattr(m, k)}" for m in info.metadata for k in symbols if hasattr(m, k)]
    return " and ".join(parts)
