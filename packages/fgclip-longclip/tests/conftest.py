"""Tiny Long-CLIP fine-tuning runs on a small FG-Shapes set generated once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def fgshapes_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("fgclip-cache")


@pytest.fixture
def tiny(fgshapes_cache, monkeypatch, tmp_path):
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
        "--model.size.vision_config.hidden_size=32",
        "--model.size.vision_config.intermediate_size=64",
        "--model.size.vision_config.num_hidden_layers=1",
        "--model.size.vision_config.num_attention_heads=2",
        "--model.size.vision_config.image_size=64",
        "--model.size.projection_dim=32",
    ]


@pytest.fixture(scope="session", autouse=True)
def _end_process_group():
    yield
    from fgclip_train.loop import finish_distributed

    finish_distributed()
