"""Initialisation from a timm ViT (the paper's ImageNet ViT-B/32), on random-weight timm models (no download)."""

import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from vilt_testing import randomize_, tiny_vilt_config

from detrvilt import ViltConfig, ViltForQuestionAnswering, ViltModel
from detrvilt.modeling.vilt import convert_timm_vit_state_dict, load_timm_vit_weights


def tiny_vit(img_size=128) -> VisionTransformer:
    """A timm ViT with the tiny ViLT config's shapes (32 wide, 2 blocks, 4 heads, MLP 64, 32-pixel patches)."""
    vit = VisionTransformer(img_size=img_size, patch_size=32, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0,
                            num_classes=10)
    return randomize_(vit, seed=1, std=0.09).eval()


def test_blocks_and_patch_embedding_compute_what_timm_computes():
    vit = tiny_vit()
    model = ViltModel(tiny_vilt_config()).eval()
    missing = load_timm_vit_weights(model, vit)
    assert missing and all(key.startswith(("embeddings.text_embeddings.", "embeddings.modality_type", "pooler."))
                           for key in missing)
    images = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        # A full 128 x 128 image has the table's own 4 x 4 grid: the interpolation is the identity.
        ours, mask, _ = model.embeddings.image_embeddings(images, torch.ones(2, 128, 128))
        theirs = vit._pos_embed(vit.patch_embed(images))  # [CLS; patches] + positions
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
        assert mask.all()
        x = ours
        for layer in model.encoder.layers:
            x = layer(x)[0]
        torch.testing.assert_close(model.layernorm(x), vit.norm(vit.blocks(theirs)), atol=1e-5, rtol=0)


def test_loading_works_through_a_head_model_and_a_state_dict():
    vit = tiny_vit()
    model = ViltForQuestionAnswering(tiny_vilt_config())
    load_timm_vit_weights(model, vit.state_dict())
    assert torch.equal(model.vilt.encoder.layers[1].mlp.fc2.weight, vit.blocks[1].mlp.fc2.weight)
    assert torch.equal(model.vilt.embeddings.patch_projection.weight, vit.patch_embed.proj.weight)


def test_position_table_of_another_grid_is_resampled():
    vit = tiny_vit(img_size=64)  # a 2 x 2 position grid
    model = ViltModel(tiny_vilt_config())  # a 4 x 4 table
    load_timm_vit_weights(model, vit)
    assert model.embeddings.position_embeddings.shape == (1, 17, 32)
    torch.testing.assert_close(model.embeddings.position_embeddings[:, 0], vit.pos_embed[:, 0])


def test_vit_base_patch32_384_maps_exactly_onto_vilt_b32():
    state_dict = timm.create_model("vit_base_patch32_384", pretrained=False).state_dict()
    converted = convert_timm_vit_state_dict(state_dict, grid_size=12)
    ours = {k: v.shape for k, v in ViltModel(ViltConfig(num_hidden_layers=12)).state_dict().items()}
    vit_part = {k for k in ours if not k.startswith(("embeddings.text_embeddings.", "embeddings.modality_type",
                                                     "pooler."))}
    assert set(converted) == vit_part
    assert all(converted[k].shape == ours[k] for k in converted)


def test_mismatched_vit_raises():
    vit = tiny_vit()
    with pytest.raises(ValueError, match="expects"):
        load_timm_vit_weights(ViltModel(tiny_vilt_config(hidden_size=64)), vit)
    with pytest.raises(ValueError, match="fewer blocks"):
        load_timm_vit_weights(ViltModel(tiny_vilt_config(num_hidden_layers=3)), vit)


def test_pretrained_vit_offline_fails_clearly():
    with pytest.raises(RuntimeError, match="use_pretrained_vit=False"):
        ViltModel(tiny_vilt_config(use_pretrained_vit=True, vit="vit_tiny_patch16_224"))
