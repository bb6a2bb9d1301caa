"""Tiny, fast stage-2 runs on a small FG-Shapes set generated once per session."""

from __future__ import annotations

import os

import pytest

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def subprocess_env(**extra: str) -> dict[str, str]:
    """This environment without the launcher variables that in-process runs leave behind, plus ``extra``."""
    return {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES} | extra


@pytest.fixture
def clean_env():
    return subprocess_env


@pytest.fixture(scope="session")
def fgshapes_cache(tmp_path_factory):
    """A cache folder for FG-Shapes sets; FGCLIP_CACHE points there for every run of the session."""
    return tmp_path_factory.mktemp("fgclip-cache")


@pytest.fixture
def tiny_overrides(fgshapes_cache, monkeypatch, tmp_path):
    """Overrides that make the default preset run in seconds."""
    monkeypatch.setenv("FGCLIP_CACHE", str(fgshapes_cache))  # read at each call (fgclip_data.fgshapes.cache_dir)
    return [
        "--data.fgshapes_n=120",
        "--data.val_limit=24",
        "--schedule.batch_size=8",
        "--schedule.warmup_steps=2",
        f"--runtime.output_dir={tmp_path / 'run'}",
        "--model.size.text_config.hidden_size=32",
        "--model.size.text_config.intermediate_size=64",
        "--model.size.text_config.num_hidden_layers=1",
        "--model.size.text_config.num_attention_heads=2",
        "--model.size.vision_config.num_attention_heads=2",
        "--model.size.vision_config.hidden_size=32",
        "--model.size.vision_config.intermediate_size=64",
        "--model.size.vision_config.num_hidden_layers=1",
        "--data.max_num_patches=16",
        "--data.min_num_patches=null",
    ]


@pytest.fixture(scope="session", autouse=True)
def _end_process_group():
    """In-process runs share one process group (DeepSpeed caches its groups); end it once, at the end."""
    yield
    from fgclip_train.loop import finish_distributed

    finish_distributed()
