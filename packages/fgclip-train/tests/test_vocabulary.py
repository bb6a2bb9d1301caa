"""``data.extend_vocabulary``: the token-embedding table grows for the training records' new words (new rows at the
mean of the known ones, known rows unchanged) and trains even under LoRA; a run from a word-level checkpoint saves
the extended tokenizer with a model that loads; a subword tokenizer is refused or left alone."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from fgclip_data.tokenizer import build_word_tokenizer
from fgclip_model import FGCLIP2Model, FGCLIPModel
from fgclip_model.tiny import fgclip2_config, fgclip_config
from fgclip_train.adapters import add_lora
from fgclip_train.preflight import RunError
from fgclip_train.vocabulary import extend_vocabulary, grow_token_embeddings, token_embedding

TEXTS = ["a red apple beside a blue cup", "two apples", "a cup"]


def _fgclip2(vocab: int) -> FGCLIP2Model:
    return FGCLIP2Model(fgclip2_config(layers=1, vocab_size=vocab))


def test_growing_keeps_known_rows_and_starts_new_ones_at_the_mean():
    model = _fgclip2(10)
    old = token_embedding(model).weight.detach().clone()
    add_lora(model, rank=2, alpha=4)  # everything else frozen
    table = grow_token_embeddings(model, [10, 11, 12])
    assert table.weight.shape == (13, old.shape[1]) and model.config.text_config.vocab_size == 13
    assert torch.equal(table.weight[:10], old)
    assert torch.allclose(table.weight[10:], old.mean(0).expand(3, -1))
    assert table.weight.requires_grad  # new words must learn, LoRA or not
    ids = torch.tensor([[4, 10, 11, 1]])
    model.get_text_features(ids, walk_type="short").sum().backward()
    assert table.weight.grad[10].abs().sum() > 0


def test_ids_inside_the_table_are_reset_without_growing():
    """FG-CLIP v1's CLIP id layout: new words take unused ids below BOS 49406; the table keeps its size."""
    model = FGCLIPModel(fgclip_config(layers=1, vocab_size=1000))
    old = token_embedding(model).weight.detach().clone()
    table = grow_token_embeddings(model, [7, 8])
    assert table.weight.shape == old.shape
    known = torch.ones(1000, dtype=torch.bool)
    known[[7, 8]] = False
    assert torch.allclose(table.weight[7], old[known].mean(0)) and torch.equal(table.weight[9:], old[9:])


def test_extend_vocabulary_grows_tokenizer_and_model_together():
    tokenizer = build_word_tokenizer(["a red square", "a blue circle"], "fgclip2")
    model = _fgclip2(len(tokenizer.get_vocab()))
    extended = extend_vocabulary(model, tokenizer, TEXTS, "model.init x")
    assert token_embedding(model).num_embeddings == len(extended.get_vocab()) == len(tokenizer.get_vocab()) + 5
    assert extended.unk_token_id not in extended(TEXTS[0])["input_ids"]
    assert extend_vocabulary(model, extended, TEXTS, "x") is extended  # nothing new: unchanged


def _bpe() -> PreTrainedTokenizerFast:
    bpe = Tokenizer(models.BPE(vocab={"<unk>": 0, "a": 1, "p": 2, "ap": 3}, merges=[("a", "p")], unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>")


def test_a_subword_tokenizer_is_refused_when_asked_and_left_alone_on_auto():
    model = _fgclip2(4)
    with pytest.raises(RunError, match=r"data.extend_vocabulary: model.init ckpt: the tokenizer is a BPE tokenizer"):
        extend_vocabulary(model, _bpe(), TEXTS, "model.init ckpt", True)
    tokenizer = _bpe()
    assert extend_vocabulary(model, tokenizer, TEXTS, "model.init ckpt", "auto") is tokenizer
    assert token_embedding(model).num_embeddings == 4


def _records(folder, words: str) -> None:
    """Eight FineHARD records about ``words`` (images from the FG-Shapes set the tiny runs use)."""
    folder.mkdir(parents=True)
    rows = [
        {
            "f_path": f"img{i}.png",
            "caption": f"a {words} on a table number {i}",
            "short_caption": f"a {words}",
            "bbox_info": [
                {"bbox": [0.1, 0.1, 0.6, 0.7], "short_expr": words, "long_expr": f"the {words}", "negatives": []}
            ],
        }
        for i in range(8)
    ]
    (folder / "records.json").write_text(json.dumps(rows))


@pytest.mark.slow  # two short runs: ~15 s alone, a minute on a busy 2-core machine
def test_a_run_from_a_word_level_checkpoint_saves_the_extended_tokenizer(tiny_overrides, tmp_path, capfd):
    """FG-Shapes run -> checkpoint; fine-tuning it (LoRA) on records with new words: the checkpoint's tokenizer
    knows them, its token embeddings grew and moved for them, and the model loads."""
    from PIL import Image
    from safetensors.torch import load_file

    import fgclip_model
    from fgclip_train.config import load_config
    from fgclip_train.loop import train

    base = [*tiny_overrides, "--runtime.eval_before=false", "--runtime.eval_after=false", "--schedule.max_steps=2"]
    start = train(load_config(overrides=base))["checkpoint"]
    images = tmp_path / "images"
    images.mkdir()
    for i in range(8):
        Image.new("RGB", (64, 48), (40 * i, 100, 200)).save(images / f"img{i}.png")
    _records(tmp_path / "train", "purple umbrella")
    out = tmp_path / "ft"
    train(
        load_config(
            overrides=[
                *base,
                f"--runtime.output_dir={out}",
                f"--model.init={start}/model",
                f"--data.train={tmp_path / 'train'}",
                f"--data.images={images}",
                "--data.extend_vocabulary=true",
                "--model.lora={rank: 2, alpha: 4}",
                "--optim.lr=1e-2",
            ]
        )
    )
    assert "vocabulary extended by" in capfd.readouterr().out
    before = AutoTokenizer.from_pretrained(f"{start}/model")
    folder = out / "checkpoint-0000002" / "model"
    after = AutoTokenizer.from_pretrained(folder)
    new = {w: i for w, i in after.get_vocab().items() if w not in before.get_vocab()}
    assert {"umbrella", "table", "number"} <= set(new)
    assert all(after.get_vocab()[w] == i for w, i in before.get_vocab().items())
    weights = load_file(folder / "model.safetensors")
    table = weights["text_model.embeddings.token_embedding.weight"]
    assert table.shape[0] == max(new.values()) + 1
    start_table = load_file(f"{start}/model/model.safetensors")["text_model.embeddings.token_embedding.weight"]
    mean = start_table.mean(0)
    assert not torch.allclose(table[new["umbrella"]], mean)  # trained away from its starting point
    model, processor = fgclip_model.load(folder)  # strict keys, the grown vocab_size in its config
    assert model.config.text_config.vocab_size == table.shape[0]
    assert processor.tokenizer.unk_token_id not in processor.tokenizer("a purple umbrella")["input_ids"]


def test_the_finetune_presets_extend_word_level_tokenizers_only():
    from fgclip_train.config import load_config

    for preset in ("fgclip2-finetune", "fgclip-finetune"):
        assert load_config(preset=preset).data.extend_vocabulary == "auto"
    assert load_config().data.extend_vocabulary is False
    assert load_config(overrides=["--data.extend_vocabulary=true"]).data.extend_vocabulary is True
    with pytest.raises(ValueError):
        load_config(overrides=["--data.extend_vocabulary=sometimes"])
