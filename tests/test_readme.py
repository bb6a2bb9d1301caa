"""The README's Python examples run as written (on the tiny golden checkpoints instead of released weights)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


@pytest.mark.slow  # every README example on the golden checkpoints
def test_readme_examples_run(golden, tmp_path, monkeypatch, clip_tokenizer, gemma_like_tokenizer):
    from transformers import CLIPConfig, CLIPModel

    v1, v2 = tmp_path / "fg-clip-base", tmp_path / "fg-clip2-base"
    shutil.copytree(golden / "v1_s0" / "model", v1)
    clip_tokenizer.save_pretrained(v1)
    shutil.copytree(golden / "v2_s0_dynamic" / "model", v2)
    gemma_like_tokenizer.save_pretrained(v2)
    shutil.copy(golden / "longclip_s0" / "longclip-tiny.pt", tmp_path / "longclip-B.pt")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(tmp_path / "cat.jpg")
    monkeypatch.chdir(tmp_path)
    from transformers import CLIPImageProcessor

    from fgclip_data.fgshapes.generate import GenerateOptions, generate

    generate(tmp_path / "data" / "fgshapes", GenerateOptions(n=20, workers=1))

    blocks = _python_blocks()
    assert len(blocks) >= 4
    namespace = {
        "tokenizer": clip_tokenizer,
        "clip_image_processor": CLIPImageProcessor(),
        "some_hf_clip_model": CLIPModel(
            CLIPConfig(
                text_config={
                    "hidden_size": 32,
                    "intermediate_size": 64,
                    "num_hidden_layers": 1,
                    "num_attention_heads": 2,
                },
                vision_config={
                    "hidden_size": 32,
                    "intermediate_size": 64,
                    "num_hidden_layers": 1,
                    "num_attention_heads": 2,
                    "image_size": 32,
                    "patch_size": 16,
                },
                projection_dim=16,
            )
        ),
    }
    for block in blocks:
        code = block.replace("path/to/fg-clip-base", str(v1)).replace("path/to/fg-clip2-base", str(v2))
        try:
            exec(compile(code, "README.md", "exec"), namespace)
        except Exception as err:  # pragma: no cover - the message is the point
            pytest.fail(f"README example failed: {err!r}\n{code}")
    assert (tmp_path / "white_cat.png").is_file()
    batch = namespace["collate"]([namespace["data"][i] for i in range(2)])
    assert batch.pixel_values.shape == (2, 3, 224, 224)
