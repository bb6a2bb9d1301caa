"""FG-CLIP 2 properties: walk limits, batched heads == one-by-one, batched RoI == per image, NaFlex buckets,
SigLIP 2 conversion and stage-2 edge cases the reference silently dropped."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.ops import roi_align
from transformers import Siglip2Config, Siglip2Model

from fgclip_data import Stage2Batch
from fgclip_model.fgclip2 import FGCLIP2Config, FGCLIP2Model
from fgclip_model.fgclip2.image_processing import FGCLIP2ImageProcessor, patch_bucket


def _config(**vision) -> FGCLIP2Config:
    return FGCLIP2Config(
        text_config={
            "vocab_size": 300,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_patches": 16,
            "patch_size": 4,
            **vision,
        },
    )


@pytest.fixture
def model() -> FGCLIP2Model:
    torch.manual_seed(0)
    return FGCLIP2Model(_config()).eval()


def _images(shapes, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(len(shapes), length, 48, generator=g)
    mask = torch.zeros(len(shapes), length, dtype=torch.int32)
    for i, (h, w) in enumerate(shapes):
        mask[i, : h * w] = 1
        pixels[i, h * w :] = 0
    return pixels, mask, torch.tensor(shapes)


# ----------------------------------------------------------------------------------------------- text walks


@pytest.mark.parametrize(("walk", "limit"), [("short", 64), ("box", 64), ("long", 196)])
def test_text_limits(model, walk, limit):
    model.get_text_features(torch.randint(4, 300, (1, limit)), walk_type=walk)
    model.get_text_features(torch.randint(4, 300, (1, 7)), walk_type=walk)  # any shorter length works
    with pytest.raises(ValueError, match=f"{limit + 1} tokens but the {walk} walk has {limit} positions"):
        model.get_text_features(torch.randint(4, 300, (1, limit + 1)), walk_type=walk)
    with pytest.raises(ValueError, match="walk_type must be one of"):
        model.get_text_features(torch.randint(4, 300, (1, 5)), walk_type="medium")


@torch.no_grad()
def test_long_walk_reads_ori_then_res(model):
    emb = model.text_model.embeddings
    table = emb.position_table("long", 196)
    assert torch.equal(table[:20], emb.position_embedding_ori.weight[:20])
    assert torch.equal(table[20:], emb.position_embedding_res.weight[20:])


@torch.no_grad()
def test_text_batch_equals_one_by_one_with_masks(model):
    ids = torch.randint(4, 300, (3, 64))
    mask = torch.ones(3, 64, dtype=torch.long)
    mask[0, 10:] = 0
    mask[1, 40:] = 0
    for walk in ("short", "box"):
        batch = model.get_text_features(ids, mask, walk_type=walk)
        single = torch.cat([model.get_text_features(ids[i : i + 1], mask[i : i + 1], walk_type=walk) for i in range(3)])
        torch.testing.assert_close(batch, single, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------- vision / heads


def _reference_map_pooling(head, tokens, mask):
    """The reference's per-sample loop through nn.MultiheadAttention with an additive key mask."""
    outs = []
    for i in range(tokens.shape[0]):
        additive = torch.zeros(1, tokens.shape[1])
        additive[0, mask[i] == 0] = torch.finfo(tokens.dtype).min
        attn_mask = additive[None].expand(head.num_heads, 1, -1)
        a = head.attention(head.probe, tokens[i : i + 1], tokens[i : i + 1], attn_mask=attn_mask)[0]
        outs.append((a + head.mlp(head.layernorm(a)))[:, 0])
    return torch.cat(outs)


@torch.no_grad()
def test_batched_pooling_head_equals_reference_loop(model):
    pixels, mask, shapes = _images([(4, 4), (2, 3), (3, 2)], 16)
    tokens = model.vision_model(pixels, mask, shapes)
    torch.testing.assert_close(
        model.vision_model.head(tokens, mask),
        _reference_map_pooling(model.vision_model.head, tokens, mask),
        atol=1e-5,
        rtol=1e-4,
    )


@torch.no_grad()
def test_image_features_batch_equals_one_by_one(model):
    pixels, mask, shapes = _images([(4, 4), (2, 3), (3, 2), (1, 5)], 16)
    batch = model.get_image_features(pixels, mask, shapes)
    single = torch.cat(
        [model.get_image_features(pixels[i : i + 1], mask[i : i + 1], shapes[i : i + 1]) for i in range(4)]
    )
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=1e-4)
    dense = model.get_image_dense_features(pixels, mask, shapes)
    for i, (h, w) in enumerate(shapes.tolist()):
        one = model.get_image_dense_features(pixels[i : i + 1], mask[i : i + 1], shapes[i : i + 1])
        torch.testing.assert_close(dense[i, : h * w], one[0, : h * w], atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_batched_regions_equal_per_image_roi_align(model):
    pixels, mask, shapes = _images([(4, 4), (2, 3), (3, 2)], 16, seed=1)
    sizes = [(64, 64), (30, 50), (90, 40)]
    boxes = [[[0, 0, 64, 64], [10.5, 3, 40, 33]], [[0, 0, 50, 30], [49, 29, 50, 30]], [[5, 80, 39.9, 90]]]
    got = model.get_image_region_features(pixels, mask, shapes, image_sizes=sizes, region_infos=boxes)
    dense = model.get_image_dense_features(pixels, mask, shapes)
    for i, ((h, w), (height, width)) in enumerate(zip(shapes.tolist(), sizes, strict=True)):
        fmap = dense[i, : h * w].T.reshape(1, -1, h, w)
        grid = torch.tensor(boxes[i]) * torch.tensor([w / width, h / height] * 2)
        rois = torch.cat([torch.zeros(len(grid), 1), grid], dim=1)
        want = roi_align(fmap, rois, (1, 1), 1.0, -1, True)[:, :, 0, 0]
        torch.testing.assert_close(got[i], want, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="x2 < x1"):
        model.get_image_region_features(
            pixels[:1], mask[:1], shapes[:1], image_sizes=[(64, 64)], region_infos=[[[9, 0, 1, 5]]]
        )
    with pytest.raises(ValueError, match="image_sizes"):
        model.get_image_region_features(pixels, mask, shapes)


# ------------------------------------------------------------------------------------------ image processor


@pytest.mark.parametrize(
    ("wh", "bucket", "grid"),
    [
        ((640, 480), 1024, (27, 36)),
        ((224, 224), 256, (16, 16)),
        ((100, 100), 128, (11, 11)),
        ((500, 375), 784, (24, 32)),
        ((1000, 1000), 1024, (32, 32)),
        ((2000, 50), 576, (4, 144)),
    ],
)
def test_dynamic_buckets_match_the_reference_examples(wh, bucket, grid):
    width, height = wh
    assert patch_bucket(height, width) == bucket
    image = Image.fromarray(np.zeros((height, width, 3), dtype=np.uint8))
    out = FGCLIP2ImageProcessor()(image, max_num_patches=16384, return_tensors="pt")  # ignored when dynamic
    assert out["pixel_values"].shape == (1, bucket, 768)
    assert tuple(out["spatial_shapes"][0].tolist()) == grid
    assert int(out["pixel_attention_mask"].sum()) == grid[0] * grid[1]


def test_fixed_budget_is_honoured_and_the_largest_bucket_wins():
    small = Image.fromarray(np.zeros((50, 50, 3), dtype=np.uint8))
    large = Image.fromarray(np.zeros((480, 640, 3), dtype=np.uint8))
    fixed = FGCLIP2ImageProcessor()(large, max_num_patches=64, dynamic_max_patches=False, return_tensors="pt")
    assert fixed["pixel_values"].shape == (1, 64, 768)
    mixed = FGCLIP2ImageProcessor()([small, large], return_tensors="pt")
    assert mixed["pixel_values"].shape[1] == 1024


@pytest.mark.parametrize("budget", [256, 64, 17])
def test_batched_patchification_is_transformers_siglip2_output_bit_for_bit(budget):
    """FG-CLIP 2's processor writes every image into one padded batch: the same arrays as transformers'
    SigLIP 2 processor (resize, rescale, normalise, patches, padding, mask, grid) for mixed sizes and modes."""
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    rng = np.random.default_rng(0)
    sizes = [(64, 224), (225, 31), (16, 16), (130, 130), (9, 300)]
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]
    images.append(Image.fromarray(rng.integers(0, 256, (40, 50), dtype=np.uint8)).convert("RGB"))
    cases = (
        {},
        {"image_mean": [0.1, 0.2, 0.3], "image_std": [0.9, 0.8, 0.7]},
        {"do_normalize": False},
        {"rescale_factor": 1 / 127.5, "image_mean": 1.0},
        {"do_rescale": False},
    )
    for kwargs in cases:
        want = Siglip2ImageProcessorPil()(images, max_num_patches=budget, return_tensors="pt", **kwargs)
        got = FGCLIP2ImageProcessor()(
            images, max_num_patches=budget, dynamic_max_patches=False, return_tensors="pt", **kwargs
        )
        assert set(got) == set(want)
        for key in want:
            assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), key
    lists = FGCLIP2ImageProcessor()(images[:2], max_num_patches=budget, dynamic_max_patches=False)
    assert isinstance(lists["pixel_values"], list)  # no tensors asked for: transformers' own path, its lists


# ------------------------------------------------------------------------------------- SigLIP 2 conversion


@torch.no_grad()
def test_from_siglip2_keeps_siglip2_numbers():
    torch.manual_seed(0)
    siglip = Siglip2Model(
        Siglip2Config(
            text_config={
                "vocab_size": 300,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
            },
            vision_config={
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_patches": 16,
                "patch_size": 4,
            },
        )
    ).eval()
    model = FGCLIP2Model.from_siglip2(siglip)
    assert model.config.model_type == "fgclip2" and model.config.text_config.longtext_len == 196
    ids = torch.randint(4, 300, (3, 64))
    pixels, mask, shapes = _images([(4, 4), (2, 3), (3, 2)], 16)
    torch.testing.assert_close(model.get_text_features(ids), siglip.get_text_features(ids).pooler_output)
    want = siglip.get_image_features(
        pixel_values=pixels, pixel_attention_mask=mask, spatial_shapes=shapes
    ).pooler_output
    torch.testing.assert_close(model.get_image_features(pixels, mask, shapes), want, atol=1e-5, rtol=1e-4)
    # heads copied, long tables stretched 64 -> 196, dense head = pooling head
    torch.testing.assert_close(model.get_text_features(ids, walk_type="box"), model.get_text_features(ids))
    emb = model.text_model.embeddings
    assert torch.equal(emb.position_embedding_res.weight[:20], emb.position_embedding.weight[:20])
    assert torch.equal(emb.position_embedding_ori.weight[24], emb.position_embedding.weight[21])
    assert torch.equal(model.dense_feature_head.probe, model.vision_model.head.probe)
    assert model.logit_scale_hardneg.item() == pytest.approx(4.6052)


# --------------------------------------------------------------------------------------- stage-2 edge cases


def _stage2_batch(box_nums, hard_nums, negatives=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = len(box_nums)
    pixels, mask, shapes = _images([(4, 4), (2, 3), (3, 2), (4, 2)][:b], 16, seed)
    xy = torch.rand(b, 4, 2, generator=g) * 0.5
    boxes = torch.cat([xy, xy + 0.3], -1)
    keep = torch.arange(4)[None] < torch.tensor(box_nums)[:, None]
    hard_keep = torch.arange(4)[None] < torch.tensor(hard_nums)[:, None]
    h = sum(hard_nums)
    return {
        "pixel_values": pixels,
        "pixel_attention_mask": mask,
        "spatial_shapes": shapes,
        "text_short": torch.randint(4, 300, (b, 64), generator=g),
        "text_long": torch.randint(4, 300, (b, 196), generator=g),
        "box_infos": torch.where(keep[..., None], boxes, 0.0),
        "box_nums": torch.tensor(box_nums),
        "box_texts": torch.randint(4, 300, (4 * b, 64), generator=g),
        "hard_infos": torch.where(hard_keep[..., None], boxes, 0.0),
        "hard_nums": torch.tensor(hard_nums),
        "hard_texts": torch.randint(4, 300, (h, 1 + negatives, 64), generator=g),
    }


def test_few_boxes_never_drop_losses_silently(model):
    """The reference wrapped these terms in a bare except: 1 box (squeeze), < 10 boxes (topk) or no hard box
    silently removed them. Here each case gives finite, present terms and finite gradients."""
    model.train()
    for box_nums, hard_nums in (([1, 0], [0, 0]), ([2, 1], [1, 0]), ([0, 0], [0, 0]), ([4, 4, 4], [2, 1, 3])):
        out = model.compute_loss(Stage2Batch(**_stage2_batch(box_nums, hard_nums)))
        for term in ("loss", "loss_short", "loss_long", "loss_region", "loss_tic", "loss_hard"):
            assert torch.isfinite(getattr(out, term)), (box_nums, term)
        model.zero_grad()
        out.loss.backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()


@torch.no_grad()
def test_tic_with_fewer_than_ten_texts_uses_what_exists(model):
    from fgclip_model.losses import text_intra_contrastive_loss

    text = F.normalize(torch.randn(6, 8), dim=-1)
    valid = torch.tensor([True, True, True, False, False, False])
    got = text_intra_contrastive_loss(text, valid)
    sim = text[:3] @ text[:3].T
    sim.fill_diagonal_(0)
    sim[sim > 0.95] = 0
    torch.testing.assert_close(got, torch.logsumexp(sim, dim=1).mean())


def test_hard_negative_terms_with_uneven_negative_counts():
    from fgclip_model.losses import fgclip2_hard_negative_terms

    torch.manual_seed(0)
    region = F.normalize(torch.randn(2, 8), dim=-1)
    cands = F.normalize(torch.randn(2, 4, 8), dim=-1)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    scale, margin = torch.tensor(10.0), 0.5
    terms = fgclip2_hard_negative_terms(region, cands, scale, margin, mask)
    # written out per box: box 0 has 3 negatives, box 1 has 1
    real = [cands[0], cands[1, :2]]
    pair = torch.stack([F.cross_entropy(scale * (real[i] @ region[i])[None], torch.tensor([0])) for i in range(2)])
    torch.testing.assert_close(terms.pair, pair.mean())
    hinges = torch.cat(
        [(margin + scale * (real[i][1:] @ region[i]) - scale * real[i][0] @ region[i]).clamp(min=0) for i in range(2)]
    )
    torch.testing.assert_close(terms.rank, hinges.mean())
    columns = torch.cat([cands[:, 0], cands[0, 1:], cands[1, 1:2]])
    i2t = F.cross_entropy(scale * region @ columns.T, torch.arange(2))
    t2i = F.cross_entropy(scale * cands[:, 0] @ region.T, torch.arange(2))
    torch.testing.assert_close(terms.itc, (i2t + t2i) / 2)


def test_position_grid_resize_equals_antialiased_interpolate():
    """The weight-matrix resize (no per-shape loop, ONNX-exportable) is torch's antialiased bilinear resize of
    each image's grid, for up- and down-sampling, with padding rows repeating row 0."""
    import torch.nn.functional as F

    from fgclip_model.fgclip2.modeling import resize_position_grid

    torch.manual_seed(0)
    for side in (4, 16):
        grid = torch.randn(side, side, 12)
        shapes = torch.tensor([[3, 5], [side, side], [side + 3, 2], [1, 7], [2 * side, side // 2], [5, 5]])
        length = int((shapes[:, 0] * shapes[:, 1]).max()) + 3
        out = resize_position_grid(grid, shapes, length)
        for b, (h, w) in enumerate(shapes.tolist()):
            ref = F.interpolate(grid.permute(2, 0, 1)[None], size=(h, w), mode="bilinear", antialias=True)
            torch.testing.assert_close(out[b, : h * w], ref[0].reshape(12, h * w).T, atol=1e-6, rtol=0)
            assert torch.equal(out[b, h * w :], out[b, :1].expand(length - h * w, -1))


@torch.no_grad()
def test_local_dense_head_init_starts_from_the_backbone_tokens(golden):
    """``dense_head_init="local"``: a fresh dense head keeps each patch close to its own backbone token (the default
    random head mixes all patches, so every region starts alike); a checkpoint's head is loaded unchanged."""
    from fgclip_model.tiny import fgclip2_config

    torch.manual_seed(0)
    pixels = torch.randn(2, 64, 3 * 16 * 16)
    mask, shapes = torch.ones(2, 64, dtype=torch.long), torch.tensor([[8, 8]] * 2)
    spread = {}
    for kind in ("random", "local"):
        torch.manual_seed(0)
        config = fgclip2_config(num_patches=64)
        config.dense_head_init = kind
        model = FGCLIP2Model(config).eval()
        tokens = model.vision_model(pixels, mask, shapes)
        dense = model.dense_feature_head.dense(tokens, mask)
        same = F.cosine_similarity(dense, tokens, dim=-1).mean().item()
        # how different the patches' dense features are from one another (1 - mean pairwise cosine)
        normed = F.normalize(dense, dim=-1)
        spread[kind] = (same, 1 - (normed @ normed.transpose(1, 2)).mean().item())
    assert spread["local"][0] > 0.8 and spread["local"][0] > spread["random"][0] + 0.2
    assert spread["local"][1] > 2 * spread["random"][1]
    with pytest.raises(Exception, match="dense_head_init must be 'random' or 'local'"):  # huggingface_hub's
        FGCLIP2Config(dense_head_init="zeros")
    loaded = FGCLIP2Model.from_pretrained(golden / "v2_s1_fixed" / "model", dense_head_init="local")
    reference = FGCLIP2Model.from_pretrained(golden / "v2_s1_fixed" / "model")
    assert torch.equal(
        loaded.dense_feature_head.attention.in_proj_weight, reference.dense_feature_head.attention.in_proj_weight
    )


def test_sincos_position_init_codes_row_and_column(golden):
    """``position_init="sincos"``: a fresh grid holds 2-D sine-cosine features — each token's position is readable
    (no two cells alike, the row code shared along a row) at content scale, unlike SigLIP's std-0.02 grid; a
    checkpoint's grid is loaded unchanged."""
    from fgclip_model.fgclip2.modeling import sincos_grid
    from fgclip_model.tiny import fgclip2_config

    tables = {}
    for kind in ("normal", "sincos"):
        torch.manual_seed(0)
        config = fgclip2_config(width=32, num_patches=64)
        config.position_init = kind
        tables[kind] = FGCLIP2Model(config).vision_model.embeddings.position_embedding.weight.detach()
    grid = tables["sincos"]
    assert torch.equal(grid, sincos_grid(8, 32))
    assert grid.pow(2).mean().sqrt() > 0.5 > 10 * tables["normal"].pow(2).mean().sqrt()
    cells = grid.reshape(8, 8, 32)
    assert torch.equal(cells[3, 0, :16], cells[3, 7, :16]) and torch.equal(cells[0, 5, 16:], cells[6, 5, 16:])
    distances = torch.cdist(grid, grid) + torch.eye(64) * 1e9
    assert distances.min() > 0.5  # no two cells share a code
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_grid(4, 30)
    with pytest.raises(Exception, match="position_init must be 'normal' or 'sincos'"):  # huggingface_hub's
        FGCLIP2Config(position_init="zeros")
    loaded = FGCLIP2Model.from_pretrained(golden / "v2_s1_fixed" / "model", position_init="sincos")
    reference = FGCLIP2Model.from_pretrained(golden / "v2_s1_fixed" / "model")
    key = "vision_model.embeddings.position_embedding.weight"
    assert torch.equal(loaded.state_dict()[key], reference.state_dict()[key])


def test_mimetic_attention_init_shapes_the_attention_products(golden):
    """``attention_init="mimetic"``: every fresh vision self-attention layer starts with each head's query-key
    product near ``0.7·Z + 0.7·I`` (tokens attend to tokens like them) and its value-output product near
    ``0.4·Z − 0.4·I``; xavier products have no such diagonal. The text tower and a checkpoint's weights are left
    as they are."""
    from fgclip_model.fgclip2.modeling import mimetic_factors
    from fgclip_model.tiny import fgclip2_config

    @torch.no_grad()
    def products(model):
        out = []
        for layer in model.vision_model.encoder.layers:
            a = layer.self_attn
            d = a.head_dim
            rows = [slice(h * d, (h + 1) * d) for h in range(a.num_heads)]
            qk = [a.q_proj.weight[r].T @ a.k_proj.weight[r] for r in rows]
            out.append((torch.stack(qk), a.v_proj.weight.T @ a.out_proj.weight.T))
        return out

    models = {}
    for kind in ("xavier", "mimetic"):
        torch.manual_seed(0)
        config = fgclip2_config(width=64, layers=2, heads=2)
        config.attention_init = kind
        models[kind] = FGCLIP2Model(config)
    for qk, vo in products(models["mimetic"]):
        eye = torch.eye(qk.shape[-1], dtype=torch.bool)
        # each head: mostly the identity
        assert qk.diagonal(dim1=1, dim2=2).mean() > 0.25 > 3 * qk[:, ~eye].abs().mean()
        assert float(vo.diagonal().mean()) == pytest.approx(-0.4, abs=0.03)  # full rank: 0.4·Z − 0.4·I itself
    for qk, vo in products(models["xavier"]):
        assert abs(qk.diagonal(dim1=1, dim2=2).mean()) < 0.1 and abs(vo.diagonal().mean()) < 0.1
    text = lambda m: m.text_model.encoder.layers[0].self_attn.q_proj.weight  # noqa: E731
    assert torch.equal(text(models["mimetic"]), text(models["xavier"]))  # same seed, same text tower
    a, b = mimetic_factors(16, 16, 0.4, 0.4, sign=-1.0)
    assert float((a @ b.T).diagonal().mean()) == pytest.approx(-0.4, abs=0.1)
    with pytest.raises(Exception, match="attention_init must be 'xavier' or 'mimetic'"):  # huggingface_hub's
        FGCLIP2Config(attention_init="identity")
    loaded = FGCLIP2Model.from_pretrained(golden / "v2_s1_fixed" / "model", attention_init="mimetic")
    reference = FGCLIP2Model.from_pretrained(golden / "v2_s1_fixed" / "model")
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in loaded.state_dict().items())


def test_initialisation_options_are_not_saved_and_old_configs_still_load(tmp_path):
    """dense_head_init / position_init / attention_init decide how fresh weights start (training from scratch):
    released config.json files must not carry them, and checkpoints saved with them must still load."""
    import json

    from fgclip_model.fgclip2.configuration import CONSTRUCTION_OPTIONS
    from fgclip_model.tiny import fgclip2_config

    config = fgclip2_config()
    config.dense_head_init, config.position_init, config.attention_init = "local", "sincos", "mimetic"
    model = FGCLIP2Model(config)
    model.save_pretrained(tmp_path / "new")
    saved = json.loads((tmp_path / "new" / "config.json").read_text())
    assert not set(CONSTRUCTION_OPTIONS) & set(saved) and saved["model_type"] == "fgclip2"
    # an earlier checkpoint's config.json, with the options in it
    (tmp_path / "new" / "config.json").write_text(json.dumps({**saved, "attention_init": "mimetic"}))
    loaded = FGCLIP2Model.from_pretrained(tmp_path / "new")
    assert loaded.config.attention_init == "mimetic"
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize(("walk", "length"), [("short", 64), ("long", 196)])
def test_pooled_text_computes_only_the_last_position_and_equals_the_full_tower(layers, attention, walk, length):
    # the pooled path (features, training) runs the last block at the last position only; encode() runs every
    # position through every block: the pooled states and their gradients must agree
    torch.manual_seed(0)
    config = _config()
    config.text_config.num_hidden_layers = layers
    model = FGCLIP2Model(config)
    model.set_attn_implementation(attention)
    ids = torch.randint(1, 300, (5, length))
    mask = torch.ones_like(ids)
    mask[1, 40:] = 0  # right padding
    mask[2, :30] = 0  # left padding
    ids = ids * mask
    tower = model.text_model
    weights = [p for p in tower.parameters() if p.requires_grad]
    probe = torch.randn(5, config.text_config.hidden_size)
    pooled = tower(ids, mask, walk)
    grads_pooled = torch.autograd.grad((pooled * probe).sum(), weights, allow_unused=True)
    full = tower.encode(ids, mask, walk).pooler_output
    grads_full = torch.autograd.grad((full * probe).sum(), weights, allow_unused=True)
    torch.testing.assert_close(pooled, full, rtol=0, atol=2e-6)
    for got, want in zip(grads_pooled, grads_full, strict=True):
        if want is None:  # the head and the other walk's position table
            assert got is None
            continue
        assert (got - want).abs().max() <= 1e-5 * max(want.abs().max(), 1.0)  # float32 sums in another order
    unmasked = tower(ids, None, walk)  # no mask: every position is a key, as the released processor's ids
    torch.testing.assert_close(unmasked, tower.encode(ids, None, walk).pooler_output, rtol=0, atol=2e-6)
    assert not torch.allclose(unmasked, pooled)  # the mask did reach the last block's keys
