"""Loading FG-CLIP 2 through transformers' Auto classes and pipeline logs nothing the user did not ask for."""

from __future__ import annotations

import logging
import shutil

import pytest
from transformers import AutoImageProcessor, AutoProcessor, pipeline
from transformers.utils import logging as hf_logging

import fgclip_model
from fgclip_model import FGCLIP2ImageProcessor


@pytest.fixture
def fgclip2_folder(golden, gemma_like_tokenizer, tmp_path):
    folder = tmp_path / "fgclip2"
    shutil.copytree(golden / "v2_s1_fixed" / "model", folder)
    gemma_like_tokenizer.save_pretrained(folder)
    FGCLIP2ImageProcessor().save_pretrained(folder)
    return folder


@pytest.fixture
def transformers_warnings(caplog):
    """transformers' warnings of the test (its once-only warnings re-armed, so an earlier test cannot hide one)."""
    logging.Logger.warning_once.cache_clear()
    hf_logging.enable_propagation()
    caplog.set_level(logging.WARNING, logger="transformers")
    yield lambda: [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    hf_logging.disable_propagation()


def test_fgclip2_loads_without_backend_warning(fgclip2_folder, transformers_warnings, capfd):
    image_processor = AutoImageProcessor.from_pretrained(fgclip2_folder)
    assert type(image_processor) is FGCLIP2ImageProcessor
    assert type(AutoImageProcessor.from_pretrained(fgclip2_folder, backend="pil")) is FGCLIP2ImageProcessor
    AutoProcessor.from_pretrained(fgclip2_folder)
    classifier = pipeline("zero-shot-image-classification", model=str(fgclip2_folder))
    assert type(classifier.image_processor) is FGCLIP2ImageProcessor
    fgclip_model.load(fgclip2_folder)
    noise = [m for m in transformers_warnings() if "backend" in m]
    assert not noise, noise
    assert "Falling back" not in capfd.readouterr().err
