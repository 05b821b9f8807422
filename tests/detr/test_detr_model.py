"""DETR model properties: attention paths, save/load, gradients, frozen parts, input checks, positions."""

import pytest
import torch
from conftest import detection_labels, padded_pair, tiny_detr_config
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForObjectDetection

from detrvilt import DetrConfig, DetrForObjectDetection, DetrModel
from detrvilt.modeling.detr.backbone_detr import DetrLearnedPositionEmbedding, DetrSinePositionEmbedding


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DetrForObjectDetection(tiny_detr_config()).eval()


def test_output_shapes(model):
    pixel_values, pixel_mask = padded_pair()
    with torch.no_grad():
        out = model(pixel_values, pixel_mask=pixel_mask)
        aux = model(pixel_values, pixel_mask=pixel_mask, output_auxiliary_outputs=True).auxiliary_outputs
    assert out.logits.shape == (2, 12, 6) and out.pred_boxes.shape == (2, 12, 4)
    assert out.auxiliary_outputs is None  # evaluation without labels: see auxiliary_outputs_wanted
    assert len(aux) == 2 and aux[0]["pred_boxes"].shape == (2, 12, 4)
    assert ((out.pred_boxes >= 0) & (out.pred_boxes <= 1)).all()
    assert out.loss is None and out.loss_dict is None
    assert out.feature_mask.shape == (2, 4, 4)  # stride 32 on a 128x128 padded batch
    assert out.feature_mask[1, :, 3:].logical_not().all()  # the second image is 80 pixels wide: 3 cells of 4


def test_sdpa_equals_explicit_attention(model):
    pixel_values, pixel_mask = padded_pair()
    with torch.no_grad():
        fast = model(pixel_values, pixel_mask=pixel_mask)
        explicit = model(pixel_values, pixel_mask=pixel_mask, output_attentions=True)
    torch.testing.assert_close(fast.logits, explicit.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.pred_boxes, explicit.pred_boxes, atol=1e-5, rtol=0)
    assert fast.encoder_attentions is None
    assert len(explicit.encoder_attentions) == 2 and explicit.encoder_attentions[0].shape == (2, 4, 16, 16)
    assert explicit.cross_attentions[0].shape == (2, 4, 12, 16)
    cross = explicit.cross_attentions[-1]
    torch.testing.assert_close(cross.sum(-1), torch.ones(2, 4, 12))
    padding = ~explicit.feature_mask.flatten(1)  # (B, H*W)
    assert cross.permute(0, 2, 1, 3)[padding[:, None, None, :].expand(-1, 12, 4, -1)].abs().max() == 0


def test_hidden_states_and_official_decoder_norm(model):
    with torch.no_grad():
        out = model.model(*padded_pair(), output_hidden_states=True)
    assert len(out.encoder_hidden_states) == 3 and len(out.decoder_hidden_states) == 4
    assert out.decoder_hidden_states[0].abs().max() == 0  # the decoder starts from zeros
    # Official DETR: the residual stream is left alone; a normalized copy of every layer's output feeds the heads.
    for i, state in enumerate(out.decoder_hidden_states[1:]):
        torch.testing.assert_close(out.intermediate_hidden_states[i], model.model.decoder.layernorm(state))


def test_save_and_load_through_our_class_and_auto(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    saved = load_file(tmp_path / "model.safetensors")
    assert "class_labels_classifier.weight" in saved
    assert AutoConfig.from_pretrained(tmp_path).model_type == "detrvilt_detr"
    pixel_values, pixel_mask = padded_pair()
    with torch.no_grad():
        expected = model(pixel_values, pixel_mask=pixel_mask)
        for loaded in (DetrForObjectDetection.from_pretrained(tmp_path),
                       AutoModelForObjectDetection.from_pretrained(tmp_path)):
            assert type(loaded) is DetrForObjectDetection
            actual = loaded.eval()(pixel_values, pixel_mask=pixel_mask)
            assert torch.equal(actual.logits, expected.logits) and torch.equal(actual.pred_boxes, expected.pred_boxes)


def test_auto_classes_are_registered():
    config = tiny_detr_config()
    assert isinstance(AutoModelForObjectDetection.from_config(config), DetrForObjectDetection)
    assert isinstance(AutoModel.from_config(config), DetrModel)


def test_every_trainable_parameter_gets_a_gradient_and_frozen_parts_stay_frozen():
    model = DetrForObjectDetection(tiny_detr_config(dropout=0.0)).train()
    frozen = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}
    frozen_buffers = {name: b.clone() for name, b in model.named_buffers()}
    assert any(name.startswith("model.backbone.model.conv1") for name in frozen)
    assert any(name.startswith("model.backbone.model.layer1") for name in frozen)
    assert not any(".layer2." in name or "transformer" in name for name in frozen)

    out = model(*padded_pair(), labels=detection_labels())
    out.loss.backward()
    missing = {name for name, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum())}
    # The first decoder layer's self-attention sees the all-zero decoder input: its values are all equal (the zero
    # bias), so query/key/value weights and the zero-initialised biases downstream get an exactly zero gradient,
    # as in the official model. Nothing else may be without gradient.
    assert missing <= {f"model.decoder.layers.0.{name}" for name in (
        "self_attn.q_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.weight", "self_attn.k_proj.bias",
        "self_attn.v_proj.weight", "self_attn.out_proj.weight", "self_attn_layer_norm.weight")}
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3).step()
    for name, p in model.named_parameters():
        if name in frozen:
            assert p.grad is None and torch.equal(p, frozen[name]), name
    for name, b in model.named_buffers():  # frozen batch norms do not update their statistics in training
        assert torch.equal(b, frozen_buffers[name]), name


def test_sine_positions_do_not_depend_on_padding():
    mask = torch.zeros(2, 6, 9, dtype=torch.bool)
    mask[0, :4, :5] = True  # an image padded into a bigger batch
    mask[1] = True
    alone = torch.ones(1, 4, 5, dtype=torch.bool)
    embed = DetrSinePositionEmbedding(32)
    padded = embed(mask).view(2, 6, 9, 32)[0, :4, :5]
    torch.testing.assert_close(padded, embed(alone).view(4, 5, 32))


def test_learned_positions_reject_large_maps():
    with pytest.raises(ValueError, match="at most 50x50"):
        DetrLearnedPositionEmbedding(32)(torch.ones(1, 51, 4, dtype=torch.bool))


def test_learned_positions_and_pre_norm_run():
    model = DetrForObjectDetection(tiny_detr_config(position_embedding_type="learned", pre_norm=True))
    out = model(*padded_pair(), labels=detection_labels())
    assert torch.isfinite(out.loss) and model.model.encoder.layernorm is not None


def test_dc5_halves_the_stride():
    model = DetrModel(tiny_detr_config(dilation=True)).eval()
    with torch.no_grad():
        out = model(*padded_pair())
    assert out.feature_mask.shape == (2, 8, 8)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pixel_values=torch.rand(3, 64, 64)), r"pixel_values must be \(batch_size, num_channels"),
        (dict(pixel_values=torch.rand(1, 4, 64, 64)), "num_channels=3 channels, got shape"),
        (dict(pixel_values=torch.rand(1, 3, 64, 64), pixel_mask=torch.ones(1, 64, 32)),
         r"pixel_mask must be .*\(1, 64, 32\)"),
        (dict(pixel_values=torch.rand(1, 3, 64, 64), labels=[{"boxes": torch.rand(1, 4)}]),
         "missing the key 'class_labels'"),
        (dict(pixel_values=torch.rand(1, 3, 64, 64),
              labels=[{"class_labels": torch.tensor([1]), "boxes": torch.rand(4)}]),
         r"labels\[0\]\['boxes'\] must be \(n, 4\)"),
        (dict(pixel_values=torch.rand(1, 3, 64, 64),
              labels=[{"class_labels": torch.tensor([5]), "boxes": torch.rand(1, 4)}]),
         r"class_labels'\] must be in \[0, num_labels=5\), got class id 5"),
    ],
)
def test_bad_input_raises_value_error(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model(**kwargs)


def test_integer_pixel_values_raise_type_error(model):
    with pytest.raises(TypeError, match="pixel_values must be a float tensor"):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(d_model=30), "divisible"),
        (dict(position_embedding_type="rope"), "position_embedding_type"),
        (dict(eos_coefficient=0.0), "eos_coefficient"),
        (dict(class_cost=0, bbox_cost=0, giou_cost=0), "not all zero"),
        (dict(num_queries=0), "num_queries"),
        (dict(dropout=1.5), "dropout"),
        (dict(activation_function="tanh"), "activation_function"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DetrConfig(**kwargs)


def test_config_defaults_are_the_papers():
    config = DetrConfig()
    assert (config.num_queries, config.d_model, config.encoder_layers, config.decoder_layers) == (100, 256, 6, 6)
    assert (config.encoder_attention_heads, config.encoder_ffn_dim, config.dropout) == (8, 2048, 0.1)
    assert config.auxiliary_loss and not config.pre_norm and config.position_embedding_type == "sine"
    assert (config.class_cost, config.bbox_cost, config.giou_cost) == (1, 5, 2)
    assert (config.bbox_loss_coefficient, config.giou_loss_coefficient, config.eos_coefficient) == (5, 2, 0.1)
    assert config.backbone == "resnet50" and config.num_labels == 91 and config.hidden_size == 256


def test_pretrained_backbone_offline_fails_clearly():
    with pytest.raises(RuntimeError, match="use_pretrained_backbone=False"):
        DetrModel(tiny_detr_config(use_pretrained_backbone=True))


def test_trainable_batch_norm_for_backbones_trained_from_scratch():
    model = DetrForObjectDetection(tiny_detr_config(freeze_batch_norm=False, freeze_backbone_stem=False)).train()
    norms = [m for m in model.model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 20  # resnet18: stem + 2 per block x 8 blocks + 3 downsamples
    before = norms[0].running_mean.clone()
    model(*padded_pair(), labels=detection_labels()).loss.backward()
    assert norms[0].weight.grad is not None and not torch.equal(norms[0].running_mean, before)
    assert model.model.backbone.model.conv1.weight.grad is not None
