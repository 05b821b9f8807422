"""Training-only queries: Group DETR's query groups and H-DETR's hybrid (one-to-many) branch.

Off by default (the parity tests run with the defaults); on, they are checked on hand-made cases (which queries are
matched to which targets, the block-diagonal masking of the decoder's self-attention), through `DetrTrainer` and the
Accelerate loop, and for the saved model: it loads as a plain DETR with equal outputs."""

import math

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from conftest import padded_pair, tiny_detr_config
from torch.utils.data import DataLoader
from torchvision.ops import box_convert, generalized_box_iou
from transformers import AutoModelForObjectDetection

from detrvilt import DetrConfig, DetrForObjectDetection, DetrImageProcessor, DetrLoss, HungarianMatcher
from detrvilt.data import DetrDataCollator, make_shapes_dataset
from detrvilt.data.detr.sources import InMemoryDetectionDataset
from detrvilt.modeling.detr.configuration_detr_segmentation import DetrSegmentationConfig
from detrvilt.modeling.detr.modeling_detr import group_attention_bias, query_group_ids
from detrvilt.training import DetrTrainer, EpochShuffleSampler, LoopConfig, create_detr_optimizer, train_loop
from detrvilt.training.detr.arguments import DetrModelArguments, DetrTrainingArguments
from detrvilt.training.detr.recipes import build_model

SIZE = 64
NO_DROPOUT = dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
WITH_BOTH = dict(num_query_groups=3, hybrid_queries=8, hybrid_repeats=2)


def model_with(seed=0, **overrides):
    torch.manual_seed(seed)
    kwargs = dict(num_labels=3, num_queries=5, freeze_batch_norm=False, freeze_backbone_stem=False, **NO_DROPOUT)
    kwargs.update(overrides)
    return DetrForObjectDetection(tiny_detr_config(**kwargs))


def two_image_labels():
    return [
        {"class_labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.3], [0.7, 0.6, 0.3, 0.2]])},
        {"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])},
    ]


# ------------------------------------------------------------------------------------------------------ config


def test_off_by_default_and_validated():
    config = DetrConfig()
    assert (config.num_query_groups, config.hybrid_queries, config.num_training_queries) == (1, 0, 0)
    assert DetrForObjectDetection(tiny_detr_config()).model.training_query_position_embeddings is None
    assert tiny_detr_config(num_queries=4, **WITH_BOTH).num_training_queries == 2 * 4 + 8
    for bad, match in ((dict(num_query_groups=0), "num_query_groups"), (dict(hybrid_queries=-1), "hybrid_queries"),
                       (dict(hybrid_repeats=0), "hybrid_repeats"), (dict(num_query_groups=2.5), "num_query_groups"),
                       (dict(hybrid_loss_coefficient=-1.0), "hybrid_loss_coefficient")):
        with pytest.raises(ValueError, match=match):
            tiny_detr_config(**bad)
    with pytest.raises(ValueError, match="DetrForObjectDetection only.*to_plain_detr"):
        DetrSegmentationConfig(d_model=128, num_query_groups=2)
    with pytest.raises(ValueError, match="hybrid_repeats"):
        DetrLoss(num_labels=3, hybrid_repeats=0)


def test_the_shared_weights_start_like_a_plain_detr():
    plain, grouped = model_with(), model_with(**WITH_BOTH)
    plain_state, grouped_state = plain.state_dict(), grouped.state_dict()
    assert set(grouped_state) - set(plain_state) == {"model.training_query_position_embeddings.weight"}
    assert all(torch.equal(plain_state[name], grouped_state[name]) for name in plain_state)
    extra = grouped.model.training_query_position_embeddings.weight
    assert extra.shape == (2 * 5 + 8, 32) and 0.7 < extra.std().item() < 1.3  # N(0, 1) like the object queries


# ------------------------------------------------------------------------------------------------------ masking


def test_query_group_ids_and_their_block_diagonal_mask():
    config = tiny_detr_config(num_queries=2, num_query_groups=3, hybrid_queries=3)
    ids = query_group_ids(config)
    assert ids.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 3]
    assert query_group_ids(config, training=False).tolist() == [0, 0]
    bias = group_attention_bias(ids, torch.float32)
    assert bias.shape == (1, 1, 9, 9)
    allowed = (bias[0, 0] == 0).int()
    expected = torch.block_diag(torch.ones(2, 2), torch.ones(2, 2), torch.ones(2, 2), torch.ones(3, 3)).int()
    assert torch.equal(allowed, expected)
    assert (bias[0, 0][expected == 0] == torch.finfo(torch.float32).min).all()


def test_groups_see_only_themselves_and_the_model_queries_are_unchanged():
    pixel_values, pixel_mask = padded_pair()
    grouped = model_with(**WITH_BOTH).train()
    plain = model_with().train()
    with torch.no_grad():
        out = grouped(pixel_values, pixel_mask=pixel_mask, output_attentions=True)
        reference = plain(pixel_values, pixel_mask=pixel_mask)
    ids = query_group_ids(grouped.config)
    across = ids[:, None] != ids[None, :]
    for weights in out.decoder_attentions:  # (B, heads, 23, 23) in training mode
        assert weights.shape[-2:] == (len(ids), len(ids))
        assert (weights[..., across] == 0).all()  # nothing passes between groups
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    # The model's own queries decode as in a plain DETR with the same weights: the extra queries cannot reach them.
    torch.testing.assert_close(out.logits, reference.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pred_boxes, reference.pred_boxes, atol=1e-5, rtol=0)
    assert out.group_logits.shape == (2, 3, 2, 5, 4) and out.group_pred_boxes.shape == (2, 3, 2, 5, 4)
    assert out.hybrid_logits.shape == (3, 2, 8, 4) and out.hybrid_pred_boxes.shape == (3, 2, 8, 4)
    # And the groups do not see each other: changing group 2's queries leaves group 1 and the branch alone.
    with torch.no_grad():
        grouped.model.training_query_position_embeddings.weight[5:10] += 1.0
        changed = grouped(pixel_values, pixel_mask=pixel_mask)
    torch.testing.assert_close(changed.group_logits[0], out.group_logits[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(changed.hybrid_logits, out.hybrid_logits, atol=1e-5, rtol=0)
    assert (changed.group_logits[1] - out.group_logits[1]).abs().max() > 1e-3


def test_evaluation_runs_the_plain_detr_only():
    pixel_values, pixel_mask = padded_pair()
    grouped = model_with(**WITH_BOTH).eval()
    with torch.no_grad():
        out = grouped(pixel_values, pixel_mask=pixel_mask, output_attentions=True)
    assert out.group_logits is None and out.hybrid_logits is None
    assert out.decoder_attentions[0].shape[-2:] == (5, 5)
    assert grouped.model(pixel_values, pixel_mask).training_hidden_states is None


# ------------------------------------------------------------------------------------------------------ the loss

T0 = [0.25, 0.25, 0.2, 0.2]  # class 0
T1 = [0.75, 0.75, 0.2, 0.2]  # class 1
FAR = [0.5, 0.05, 0.05, 0.05]


def hand_predictions(entries, num_classes=2):
    """Logits `(1, 1, Q, C+1)` and boxes `(1, 1, Q, 4)` from `(class or None for no object, box)` per query."""
    logits = torch.zeros(1, 1, len(entries), num_classes + 1)
    boxes = torch.tensor([[box for _, box in entries]])[None]
    for query, (cls, _) in enumerate(entries):
        logits[0, 0, query, num_classes if cls is None else cls] = 4.0
    return logits, boxes


def expected_terms(logits, boxes, target_classes, matched, targets, eos_coef, num_boxes):
    """The Hungarian loss terms of one layer `(1, Q, .)` for a given assignment, written out by hand."""
    weight = torch.tensor([1.0, 1.0, eos_coef])[torch.tensor(target_classes)]
    ce = F.cross_entropy(logits[0, 0], torch.tensor(target_classes), reduction="none")
    pred = boxes[0, 0][torch.tensor(matched)]
    target = torch.tensor(targets)
    giou = 1 - torch.diag(generalized_box_iou(box_convert(pred, "cxcywh", "xyxy"),
                                              box_convert(target, "cxcywh", "xyxy")))
    return {"loss_ce": (weight * ce).sum() / weight.sum(), "loss_bbox": (pred - target).abs().sum() / num_boxes,
            "loss_giou": giou.sum() / num_boxes}


def test_each_group_and_the_hybrid_branch_are_matched_as_expected_on_a_hand_made_case():
    labels = [{"class_labels": torch.tensor([0, 1]), "boxes": torch.tensor([T0, T1])}]
    # Own queries: query 2 is target 0, query 0 is target 1. Group 1: query 0 is target 0, query 1 is target 1
    # shifted right by 0.1. A group matched with the own queries' assignment, or all groups together, would
    # cost more. Hybrid branch (targets repeated twice: t0, t1, t0, t1): queries 1 and 3 (shifted down) are the two
    # copies of target 0, queries 0 and 4 those of target 1, query 2 is left to "no object".
    logits, boxes = hand_predictions([(1, T1), (None, FAR), (0, T0)])
    group_logits, group_boxes = hand_predictions([(0, T0), (1, [0.85, 0.75, 0.2, 0.2]), (None, FAR)])
    hybrid_logits, hybrid_boxes = hand_predictions([(1, T1), (0, T0), (None, FAR), (0, [0.25, 0.45, 0.2, 0.2]),
                                                    (1, T1)])
    loss_fn = DetrLoss(num_labels=2, eos_coef=0.3, hybrid_repeats=2, hybrid_loss_coefficient=0.5)
    loss, loss_dict = loss_fn.compute(logits, boxes, labels, group_logits=group_logits[None],
                                      group_pred_boxes=group_boxes[None], hybrid_logits=hybrid_logits,
                                      hybrid_pred_boxes=hybrid_boxes)

    own = expected_terms(logits, boxes, [1, 2, 0], [2, 0], [T0, T1], 0.3, num_boxes=2)
    group = expected_terms(group_logits, group_boxes, [0, 1, 2], [0, 1], [T0, T1], 0.3, num_boxes=2)
    hybrid = expected_terms(hybrid_logits, hybrid_boxes, [1, 0, 2, 0, 1], [1, 0, 3, 4], [T0, T1, T0, T1], 0.3,
                            num_boxes=4)  # the repeated targets are the branch's box count
    for name in ("loss_ce", "loss_bbox", "loss_giou"):
        torch.testing.assert_close(loss_dict[name], own[name])
        torch.testing.assert_close(loss_dict[f"{name}_groups"], group[name])
        torch.testing.assert_close(loss_dict[f"{name}_hybrid"], hybrid[name])
    assert loss_dict["loss_bbox"].item() == 0.0
    assert loss_dict["loss_bbox_groups"].item() == pytest.approx(0.1 / 2)
    assert loss_dict["loss_bbox_hybrid"].item() == pytest.approx(0.2 / 4)
    weights = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}
    total = sum(w * (own[n] + group[n] + 0.5 * hybrid[n]) for n, w in weights.items())
    torch.testing.assert_close(loss, total)

    # The same assignments from the matcher itself, group by group (the loss stacks groups like decoder layers).
    matcher = HungarianMatcher()
    pred, tgt = matcher(group_logits[0], group_boxes[0], labels)[0]
    assert dict(zip(tgt.tolist(), pred.tolist(), strict=True)) == {0: 0, 1: 1}
    repeated = [{"class_labels": torch.tensor([0, 1, 0, 1]), "boxes": torch.tensor([T0, T1, T0, T1])}]
    pred, tgt = matcher(hybrid_logits[0], hybrid_boxes[0], repeated)[0]
    assignment = dict(zip(pred.tolist(), tgt.tolist(), strict=True))
    assert {q: assignment[q] % 2 for q in assignment} == {0: 1, 1: 0, 3: 0, 4: 1} and 2 not in assignment


def test_model_loss_adds_the_groups_and_the_branch_to_the_plain_loss():
    pixel_values, pixel_mask = padded_pair()
    labels = two_image_labels()
    grouped = model_with(**WITH_BOTH).train()
    out = grouped(pixel_values, pixel_mask=pixel_mask, labels=labels)
    loss_fn = DetrLoss.from_config(grouped.config)
    own, own_dict = loss_fn.compute(torch.stack([a["logits"] for a in out.auxiliary_outputs] + [out.logits]),
                                    torch.stack([a["pred_boxes"] for a in out.auxiliary_outputs] + [out.pred_boxes]),
                                    labels)
    group_total = sum(loss_fn.compute(out.group_logits[g], out.group_pred_boxes[g], labels)[0] for g in range(2))
    repeated = [{"class_labels": t["class_labels"].repeat(2), "boxes": t["boxes"].repeat(2, 1)} for t in labels]
    hybrid_total = loss_fn.compute(out.hybrid_logits, out.hybrid_pred_boxes, repeated)[0]
    torch.testing.assert_close(out.loss, own + group_total + hybrid_total)
    for name, value in own_dict.items():
        torch.testing.assert_close(out.loss_dict[name], value)
    # DetrLoss as Trainer's compute_loss_func reads the same outputs.
    torch.testing.assert_close(loss_fn(out, labels), out.loss)
    out.loss.backward()
    assert grouped.model.training_query_position_embeddings.weight.grad.abs().sum() > 0


def test_without_auxiliary_losses_the_groups_use_the_final_layer_only():
    pixel_values, pixel_mask = padded_pair()
    grouped = model_with(auxiliary_loss=False, **WITH_BOTH).train()
    out = grouped(pixel_values, pixel_mask=pixel_mask, labels=two_image_labels())
    assert out.group_logits.shape == (2, 1, 2, 5, 4) and out.hybrid_logits.shape == (1, 2, 8, 4)
    assert not [name for name in out.loss_dict if name[-1].isdigit()]  # no auxiliary terms
    assert math.isfinite(out.loss.item())


def test_images_without_objects_in_every_group_and_the_branch():
    pixel_values, pixel_mask = padded_pair()
    empty = [{"class_labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}] * 2
    out = model_with(**WITH_BOTH).train()(pixel_values, pixel_mask=pixel_mask, labels=empty)
    assert math.isfinite(out.loss.item()) and out.loss.item() > 0  # every query is pushed to "no object"
    assert out.loss_dict["loss_bbox_groups"].item() == 0.0 and out.loss_dict["loss_giou_hybrid"].item() == 0.0


def test_loss_checks_the_training_predictions():
    logits, boxes = hand_predictions([(0, T0), (1, T1)])
    labels = [{"class_labels": torch.tensor([0]), "boxes": torch.tensor([T0])}]
    loss_fn = DetrLoss(num_labels=2)
    with pytest.raises(ValueError, match="group_logits and group_pred_boxes"):
        loss_fn.compute(logits, boxes, labels, group_logits=logits[None])
    with pytest.raises(ValueError, match=r"group_logits must be \(G, L, B, Q, C\+1\)"):
        loss_fn.compute(logits, boxes, labels, group_logits=logits, group_pred_boxes=boxes)
    with pytest.raises(ValueError, match=r"hybrid_logits must be \(L, B, H, C\+1\)"):
        loss_fn.compute(logits, boxes, labels, hybrid_logits=logits[..., :2], hybrid_pred_boxes=boxes)


# ------------------------------------------------------------------------------------------------------ training


def processor():
    return DetrImageProcessor(size={"shortest_edge": SIZE, "longest_edge": SIZE}, num_labels=3)


def shapes_set(num_images, seed=0, flip_prob=0.0):
    return InMemoryDetectionDataset(make_shapes_dataset(num_images, seed=seed, image_size=SIZE, max_objects=3),
                                    processor(), flip_prob=flip_prob)


def test_trainer_model_loss_equals_compute_loss_func_with_groups(tmp_path):
    train = shapes_set(4)
    batch = DetrDataCollator()([train[i] for i in range(4)])
    losses = {}
    for use_func in (False, True):
        model = model_with(**WITH_BOTH)
        args = DetrTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=1,
                                     report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no",
                                     disable_tqdm=True, dataloader_num_workers=0)
        trainer = DetrTrainer(model=model, args=args, train_dataset=train, data_collator=DetrDataCollator(),
                              compute_loss_func=DetrLoss.from_config(model.config) if use_func else None)
        model.train()
        losses[use_func] = trainer.compute_loss(model, {**batch, "labels": list(batch["labels"])}).item()
    plain = model_with().train()
    plain_loss = plain(**batch).loss.item()
    assert losses[True] == pytest.approx(losses[False], rel=1e-6)
    assert losses[False] > 2 * plain_loss  # the groups' and the branch's losses are in it


def test_trained_with_groups_saves_and_reloads_as_a_plain_detr(tmp_path, fresh_accelerate_state):
    accelerator = Accelerator(cpu=True)
    dataset = shapes_set(8, flip_prob=0.5)
    sampler = EpochShuffleSampler(len(dataset), seed=0)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler, collate_fn=DetrDataCollator(),
                        generator=torch.Generator().manual_seed(0))
    model = model_with(**WITH_BOTH)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = create_detr_optimizer(model, learning_rate=1e-3, backbone_learning_rate=1e-3)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    losses = train_loop(accelerator, model, optimizer, loader, LoopConfig(max_steps=3, progress_bar=False),
                        sampler=sampler)
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    model = accelerator.unwrap_model(model)
    trained = model.state_dict()
    assert not torch.equal(trained["model.training_query_position_embeddings.weight"],
                           before["model.training_query_position_embeddings.weight"])  # they were trained

    batch = DetrDataCollator()([shapes_set(3, seed=1)[i] for i in range(3)])
    model.eval()
    with torch.no_grad():
        expected = model(batch["pixel_values"], pixel_mask=batch["pixel_mask"])

    # The model as trained (with its training queries), loaded into a plain config: they are ignored.
    model.save_pretrained(tmp_path / "as_trained")
    plain_loaded = DetrForObjectDetection.from_pretrained(tmp_path / "as_trained", num_query_groups=1,
                                                          hybrid_queries=0).eval()
    assert plain_loaded.model.training_query_position_embeddings is None
    # The inference model alone: to_plain_detr drops them; the folder is a plain DETR.
    plain = model.to_plain_detr()
    assert plain.config.num_query_groups == 1 and plain.config.hybrid_queries == 0
    assert set(plain.state_dict()) == set(model_with().state_dict())
    plain.save_pretrained(tmp_path / "plain")
    reloaded = AutoModelForObjectDetection.from_pretrained(tmp_path / "plain").eval()
    assert type(reloaded) is DetrForObjectDetection and reloaded.config.num_training_queries == 0
    for candidate in (plain_loaded, plain.eval(), reloaded):
        with torch.no_grad():
            actual = candidate(batch["pixel_values"], pixel_mask=batch["pixel_mask"])
        torch.testing.assert_close(actual.logits, expected.logits, atol=1e-6, rtol=0)
        torch.testing.assert_close(actual.pred_boxes, expected.pred_boxes, atol=1e-6, rtol=0)

    # And the other way: a plain checkpoint fine-tuned with groups gets freshly initialised training queries.
    grouped = DetrForObjectDetection.from_pretrained(tmp_path / "plain", **WITH_BOTH)
    extra = grouped.model.training_query_position_embeddings.weight
    assert torch.isfinite(extra).all() and 0.5 < extra.std().item() < 1.5


def test_build_model_passes_the_options_also_to_a_saved_model(tmp_path):
    id2label = {0: "circle", 1: "square", 2: "triangle"}
    args = DetrModelArguments(backbone="resnet18", d_model=32, encoder_layers=1, decoder_layers=2, attention_heads=4,
                              ffn_dim=64, num_queries=4, num_query_groups=2, hybrid_queries=6, hybrid_repeats=3,
                              giou_loss_coefficient=0.0)
    model = build_model(args, id2label)
    config = model.config
    assert (config.num_query_groups, config.hybrid_queries, config.hybrid_repeats) == (2, 6, 3)
    assert config.giou_loss_coefficient == 0.0 and config.num_training_queries == 4 + 6
    model.to_plain_detr().save_pretrained(tmp_path)
    again = build_model(DetrModelArguments(model_name_or_path=str(tmp_path), num_query_groups=4), id2label)
    assert again.config.num_query_groups == 4 and again.model.training_query_position_embeddings.weight.shape[0] == 12
    with pytest.raises(ValueError, match="num_query_groups"):
        DetrModelArguments(num_query_groups=0)


def test_demo_with_groups_ships_a_plain_detr(tmp_path, fresh_accelerate_state):
    import json

    from safetensors import safe_open

    from detrvilt.training.detr.demo import DemoArguments, run_demo

    summary = run_demo(DemoArguments(output_dir=str(tmp_path), max_steps=2, batch_size=4, train_images=8,
                                     eval_images=4, warmup_steps=1, lr_drop_step=1, progress_bar=False, num_threads=1,
                                     vilt=False, num_query_groups=2, hybrid_queries=6, hybrid_repeats=2))
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["num_query_groups"] == 1 and config["hybrid_queries"] == 0
    with safe_open(tmp_path / "model" / "model.safetensors", "pt") as weights:
        assert not [k for k in weights.keys() if "training_query" in k]
    trained_with = json.loads((tmp_path / "model" / "train_summary.json").read_text())["model_args"]
    assert trained_with["num_query_groups"] == 2 and trained_with["hybrid_queries"] == 6
    assert summary["reload_max_abs_difference"] <= 1e-5
