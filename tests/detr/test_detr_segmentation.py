"""DETR's panoptic head: parity with transformers' DetrForSegmentation on converted weights, the mask losses, the
two-stage (frozen detector) recipe, COCO panoptic annotations and the panoptic / instance / semantic post-processing."""

import numpy as np
import pytest
import torch
import transformers
from conftest import detection_labels, padded_pair
from PIL import Image

from detrvilt.conversion.detr.from_transformers_segmentation import (
    convert_transformers_detr_segmentation,
    convert_transformers_segmentation_state_dict,
)
from detrvilt.modeling.detr import DetrForObjectDetection, DetrLoss
from detrvilt.modeling.detr.configuration_detr_segmentation import DetrSegmentationConfig
from detrvilt.modeling.detr.image_processing_detr import DetrImageProcessor
from detrvilt.modeling.detr.image_processing_detr_panoptic import id_to_rgb, rgb_to_id
from detrvilt.modeling.detr.loss_detr_segmentation import dice_loss, pairwise_mask_costs, sigmoid_focal_loss
from detrvilt.modeling.detr.modeling_detr_segmentation import DetrForSegmentation

# d_model + heads must be divisible by 8 for the mask head's GroupNorm (transformers checks it too).
TINY = dict(d_model=32, encoder_layers=2, decoder_layers=3, encoder_attention_heads=8, decoder_attention_heads=4,
            encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=12)


def hf_segmentation(auxiliary_loss=True, **kwargs):
    config = transformers.DetrConfig(backbone="resnet18", use_timm_backbone=True, auxiliary_loss=auxiliary_loss,
                                     num_labels=5, **TINY, **kwargs)
    return transformers.DetrForSegmentation(config).eval()


def mask_labels(seed=1):
    """`detection_labels()` with masks: random masks at the first image's size, none for the second."""
    labels = detection_labels()
    generator = torch.Generator().manual_seed(seed)
    labels[0]["masks"] = torch.rand(3, 96, 128, generator=generator) > 0.5
    labels[1]["masks"] = torch.zeros(0, 128, 80, dtype=torch.bool)
    return labels


def tiny_config(**overrides):
    return DetrSegmentationConfig(backbone="resnet18", num_labels=5, **{**TINY, **overrides})


@pytest.mark.parametrize("auxiliary_loss", [True, False])
def test_parity_with_transformers_detr_for_segmentation(auxiliary_loss):
    hf_model = hf_segmentation(auxiliary_loss)
    ours = convert_transformers_detr_segmentation(hf_model)
    assert not ours.training and isinstance(ours.config, DetrSegmentationConfig)
    pixel_values, pixel_mask = padded_pair()
    labels = mask_labels()
    with torch.no_grad():
        expected = hf_model(pixel_values=pixel_values, pixel_mask=pixel_mask,
                            labels=[{k: v.float() if k == "masks" else v for k, v in t.items()} for t in labels])
        actual = ours(pixel_values, pixel_mask=pixel_mask, labels=labels)
    assert actual.pred_masks.shape == (2, 12, 32, 32)  # a quarter of the padded 128x128 input
    for name in ("logits", "pred_boxes", "pred_masks"):
        torch.testing.assert_close(getattr(actual, name), getattr(expected, name), atol=1e-4, rtol=0, msg=name)
    assert set(actual.loss_dict) == set(expected.loss_dict) and "loss_dice" in actual.loss_dict
    for name, value in expected.loss_dict.items():
        torch.testing.assert_close(actual.loss_dict[name], value, rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(actual.loss, expected.loss, rtol=1e-5, atol=0)


def test_transformers_4_head_names_are_renamed():
    old = {"bbox_attention.q_linear.weight": 0, "mask_head.lay1.weight": 1, "mask_head.gn2.bias": 2,
           "mask_head.adapter3.weight": 3, "mask_head.lay4.bias": 4, "mask_head.gn5.weight": 5,
           "mask_head.out_lay.weight": 6, "detr.model.backbone.conv_encoder.model.conv1.weight": 7}
    assert convert_transformers_segmentation_state_dict(old) == {
        "bbox_attention.q_proj.weight": 0, "mask_head.conv1.conv.weight": 1, "mask_head.conv2.norm.bias": 2,
        "mask_head.fpn_stages.2.fpn_adapter.weight": 3, "mask_head.fpn_stages.1.refine.conv.bias": 4,
        "mask_head.fpn_stages.2.refine.norm.weight": 5, "mask_head.output_conv.weight": 6,
        "detr.model.backbone.model.conv1.weight": 7,
    }


def test_pairwise_mask_costs_equal_the_losses():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 40, generator=generator) * 3
    targets = (torch.rand(3, 40, generator=generator) > 0.6).float()
    focal, dice = pairwise_mask_costs(logits, targets)
    for j in range(3):
        torch.testing.assert_close(focal[:, j], sigmoid_focal_loss(logits, targets[j].expand(5, -1)))
        torch.testing.assert_close(dice[:, j], dice_loss(logits, targets[j].expand(5, -1)))
    perfect = torch.where(targets[:1] > 0, 20.0, -20.0)
    assert sigmoid_focal_loss(perfect, targets[:1]).item() < 1e-6 and dice_loss(perfect, targets[:1]).item() < 1e-6


def test_matching_on_masks_follows_the_masks():
    """Two queries with identical classes and boxes: only the mask cost can tell which one fits the target."""
    logits = torch.zeros(1, 1, 2, 3)
    boxes = torch.tensor([0.5, 0.5, 0.4, 0.4]).expand(1, 1, 2, 4)
    target = torch.zeros(8, 8, dtype=torch.bool)
    target[:4] = True
    pred_masks = torch.stack([torch.where(~target, 9.0, -9.0), torch.where(target, 9.0, -9.0)])[None]  # (1, 2, 8, 8)
    labels = [{"class_labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]]), "masks": target[None]}]
    with_masks = DetrLoss(num_labels=2, mask_cost=1.0, dice_cost=1.0)
    loss, loss_dict = with_masks.compute(logits, boxes, labels, pred_masks)
    assert loss_dict["loss_dice"].item() < 1e-3  # query 1, the right mask, was matched
    without = DetrLoss(num_labels=2).compute(logits, boxes, labels, pred_masks)[1]
    assert without["loss_dice"].item() > 0.9  # ties go to query 0, whose mask is the complement


def test_mask_losses_need_masks_and_allow_empty_targets():
    model = DetrForSegmentation(tiny_config())
    pixel_values, pixel_mask = padded_pair()
    with pytest.raises(ValueError, match="masks"):
        model(pixel_values, pixel_mask=pixel_mask, labels=detection_labels())
    empty = [{"class_labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4),
              "masks": torch.zeros(0, 96, 128)} for _ in range(2)]
    out = model(pixel_values, pixel_mask=pixel_mask, labels=empty)
    assert out.loss_dict["loss_mask"].item() == 0.0 and torch.isfinite(out.loss)


def test_two_stage_recipe_freezes_the_detector_and_trains_the_head():
    detector = DetrForObjectDetection(tiny_config()).eval()
    model = DetrForSegmentation.from_detector(detector, freeze_detector=True).eval()
    pixel_values, pixel_mask = padded_pair()
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values, pixel_mask=pixel_mask).logits,
                                   detector(pixel_values, pixel_mask=pixel_mask).logits)
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"bbox_attention", "mask_head"}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model.train()
    model(pixel_values, pixel_mask=pixel_mask, labels=mask_labels()).loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    changed = {name.split(".")[0] for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == {"bbox_attention", "mask_head"}


def test_config_rejects_mask_head_widths_groupnorm_cannot_split():
    with pytest.raises(ValueError, match="mask head"):
        tiny_config(d_model=48, encoder_attention_heads=4)
    with pytest.raises(ValueError, match="mask_cost"):
        tiny_config(mask_cost=-1.0)


# ----------------------------------------------------------------------------------------------------------------
# Image processor


def test_rgb_id_round_trip():
    ids = np.array([[0, 1, 256], [65536, 123456, 256**3 - 1]])
    assert np.array_equal(rgb_to_id(id_to_rgb(ids)), ids)
    assert rgb_to_id(np.array([[[1, 2, 3]]], dtype=np.uint8))[0, 0] == 1 + 2 * 256 + 3 * 65536


def test_coco_panoptic_annotations_become_masks_classes_and_boxes(tmp_path):
    ids = np.zeros((40, 60), dtype=np.int64)
    ids[:, :30] = 7  # stuff, left half
    ids[10:20, 40:50] = 300  # a thing, box x 40..49, y 10..19
    Image.fromarray(id_to_rgb(ids)).save(tmp_path / "0001.png")
    annotation = {"image_id": 1, "file_name": "0001.jpg", "segments_info": [
        {"id": 7, "category_id": 4, "iscrowd": 0}, {"id": 300, "category_id": 1, "iscrowd": 1, "area": 100}]}
    image = np.full((40, 60, 3), 128, dtype=np.uint8)
    processor = DetrImageProcessor(size={"shortest_edge": 80, "longest_edge": 200}, format="coco_panoptic")
    labels = processor(image, annotations=annotation, masks_path=tmp_path)["labels"][0]
    assert labels["masks"].shape == (2, 80, 120) and labels["masks"].dtype == torch.bool
    assert labels["masks"][0, :, :60].all() and not labels["masks"][0, :, 60:].any()
    assert labels["masks"][1].sum() == 400  # 10x10 pixels, twice the size
    assert labels["class_labels"].tolist() == [4, 1] and labels["iscrowd"].tolist() == [0, 1]
    # Tight boxes of the masks (inclusive last pixel, as the official masks_to_boxes), normalized cxcywh.
    torch.testing.assert_close(labels["boxes"][1], torch.tensor([44.5 / 60, 14.5 / 40, 9 / 60, 9 / 40]))
    same = processor(image, annotations={**annotation, "segmentation": id_to_rgb(ids)})["labels"][0]
    assert torch.equal(same["masks"], labels["masks"])
    with pytest.raises(ValueError, match="panoptic PNG"):
        processor(image, annotations={"segments_info": []})


def outputs_for(mask_logits, class_logits):
    """A model output with the given `(Q, h, w)` mask logits and `(Q, C+1)` class logits, batch of one."""
    q = len(class_logits)
    return {"logits": torch.as_tensor(class_logits, dtype=torch.float32)[None],
            "pred_masks": torch.as_tensor(mask_logits, dtype=torch.float32)[None],
            "pred_boxes": torch.tensor([0.5, 0.5, 1.0, 1.0]).expand(1, q, 4)}


def test_panoptic_post_processing_fuses_stuff_and_drops_tiny_and_unsure_segments():
    # Classes: 0 thing, 1 stuff, 2 no-object. Query 0: thing on the top-left 4x4 block; queries 1 and 2: stuff on the
    # rest (to be fused); query 3: a thing with a single pixel (removed: at most 4 pixels); query 4: unsure.
    masks = torch.full((5, 8, 8), -5.0)
    masks[0, :4, :4] = 5
    masks[1, 4:, :] = 5
    masks[2, :4, 4:] = 5
    masks[3, 7, 7] = 9
    masks[4] = 9.5
    sure = [10.0, 0.0, 0.0]
    logits = [sure, [0.0, 10.0, 0.0], [0.0, 10.0, 0.0], sure, [1.0, 0.0, 0.5]]
    result = DetrImageProcessor().post_process_panoptic_segmentation(outputs_for(masks, logits), label_ids_to_fuse={1})
    segmentation, info = result[0]["segmentation"], result[0]["segments_info"]
    assert [(s["label_id"], s["was_fused"], s["area"]) for s in info] == [(0, False, 16), (1, True, 48)]
    assert (segmentation[:4, :4] == info[0]["id"]).all() and (segmentation[4:] == info[1]["id"]).all()
    assert (segmentation[7, 7] == info[1]["id"]) and set(segmentation.unique().tolist()) == {1, 2}
    without_fusion = DetrImageProcessor().post_process_panoptic_segmentation(outputs_for(masks, logits))[0]
    assert [s["label_id"] for s in without_fusion["segments_info"]] == [0, 1, 1]
    nothing = DetrImageProcessor().post_process_panoptic_segmentation(outputs_for(masks, logits), threshold=0.99999)[0]
    assert nothing["segments_info"] == [] and (nothing["segmentation"] == 0).all()


def test_post_processing_crops_the_padding_with_the_pixel_mask():
    masks = torch.full((1, 8, 8), -5.0)
    masks[0, :4, :4] = 5  # the real image is the top-left quarter of the padded input, filled by the query
    pixel_mask = torch.zeros(1, 32, 32, dtype=torch.long)
    pixel_mask[0, :16, :16] = 1
    outputs = outputs_for(masks, [[10.0, 0.0]])
    processor = DetrImageProcessor()
    instance = processor.post_process_instance_segmentation(outputs, target_sizes=[(10, 10)], pixel_mask=pixel_mask)
    # All but the bottom-right corner pixel, where bilinear resizing mixes in the edge of the query's mask.
    assert instance[0]["masks"].shape == (1, 10, 10) and instance[0]["masks"].sum() >= 99
    torch.testing.assert_close(instance[0]["boxes"], torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    semantic = processor.post_process_semantic_segmentation(outputs, target_sizes=[(10, 10)], pixel_mask=pixel_mask)
    assert semantic[0].shape == (10, 10) and (semantic[0] == 0).all()
    uncropped = processor.post_process_instance_segmentation(outputs, target_sizes=[(10, 10)])
    assert uncropped[0]["masks"].sum() <= 40  # without the pixel mask the padding is stretched into the image


def test_save_and_load_round_trip(tmp_path):
    model = DetrForSegmentation(tiny_config(mask_cost=1.0)).eval()
    model.save_pretrained(tmp_path)
    loaded = DetrForSegmentation.from_pretrained(tmp_path).eval()
    assert loaded.config.model_type == "detrvilt_detr_segmentation" and loaded.config.mask_cost == 1.0
    pixel_values, pixel_mask = padded_pair()
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values, pixel_mask=pixel_mask).pred_masks,
                                   model(pixel_values, pixel_mask=pixel_mask).pred_masks)
