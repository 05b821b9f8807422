"""A small training and evaluation loop for DETR's panoptic head on in-memory COCO panoptic examples.

Used by ``scripts/train_detr_panoptic.py`` and its tests on the synthetic set of `detrvilt.data.detr.panoptic_shapes`.
Training is the paper's recipe at toy scale: AdamW, gradient clipping at 0.1, the Hungarian loss with the mask
focal and dice losses; `DetrForSegmentation.freeze_detector()` gives the second stage (head only). Evaluation is the
official panoptic post-processing followed by the `panoptic_quality` metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ...evaluation import load_metric


def panoptic_batch(processor, examples: Sequence[dict]):
    """`pixel_values`, `pixel_mask` and `labels` (with `masks`) for a list of COCO panoptic examples."""
    annotations = [{"segmentation": e["segmentation"], "segments_info": e["segments_info"],
                    "image_id": e.get("image_id", -1)} for e in examples]
    return processor([e["image"] for e in examples], annotations=annotations)


def train_panoptic(model, processor, examples: Sequence[dict], steps: int, batch_size: int = 8,
                   learning_rate: float = 2e-4, weight_decay: float = 1e-4, max_grad_norm: float = 0.1,
                   seed: int = 0, log_every: int = 0) -> list[float]:
    """Train `model` (a `DetrForSegmentation`) for `steps` steps on shuffled batches of `examples`.

    Only parameters with `requires_grad` are optimized (so a frozen detector stays as it is). Returns the loss of
    every step.
    """
    if steps < 0 or batch_size < 1:
        raise ValueError(f"steps must be >= 0 and batch_size >= 1, got {steps} and {batch_size}")
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("model has no trainable parameter")
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    order, position, losses = rng.permutation(len(examples)), 0, []
    model.train()
    for step in range(steps):
        if position + batch_size > len(order):
            order, position = rng.permutation(len(examples)), 0
        batch = panoptic_batch(processor, [examples[i] for i in order[position:position + batch_size]])
        position += batch_size
        outputs = model(batch["pixel_values"], pixel_mask=batch["pixel_mask"], labels=batch["labels"])
        optimizer.zero_grad(set_to_none=True)
        outputs.loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
        optimizer.step()
        losses.append(float(outputs.loss.detach()))
        if not math.isfinite(losses[-1]):
            raise RuntimeError(f"the loss became {losses[-1]} at step {step}")
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}/{steps}: loss {np.mean(losses[-log_every:]):.3f}", flush=True)
    model.eval()
    return losses


@torch.no_grad()
def evaluate_panoptic(model, processor, examples: Sequence[dict], categories: Sequence[dict], batch_size: int = 16,
                      thresholds: Sequence[float] = (0.85,)) -> dict:
    """Panoptic quality of `model` on `examples` for each post-processing score threshold.

    Args:
        categories (`list[dict]`): `{"id", "isthing"}` of every class; stuff classes are fused into one segment each.
        thresholds (`Sequence[float]`): the post-processing's score thresholds (0.85 is the official value).

    Returns:
        `{threshold: result}`, each result the `panoptic_quality` output (`pq`, `sq`, `rq`, things, stuff,
        `per_class`).
    """
    stuff = [c["id"] for c in categories if not c["isthing"]]
    metrics = {threshold: load_metric("panoptic_quality") for threshold in thresholds}
    was_training = model.training
    model.eval()
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = processor([e["image"] for e in chunk])
        outputs = model(batch["pixel_values"], pixel_mask=batch["pixel_mask"])
        sizes = [e["segmentation"].shape for e in chunk]
        references = [{"segmentation": e["segmentation"], "segments_info": e["segments_info"]} for e in chunk]
        for threshold, metric in metrics.items():
            predictions = processor.post_process_panoptic_segmentation(
                outputs, threshold=threshold, label_ids_to_fuse=stuff, target_sizes=sizes,
                pixel_mask=batch["pixel_mask"],
            )
            metric.add_batch(predictions=predictions, references=references)
    model.train(was_training)
    return {threshold: metric.compute(categories=list(categories)) for threshold, metric in metrics.items()}


def run_panoptic_shapes(
    num_train_images: int = 200,
    num_eval_images: int = 40,
    image_size: int = 64,
    backbone: str = "resnet18",
    d_model: int = 64,
    layers: int = 2,
    num_queries: int = 10,
    steps: int = 100,
    head_steps: int = 0,
    batch_size: int = 8,
    learning_rate: float = 3e-4,
    thresholds: Sequence[float] = (0.85, 0.5),
    seed: int = 0,
    log_every: int = 0,
) -> tuple[dict, object]:
    """Train a small `DetrForSegmentation` from scratch on the synthetic panoptic shapes and measure PQ.

    Stage 1 trains everything for `steps` steps (boxes and masks together); stage 2 (when `head_steps` > 0) freezes
    the detector and trains the mask head only, the paper's second stage. PQ on `num_eval_images` held-out images
    (another seed) is measured before training (the untrained head) and after each stage.

    Returns:
        `(summary, model)`: `summary` has `pq_untrained`, `pq_after_stage1` (and `pq_after_stage2`), each
        `{str(threshold): panoptic_quality result without per_class}` for the post-processing `thresholds`, the
        final losses, the settings and `num_threads` (torch's CPU threads during the run).
    """
    settings = dict(locals(), thresholds=list(thresholds))  # the arguments, before anything else is defined
    from ...data.detr.panoptic_shapes import make_panoptic_shapes, panoptic_categories
    from ...modeling.detr.configuration_detr_segmentation import DetrSegmentationConfig
    from ...modeling.detr.image_processing_detr import DetrImageProcessor
    from ...modeling.detr.modeling_detr_segmentation import DetrForSegmentation

    torch.manual_seed(seed)
    train_set = make_panoptic_shapes(num_train_images, seed=seed, image_size=image_size)
    eval_set = make_panoptic_shapes(num_eval_images, seed=seed + 1000, image_size=image_size)
    categories = panoptic_categories()
    heads = 8 if d_model % 8 == 0 else 4
    config = DetrSegmentationConfig(
        backbone=backbone, d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=2 * d_model,
        decoder_ffn_dim=2 * d_model, num_queries=num_queries, num_labels=len(categories),
        id2label={c["id"]: c["name"] for c in categories},
        # From scratch on a CPU: trainable batch norms and stem (frozen ones suit ImageNet weights), no dropout.
        freeze_batch_norm=False, freeze_backbone_stem=False, dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0,
    )
    model = DetrForSegmentation(config)
    processor = DetrImageProcessor(do_resize=False)

    def pq():
        results = evaluate_panoptic(model, processor, eval_set, categories, thresholds=thresholds)
        return {str(t): {k: v for k, v in r.items() if k != "per_class"} for t, r in results.items()}

    # The thread count sets the order of the CPU reductions: the run repeats exactly only at the same count.
    summary = {"settings": settings, "num_threads": torch.get_num_threads(), "pq_untrained": pq()}
    losses = train_panoptic(model, processor, train_set, steps, batch_size, learning_rate, seed=seed,
                            log_every=log_every)
    summary["stage1_final_loss"] = float(np.mean(losses[-10:])) if losses else None
    summary["pq_after_stage1"] = pq()
    if head_steps:
        model.freeze_detector()
        losses = train_panoptic(model, processor, train_set, head_steps, batch_size, learning_rate, seed=seed + 1,
                                log_every=log_every)
        summary["stage2_final_loss"] = float(np.mean(losses[-10:]))
        summary["pq_after_stage2"] = pq()
    return summary, model
