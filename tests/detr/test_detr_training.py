"""DETR training and evaluation: the paper's optimizer groups, Trainer (model loss == compute_loss_func, COCO mAP
through evaluate), bf16 autocast with fp32 matching, exact resume and the non-finite-loss stop of the Accelerate
loop."""

import math

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from conftest import tiny_detr_config
from torch.utils.data import DataLoader

import detrvilt.modeling.detr.loss_detr as loss_detr
from detrvilt import DetrForObjectDetection, DetrImageProcessor, DetrLoss
from detrvilt.data import DetrDataCollator, make_shapes_dataset, prepare_detection_dataset
from detrvilt.data.detr.sources import InMemoryDetectionDataset
from detrvilt.evaluation import load_metric
from detrvilt.training import (
    DetrCocoMetrics,
    DetrTrainer,
    EpochShuffleSampler,
    LoopConfig,
    create_detr_optimizer,
    create_step_scheduler,
    detr_parameter_groups,
    reference_from_label,
    step_decay_lambda,
    train_loop,
)
from detrvilt.training.detr.arguments import DetrTrainingArguments

SIZE = 64


def shapes(num_images, seed=0):
    return make_shapes_dataset(num_images, seed=seed, image_size=SIZE, max_objects=3, min_objects=0)


def processor():
    return DetrImageProcessor(size={"shortest_edge": SIZE, "longest_edge": SIZE}, num_labels=3)


def tiny_model(**overrides):
    kwargs = dict(num_labels=3, num_queries=6, freeze_batch_norm=False, freeze_backbone_stem=False)
    kwargs.update(overrides)
    torch.manual_seed(0)
    return DetrForObjectDetection(tiny_detr_config(**kwargs))


@pytest.fixture
def fresh_accelerate_state():
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def trainer_args(tmp_path, **overrides):
    kwargs = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, per_device_eval_batch_size=3,
                  max_steps=1, report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no",
                  disable_tqdm=True, dataloader_num_workers=0)
    kwargs.update(overrides)
    return DetrTrainingArguments(**kwargs)


def test_parameter_groups_follow_the_paper():
    model = tiny_model(freeze_backbone_stem=True)
    groups = detr_parameter_groups(model)
    by_name = {group["name"]: group for group in groups}
    assert by_name["transformer"]["lr"] == 1e-4 and by_name["backbone"]["lr"] == 1e-5
    assert all(group["weight_decay"] == 1e-4 for group in groups)
    backbone_ids = {id(p) for n, p in model.named_parameters() if n.startswith("model.backbone.") and p.requires_grad}
    assert {id(p) for p in by_name["backbone"]["params"]} == backbone_ids
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in groups for p in g["params"]} == trainable  # frozen stem left out, nothing twice
    assert len(trainable) < len(list(model.parameters()))
    optimizer = create_detr_optimizer(model)
    assert isinstance(optimizer, torch.optim.AdamW)
    scheduler = create_step_scheduler(optimizer, lr_drop_step=3, warmup_steps=2)
    rates = []
    for _ in range(5):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([5e-5, 1e-4, 1e-4, 1e-5, 1e-5])
    assert step_decay_lambda(None)(10**6) == 1.0
    with pytest.raises(ValueError, match="backbone_learning_rate"):
        detr_parameter_groups(model, backbone_learning_rate=-1)


def test_trainer_compute_loss_func_gives_the_model_loss(tmp_path):
    proc = processor()
    train = prepare_detection_dataset(shapes(4), proc)
    batch = DetrDataCollator()([train[i] for i in range(4)])
    assert sum(len(label["class_labels"]) for label in batch["labels"]) > 0
    losses = {}
    for use_func in (False, True):
        model = tiny_model(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
        func = DetrLoss.from_config(model.config) if use_func else None
        trainer = DetrTrainer(model=model, args=trainer_args(tmp_path), train_dataset=train,
                              data_collator=DetrDataCollator(), compute_loss_func=func)
        model.train()
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop; training_step reads it
        step_inputs = {**batch, "labels": list(batch["labels"])}
        losses[use_func] = (trainer.compute_loss(model, dict(step_inputs)).item(),
                            trainer.training_step(model, dict(step_inputs)).item())
    assert math.isfinite(losses[False][0])
    assert losses[True][0] == pytest.approx(losses[False][0], rel=1e-6)
    assert losses[True][1] == pytest.approx(losses[False][1], rel=1e-6)
    assert losses[False][1] == pytest.approx(losses[False][0], rel=1e-6)  # training_step: same batch, same loss


def test_trainer_evaluate_with_list_of_dict_labels_returns_coco_map(tmp_path):
    proc = processor()
    evaluation = prepare_detection_dataset(shapes(7, seed=1), proc)
    model = tiny_model()
    trainer = DetrTrainer(model=model, args=trainer_args(tmp_path), eval_dataset=evaluation,
                          data_collator=DetrDataCollator(), compute_metrics=DetrCocoMetrics(proc))
    metrics = trainer.evaluate()
    for name in ("eval_loss", "eval_map", "eval_map_50", "eval_map_75", "eval_mar_100"):
        assert name in metrics, sorted(metrics)
    assert metrics["eval_num_images"] == 7  # 3 batches of 3, 3, 1: every image once

    # The same number computed by hand from the model's outputs.
    model.eval()
    examples = [evaluation[i] for i in range(7)]
    batch = DetrDataCollator()(examples)
    with torch.no_grad():
        outputs = model(batch["pixel_values"], pixel_mask=batch["pixel_mask"])
    sizes = [label["orig_size"].tolist() for label in batch["labels"]]
    detections = proc.post_process_object_detection(outputs, threshold=0.0, target_sizes=sizes)
    metric = load_metric("coco_map")
    expected = metric.compute(predictions=[{k: v.tolist() for k, v in d.items()} for d in detections],
                              references=[reference_from_label(label) for label in batch["labels"]])
    assert metrics["eval_map"] == pytest.approx(expected["map"], abs=1e-9)
    assert metrics["eval_map_50"] == pytest.approx(expected["map_50"], abs=1e-9)


def test_trainer_draws_new_flips_every_epoch(tmp_path):
    train = InMemoryDetectionDataset(shapes(4), processor(), flip_prob=0.5)
    epochs = []
    original = train.set_epoch
    train.set_epoch = lambda epoch: (epochs.append(epoch), original(epoch))
    trainer = DetrTrainer(model=tiny_model(), args=trainer_args(tmp_path, max_steps=-1, num_train_epochs=3),
                          train_dataset=train, data_collator=DetrDataCollator())
    trainer.train()
    assert sorted(set(epochs)) == [0, 1, 2]
    draws = set()
    for epoch in range(3):
        original(epoch)
        draws.add(tuple(torch.equal(train[i]["pixel_values"], train.examples[i]["pixel_values"]) for i in range(4)))
    assert len(draws) > 1  # which images are flipped changes from epoch to epoch


def test_trainer_requires_unconcatenated_eval_batches(tmp_path):
    with pytest.raises(ValueError, match="eval_do_concat_batches"):
        DetrTrainer(model=tiny_model(), args=trainer_args(tmp_path, eval_do_concat_batches=True))


def test_reference_is_in_original_pixels():
    label = {"boxes": torch.tensor([[0.5, 0.5, 0.5, 0.25]]), "class_labels": torch.tensor([2]),
             "orig_size": torch.tensor([100, 200]), "size": torch.tensor([50, 100]), "area": torch.tensor([100.0]),
             "iscrowd": torch.tensor([0])}
    reference = reference_from_label(label)
    assert reference["boxes"] == [[50.0, 37.5, 150.0, 62.5]]
    assert reference["area"] == [400.0] and reference["labels"] == [2]


def _loader(num_images=8, batch_size=2, seed=0, flip_prob=0.5):
    dataset = InMemoryDetectionDataset(shapes(num_images), processor(), flip_prob=flip_prob)
    sampler = EpochShuffleSampler(len(dataset), seed=seed)
    # A generator of its own: a DataLoader draws a seed from it each epoch, which must not move the dropout stream.
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=DetrDataCollator(),
                        generator=torch.Generator().manual_seed(seed))
    return loader, sampler


def _run(tmp_path, max_steps, mixed_precision="no", resume=None, checkpointing_steps=None, loss_step=None):
    accelerator = Accelerator(cpu=True, mixed_precision=mixed_precision)
    model = tiny_model()
    optimizer = create_detr_optimizer(model, learning_rate=1e-3, backbone_learning_rate=1e-3)
    scheduler = create_step_scheduler(optimizer, lr_drop_step=3, warmup_steps=2)
    loader, sampler = _loader()
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    config = LoopConfig(max_steps=max_steps, gradient_accumulation_steps=2, checkpointing_steps=checkpointing_steps,
                        output_dir=str(tmp_path), resume_from_checkpoint=resume, progress_bar=False)
    kwargs = {"loss_step": loss_step} if loss_step is not None else {}
    return train_loop(accelerator, model, optimizer, loader, config, scheduler=scheduler, sampler=sampler, **kwargs)


def test_resume_gives_the_losses_of_an_uninterrupted_run(tmp_path, fresh_accelerate_state):
    # 8 images, batch 2, 2 batches per step: an epoch is 2 steps, so the run crosses epochs and the resume point is
    # an epoch boundary plus one step; dropout and flips are on.
    torch.use_deterministic_algorithms(True)
    try:
        full = _run(tmp_path / "full", max_steps=5)
        _run(tmp_path / "stopped", max_steps=3, checkpointing_steps=3)
        resumed = _run(tmp_path / "resumed", max_steps=5, resume=str(tmp_path / "stopped" / "checkpoint-3"))
    finally:
        torch.use_deterministic_algorithms(False)
    assert len(full) == len(resumed) == 5
    assert all(math.isfinite(v) for v in full)
    assert len(set(full)) == 5  # the losses move: a resume that restarts from scratch could not match them
    assert resumed == pytest.approx(full, rel=1e-6, abs=0)


def test_bf16_step_runs_and_matching_stays_fp32(tmp_path, monkeypatch, fresh_accelerate_state):
    seen = {"match_logits": [], "giou": [], "giou_loss": []}
    original_match = loss_detr.HungarianMatcher.match_targets
    original_giou = loss_detr.generalized_box_iou
    original_giou_loss = loss_detr.generalized_box_iou_loss

    def match_targets(self, logits, *args, **kwargs):
        seen["match_logits"].append(logits.dtype)
        return original_match(self, logits, *args, **kwargs)

    def giou(a, b):
        seen["giou"].append((a.dtype, b.dtype, torch.is_autocast_enabled("cpu")))
        return original_giou(a, b)

    def giou_loss(a, b, **kwargs):
        seen["giou_loss"].append((a.dtype, b.dtype, torch.is_autocast_enabled("cpu")))
        return original_giou_loss(a, b, **kwargs)

    monkeypatch.setattr(loss_detr.HungarianMatcher, "match_targets", match_targets)
    monkeypatch.setattr(loss_detr, "generalized_box_iou", giou)
    monkeypatch.setattr(loss_detr, "generalized_box_iou_loss", giou_loss)
    losses = _run(tmp_path, max_steps=1, mixed_precision="bf16")
    assert len(losses) == 1 and math.isfinite(losses[0])
    assert torch.bfloat16 in seen["match_logits"]  # autocast was on: the heads produced bf16
    assert seen["giou"] and all(entry == (torch.float32, torch.float32, False) for entry in seen["giou"])
    assert seen["giou_loss"] and all(entry == (torch.float32, torch.float32, False) for entry in seen["giou_loss"])


def test_non_finite_loss_stops_with_the_step_and_image_ids(tmp_path, fresh_accelerate_state):
    calls = []

    def loss_step(model, batch):
        calls.append(batch)
        loss = model(**batch).loss
        return (loss * float("nan") if len(calls) == 3 else loss), {}

    with pytest.raises(FloatingPointError, match=r"step 2 \(batch 1 of the step\), image ids: \[\d+, \d+\]") as info:
        _run(tmp_path, max_steps=3, loss_step=loss_step)
    ids = [int(label["image_id"]) for label in calls[2]["labels"]]
    assert str(ids) in str(info.value)
