"""Parity with transformers' DetrForObjectDetection on converted random weights (something we did not write)."""

import pytest
import torch
import transformers
from conftest import detection_labels, padded_pair
from transformers.loss.loss_for_object_detection import ForObjectDetectionLoss

from detrvilt.conversion import convert_transformers_detr

TINY = dict(d_model=32, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4, decoder_attention_heads=4,
            encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=12)


def hf_detr(backbone="resnet18", auxiliary_loss=True, **kwargs):
    config = transformers.DetrConfig(backbone=backbone, use_timm_backbone=True, auxiliary_loss=auxiliary_loss,
                                     num_labels=5, **kwargs)
    return transformers.DetrForObjectDetection(config).eval()


def assert_same_outputs(hf_model, ours, pixel_values, pixel_mask):
    labels = detection_labels()
    with torch.no_grad():
        expected = hf_model(pixel_values=pixel_values, pixel_mask=pixel_mask, labels=labels)
        actual = ours(pixel_values, pixel_mask=pixel_mask, labels=labels)
    torch.testing.assert_close(actual.logits, expected.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(actual.pred_boxes, expected.pred_boxes, atol=1e-4, rtol=0)
    assert set(actual.loss_dict) == set(expected.loss_dict)
    for name, value in expected.loss_dict.items():
        torch.testing.assert_close(actual.loss_dict[name], value, rtol=1e-5, atol=1e-7, msg=name)
    torch.testing.assert_close(actual.loss, expected.loss, rtol=1e-5, atol=0)


@pytest.mark.parametrize("auxiliary_loss", [True, False])
def test_tiny_parity(auxiliary_loss):
    hf_model = hf_detr(auxiliary_loss=auxiliary_loss, **TINY)
    ours = convert_transformers_detr(hf_model)
    assert not ours.training
    assert ours.config.decoder_chained_norm is auxiliary_loss
    assert_same_outputs(hf_model, ours, *padded_pair())


def test_full_r50_parity():
    hf_model = hf_detr(backbone="resnet50", auxiliary_loss=True)
    ours = convert_transformers_detr(hf_model)
    assert ours.config.num_queries == 100 and ours.config.d_model == 256 and ours.config.encoder_layers == 6
    assert_same_outputs(hf_model, ours, *padded_pair(sizes=((160, 224), (224, 192))))


def test_dilated_backbone_converts():
    hf_model = hf_detr(dilation=True, **TINY)
    ours = convert_transformers_detr(hf_model)
    assert ours.config.dilation
    assert_same_outputs(hf_model, ours, *padded_pair())


def test_converted_model_freezes_stem_and_first_stage_as_the_paper():
    ours = convert_transformers_detr(hf_detr(**TINY))
    body = ours.model.backbone.model
    assert not any(p.requires_grad for p in body.conv1.parameters())
    assert not any(p.requires_grad for p in body.layer1.parameters())
    assert all(p.requires_grad for name in ("layer2", "layer3", "layer4") for p in getattr(body, name).parameters())


def test_official_decoder_loss_equals_transformers_loss_function():
    """Our default decoder (official, not chained) with auxiliary outputs: the loss equals transformers' loss
    function applied to the same predictions."""
    hf_model = hf_detr(**TINY)
    ours = convert_transformers_detr(hf_model)
    ours.config.decoder_chained_norm = False
    ours.model.decoder.chained_norm = False
    labels = detection_labels()
    with torch.no_grad():
        out = ours(*padded_pair(), labels=labels)
        logits = torch.stack([a["logits"] for a in out.auxiliary_outputs] + [out.logits])
        boxes = torch.stack([a["pred_boxes"] for a in out.auxiliary_outputs] + [out.pred_boxes])
        loss, loss_dict, _ = ForObjectDetectionLoss(out.logits, labels, "cpu", out.pred_boxes, hf_model.config,
                                                    logits, boxes)
    torch.testing.assert_close(out.loss, loss, rtol=1e-5, atol=0)
    for name, value in loss_dict.items():
        torch.testing.assert_close(out.loss_dict[name], value, rtol=1e-5, atol=1e-7, msg=name)


def test_conversion_rejects_other_models():
    with pytest.raises(TypeError, match="hf_model"):
        convert_transformers_detr(torch.nn.Linear(2, 2))
