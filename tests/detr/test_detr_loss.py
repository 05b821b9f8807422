"""The Hungarian matcher and loss: batched equals per-image, empty targets, NaN costs, transformers' matcher."""

import numpy as np
import pytest
import torch
from conftest import detection_labels, padded_pair, tiny_detr_config
from torchvision.ops import box_convert, generalized_box_iou
from transformers.loss.loss_for_object_detection import HungarianMatcher as TransformersMatcher

from detrvilt import DetrForObjectDetection, DetrLoss, HungarianMatcher


def random_predictions(num_layers=3, batch_size=4, num_queries=20, num_classes=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_layers, batch_size, num_queries, num_classes + 1, generator=generator)
    boxes = torch.rand(num_layers, batch_size, num_queries, 4, generator=generator) * 0.5 + 0.1
    return logits, boxes


def random_labels(counts, num_classes=6, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [
        {"class_labels": torch.randint(num_classes, (n,), generator=generator),
         "boxes": torch.rand(n, 4, generator=generator) * 0.4 + 0.1}
        for n in counts
    ]


def test_batched_matching_equals_per_image_and_per_layer():
    logits, boxes = random_predictions()
    labels = random_labels([3, 0, 7, 1])
    matcher = HungarianMatcher(class_cost=1, bbox_cost=5, giou_cost=2)
    batched = matcher(logits, boxes, labels)
    assert len(batched) == 3 and all(len(layer) == 4 for layer in batched)
    for layer in range(3):
        for image in range(4):
            single = matcher(logits[layer, image:image + 1], boxes[layer, image:image + 1], labels[image:image + 1])[0]
            pred, tgt = batched[layer][image]
            assert torch.equal(pred, single[0]) and torch.equal(tgt, single[1])
            assert len(pred) == len(labels[image]["boxes"])
            assert len(set(pred.tolist())) == len(pred)  # one slot per object


def test_matching_equals_transformers_matcher():
    logits, boxes = random_predictions(num_layers=1)
    labels = random_labels([3, 2, 7, 1])
    ours = HungarianMatcher(1, 5, 2)(logits[0], boxes[0], labels)
    theirs = TransformersMatcher(1, 5, 2)({"logits": logits[0], "pred_boxes": boxes[0]}, labels)
    for (p, t), (p_ref, t_ref) in zip(ours, theirs, strict=True):
        assert torch.equal(p, p_ref) and torch.equal(t, t_ref)


def test_matching_is_optimal_on_a_hand_case():
    # Two objects; slot 2 is the exact box of object 0 with its class, slot 0 that of object 1.
    logits = torch.full((1, 3, 3), -10.0)
    logits[0, 2, 1] = 10.0
    logits[0, 0, 0] = 10.0
    boxes = torch.tensor([[[0.7, 0.7, 0.2, 0.2], [0.5, 0.5, 0.9, 0.9], [0.3, 0.3, 0.2, 0.2]]])
    labels = [{"class_labels": torch.tensor([1, 0]),
               "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]])}]
    pred, tgt = HungarianMatcher()(logits, boxes, labels)[0]
    assert dict(zip(tgt.tolist(), pred.tolist(), strict=True)) == {0: 2, 1: 0}


def test_empty_targets_everywhere():
    logits, boxes = random_predictions(num_layers=2, batch_size=2)
    labels = random_labels([0, 0])
    indices = HungarianMatcher()(logits, boxes, labels)
    assert all(len(p) == 0 and len(t) == 0 for layer in indices for p, t in layer)
    loss_fn = DetrLoss(num_labels=6)
    logits.requires_grad_(True)
    loss, loss_dict = loss_fn.compute(logits, boxes, labels)
    assert loss_dict["loss_bbox"].item() == 0.0 and loss_dict["loss_giou"].item() == 0.0
    assert torch.isfinite(loss) and loss.item() > 0  # every slot is pushed towards "no object"
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_nan_predictions_get_a_valid_assignment():
    logits, boxes = random_predictions(num_layers=1, batch_size=2, num_queries=6)
    boxes[0, 0, :3] = float("nan")  # three slots of image 0 are broken
    logits[0, 1, 0] = float("inf")
    labels = random_labels([3, 4])
    indices = HungarianMatcher()(logits[0], boxes[0], labels)
    for (pred, tgt), target in zip(indices, labels, strict=True):
        assert len(pred) == len(target["boxes"]) and sorted(tgt.tolist()) == list(range(len(tgt)))
    assert set(indices[0][0].tolist()) == {3, 4, 5}  # the finite slots are used before the broken ones


def test_loss_against_a_direct_computation():
    logits, boxes = random_predictions(num_layers=1, batch_size=2, num_queries=5)
    labels = random_labels([2, 1])
    loss_fn = DetrLoss(num_labels=6, eos_coef=0.1)
    loss, loss_dict = loss_fn.compute(logits, boxes, labels)
    indices = HungarianMatcher()(logits[0], boxes[0], labels)
    num_boxes = 3
    weight = torch.ones(7)
    weight[-1] = 0.1
    target = torch.full((2, 5), 6)
    l1 = giou = 0.0
    for b, (pred, tgt) in enumerate(indices):
        target[b, pred] = labels[b]["class_labels"][tgt]
        matched, truth = boxes[0, b, pred], labels[b]["boxes"][tgt]
        l1 += (matched - truth).abs().sum()
        giou += (1 - torch.diag(generalized_box_iou(box_convert(matched, "cxcywh", "xyxy"),
                                                    box_convert(truth, "cxcywh", "xyxy")))).sum()
    ce = torch.nn.functional.cross_entropy(logits[0].transpose(1, 2), target, weight)
    torch.testing.assert_close(loss_dict["loss_ce"], ce)
    torch.testing.assert_close(loss_dict["loss_bbox"], l1 / num_boxes)
    torch.testing.assert_close(loss_dict["loss_giou"], giou / num_boxes)
    torch.testing.assert_close(loss, ce + 5 * l1 / num_boxes + 2 * giou / num_boxes)


def test_standalone_callable_equals_model_loss():
    model = DetrForObjectDetection(tiny_detr_config()).eval()
    labels = detection_labels()
    with torch.no_grad():
        outputs = model(*padded_pair(), labels=labels)
        # The signature Trainer's compute_loss_func uses: fn(outputs, labels, num_items_in_batch=...).
        standalone = DetrLoss.from_config(model.config)(outputs, labels, num_items_in_batch=3)
    torch.testing.assert_close(standalone, outputs.loss)
    assert len(outputs.loss_dict) == 4 * model.config.decoder_layers


def test_loss_is_fp32_under_bf16_autocast():
    logits, boxes = random_predictions(num_layers=2)
    labels = random_labels([3, 0, 2, 5])
    loss_fn = DetrLoss(num_labels=6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, loss_dict = loss_fn.compute(logits.bfloat16(), boxes.bfloat16(), labels)
    assert loss.dtype == torch.float32 and all(v.dtype == torch.float32 for v in loss_dict.values())
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    "labels, message",
    [
        ([{"class_labels": torch.tensor([0])}], "missing the key 'boxes'"),
        ([{"class_labels": torch.tensor([0]), "boxes": torch.rand(1, 5)}], r"labels\[0\]\['boxes'\] must be \(n, 4\)"),
        ([{"class_labels": torch.tensor([0, 1]), "boxes": torch.rand(1, 4)}], r"labels\[0\]\['class_labels'\] must be"),
        ([{"class_labels": torch.tensor([6]), "boxes": torch.rand(1, 4)}], r"num_labels=6\), got class id 6"),
        ([{"class_labels": torch.tensor([-1]), "boxes": torch.rand(1, 4)}], "got class id -1"),
        ([], r"one dict per image \(1\), got 0"),
    ],
)
def test_bad_labels_raise(labels, message):
    logits, boxes = random_predictions(num_layers=1, batch_size=1)
    with pytest.raises(ValueError, match=message):
        DetrLoss(num_labels=6).compute(logits, boxes, labels)


def test_bad_label_types_raise():
    logits, boxes = random_predictions(num_layers=1, batch_size=1)
    with pytest.raises(TypeError, match="labels must be a list"):
        DetrLoss(num_labels=6).compute(logits, boxes, {"boxes": torch.rand(1, 4)})
    with pytest.raises(TypeError, match=r"labels\[0\]\['class_labels'\] must be an integer tensor"):
        DetrLoss(num_labels=6).compute(logits, boxes,
                                       [{"class_labels": torch.tensor([0.0]), "boxes": torch.rand(1, 4)}])


def test_matcher_rejects_all_zero_costs():
    with pytest.raises(ValueError, match="not all zero"):
        HungarianMatcher(0, 0, 0)


def test_cardinality_error_counts_non_empty_predictions():
    logits = torch.full((1, 1, 4, 3), -5.0)
    logits[..., 2] = 5.0  # every slot says "no object"
    logits[0, 0, 0, 0] = 10.0  # except one
    boxes = torch.full((1, 1, 4, 4), 0.5)
    labels = [{"class_labels": torch.tensor([0, 1, 1]), "boxes": torch.full((3, 4), 0.25)}]
    _, loss_dict = DetrLoss(num_labels=2).compute(logits, boxes, labels)
    assert loss_dict["cardinality_error"].item() == pytest.approx(2.0)
    assert np.isfinite(loss_dict["loss_giou"].item())


def test_matcher_alone_checks_class_ids_against_the_logits():
    logits, boxes = random_predictions(num_layers=1, batch_size=1)  # 6 classes + "no object"
    with pytest.raises(ValueError, match=r"num_labels=6\), got class id 7"):
        HungarianMatcher()(logits[0], boxes[0], [{"class_labels": torch.tensor([2, 7]), "boxes": torch.rand(2, 4)}])
