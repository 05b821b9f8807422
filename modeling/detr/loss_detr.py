"""The Hungarian (set-prediction) loss of DETR.

A bipartite matching between the N predicted slots and the M ground-truth objects of each image (found by
``scipy.optimize.linear_sum_assignment`` on a cost that mixes class probability, L1 box distance and GIoU),
then cross-entropy on every slot (unmatched slots must predict "no object", down-weighted by ``eos_coef``) and
L1 + GIoU on the matched boxes, normalized by the number of ground-truth boxes. With auxiliary decoding losses
the same loss, with its own matching, is applied to the output of every decoder layer.

Follows the algorithm of facebookresearch/detr (``models/matcher.py``, ``models/detr.py``). Changes:

- the cost matrices of all decoder layers and all images are built in one batched pass (per image, padded to
  the largest target count, not across the whole batch) and copied to the host once;
- non-finite costs are replaced on the host by a value larger than any finite cost, so that NaN predictions
  are matched last instead of crashing the solver;
- the losses of all layers are computed together from one gather of the matched pairs;
- ``num_boxes`` is the box count summed over all processes divided by the world size, clamped to >= 1, as the
  official code does (transformers' DETR loss divides by the world size twice under Accelerate);
- everything runs in fp32 with autocast disabled.

Training-only queries (see ``DetrConfig``) add two losses, each the same Hungarian loss on its own queries:
Group DETR's extra query groups (Chen et al., 2022), each group matched one-to-one to the targets independently (the
groups are stacked with the decoder layers and matched in the same pass); and H-DETR's one-to-many branch (Jia et
al., 2023), matched one-to-one against the targets repeated ``hybrid_repeats`` times. Their box losses are divided
by the same global ``num_boxes`` (for the branch: of the repeated targets), so they are multi-process correct too.
"""

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou, generalized_box_iou_loss

from .loss_detr_segmentation import (
    check_mask_labels,
    dice_loss,
    pad_target_masks,
    pairwise_mask_costs,
    sigmoid_focal_loss,
    upsample_masks,
)


def check_detection_labels(labels, batch_size: int) -> None:
    """Check the structure of detection labels (no device sync); raise `TypeError`/`ValueError` naming the culprit.

    Args:
        labels (`list[dict]`): one dict per image with `class_labels` (`torch.LongTensor` of shape `(n,)`) and
            `boxes` (`torch.FloatTensor` of shape `(n, 4)`, normalized cx, cy, w, h).
        batch_size (`int`): number of images the labels must describe.
    """
    if not isinstance(labels, Sequence) or isinstance(labels, (str, bytes)):
        raise TypeError(f"labels must be a list with one dict per image, got {type(labels).__name__}")
    if len(labels) != batch_size:
        raise ValueError(f"labels must have one dict per image ({batch_size}), got {len(labels)}")
    for i, target in enumerate(labels):
        if not isinstance(target, Mapping):
            raise TypeError(f"labels[{i}] must be a dict, got {type(target).__name__}")
        for key in ("class_labels", "boxes"):
            if key not in target:
                raise ValueError(f"labels[{i}] is missing the key {key!r} (has {sorted(target)})")
            if not isinstance(target[key], torch.Tensor):
                raise TypeError(f"labels[{i}][{key!r}] must be a torch.Tensor, got {type(target[key]).__name__}")
        classes, boxes = target["class_labels"], target["boxes"]
        if boxes.ndim != 2 or boxes.shape[-1] != 4:
            raise ValueError(
                f"labels[{i}]['boxes'] must be (n, 4) in normalized cxcywh, got shape {tuple(boxes.shape)}"
            )
        if not boxes.is_floating_point():
            raise TypeError(f"labels[{i}]['boxes'] must be a float tensor, got {boxes.dtype}")
        if classes.ndim != 1 or classes.shape[0] != boxes.shape[0]:
            raise ValueError(
                f"labels[{i}]['class_labels'] must be (n,) with n = {boxes.shape[0]} boxes, "
                f"got shape {tuple(classes.shape)}"
            )
        if classes.is_floating_point() or classes.dtype == torch.bool:
            raise TypeError(f"labels[{i}]['class_labels'] must be an integer tensor, got {classes.dtype}")


def _flatten_targets(labels, device):
    """Concatenate the targets of all images. Returns class ids (T,), boxes (T, 4) in fp32 and per-image counts."""
    sizes = [len(t["class_labels"]) for t in labels]
    class_ids = torch.cat([t["class_labels"] for t in labels]).to(device=device, dtype=torch.int64)
    boxes = torch.cat([t["boxes"] for t in labels]).to(device=device, dtype=torch.float32)
    return class_ids, boxes, sizes


class HungarianMatcher(nn.Module):
    """One-to-one assignment between predicted slots and ground-truth objects, per image and per decoder layer.

    There are more slots than objects, so each object gets exactly one slot and the remaining slots are left
    unmatched: the loss then teaches them to predict "no object". The cost of giving object j to slot i is
    ``class_cost * (-p_i(c_j)) + bbox_cost * |b_i - b_j|_1 + giou_cost * (-GIoU(b_i, b_j))``; the negative
    probability (not the log) keeps the class term on the scale of the box terms, as in the paper.

    Args:
        class_cost (`float`): weight of the classification term.
        bbox_cost (`float`): weight of the L1 distance between normalized cx, cy, w, h boxes.
        giou_cost (`float`): weight of the generalized IoU term.
    """

    def __init__(self, class_cost: float = 1.0, bbox_cost: float = 5.0, giou_cost: float = 2.0):
        super().__init__()
        if min(class_cost, bbox_cost, giou_cost) < 0 or not any((class_cost, bbox_cost, giou_cost)):
            raise ValueError(
                "matching costs must be >= 0 and not all zero, "
                f"got class/bbox/giou = {(class_cost, bbox_cost, giou_cost)}"
            )
        self.class_cost = class_cost
        self.bbox_cost = bbox_cost
        self.giou_cost = giou_cost

    @torch.no_grad()
    def forward(self, logits: torch.Tensor, pred_boxes: torch.Tensor, labels) -> list:
        """
        Args:
            logits (`torch.FloatTensor` of shape `(batch_size, num_queries, num_labels + 1)`, or with a leading
                `num_layers` dimension): class logits, the last class being "no object".
            pred_boxes (`torch.FloatTensor` of the same leading shape and last dimension 4): normalized cx, cy, w, h.
            labels (`list[dict]`): per image `class_labels` `(n,)` and `boxes` `(n, 4)` (normalized cx, cy, w, h).

        Returns:
            For 3-D inputs, a list with one `(pred_indices, target_indices)` pair of `torch.LongTensor` (on the CPU)
            per image, each of length `min(num_queries, n)`, `pred_indices` sorted; for 4-D inputs, one such list
            per layer.

        Raises:
            `ValueError` if a class id is outside `[0, num_labels)`, `num_labels` being the logits' classes minus one.
        """
        stacked = logits.ndim == 4
        if not stacked:
            logits, pred_boxes = logits[None], pred_boxes[None]
        check_detection_labels(labels, logits.shape[1])
        indices = self.match_layers(logits, pred_boxes, labels, num_labels=logits.shape[-1] - 1)
        as_tensors = [
            [(torch.as_tensor(p, dtype=torch.int64), torch.as_tensor(t, dtype=torch.int64)) for p, t in layer]
            for layer in indices
        ]
        return as_tensors if stacked else as_tensors[0]

    @torch.no_grad()
    def match_layers(self, logits: torch.Tensor, pred_boxes: torch.Tensor, labels, num_labels: int | None = None):
        """Matching for stacked layers, `logits` `(L, B, Q, C+1)` and `pred_boxes` `(L, B, Q, 4)`.

        Returns a list (per layer) of lists (per image) of `(pred_indices, target_indices)` numpy int64 arrays.
        If `num_labels` is given, class ids outside `[0, num_labels)` raise `ValueError` (checked on the host,
        after the single device-to-host copy, so the check costs no extra sync).
        """
        return self.match_targets(logits, pred_boxes, *_flatten_targets(labels, logits.device), num_labels)

    @torch.no_grad()
    def match_targets(self, logits, pred_boxes, class_ids, target_boxes, sizes, num_labels=None, extra_cost=None):
        """`match_layers` on targets already concatenated: class ids `(T,)`, boxes `(T, 4)`, per-image counts.

        `extra_cost` (`(B, Q, T)`, optional) is added to the final layer's cost: entry `(b, q, t)` for the targets
        `t` of image `b` (e.g. the mask costs of the panoptic head; other entries are ignored).
        """
        num_layers, batch_size, num_queries, num_classes = logits.shape
        max_targets = max(sizes, default=0)
        if max_targets == 0:
            empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
            return [[empty] * batch_size for _ in range(num_layers)]

        # Pad the targets per image to max_targets: costs are computed per image, never across images.
        image_of_target = np.repeat(np.arange(batch_size), sizes)
        slot = np.arange(len(image_of_target)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        image_of_target, slot = torch.from_numpy(np.stack([image_of_target, slot])).to(logits.device, non_blocking=True)
        padded_ids = class_ids.new_zeros(batch_size, max_targets)
        padded_boxes = target_boxes.new_full((batch_size, max_targets, 4), 0.5)
        padded_ids[image_of_target, slot] = class_ids.clamp(0, num_classes - 1)  # clamped here, checked below
        padded_boxes[image_of_target, slot] = target_boxes

        with torch.autocast(device_type=logits.device.type, enabled=False):
            prob = logits.float().softmax(-1)  # (L, B, Q, C+1)
            boxes = pred_boxes.float()
            index = padded_ids[None, :, None, :].expand(num_layers, -1, num_queries, -1)
            cost_class = -prob.gather(-1, index)  # (L, B, Q, M)
            cost_bbox = torch.cdist(boxes, padded_boxes[None].expand(num_layers, -1, -1, -1), p=1)  # (L, B, Q, M)
            cost_giou = -generalized_box_iou(
                box_convert(boxes, "cxcywh", "xyxy"),
                box_convert(padded_boxes, "cxcywh", "xyxy")[None].expand(num_layers, -1, -1, -1),
            )  # (L, B, Q, M)
            cost = self.bbox_cost * cost_bbox + self.class_cost * cost_class + self.giou_cost * cost_giou
            if extra_cost is not None:
                targets = torch.arange(len(class_ids), device=logits.device)
                padded_extra = cost.new_zeros(batch_size, num_queries, max_targets)
                padded_extra[image_of_target, :, slot] = extra_cost.float()[image_of_target, :, targets]
                cost[-1] += padded_extra

        # One device-to-host copy: the costs, plus each image's smallest and largest class id for the range check.
        id_range = torch.stack([
            class_ids.new_zeros(batch_size).scatter_reduce(0, image_of_target, class_ids, "amin", include_self=False),
            class_ids.new_zeros(batch_size).scatter_reduce(0, image_of_target, class_ids, "amax", include_self=False),
        ], dim=1)
        host = torch.cat([cost.flatten(), id_range.flatten().float()]).cpu().numpy()
        cost_np = host[: cost.numel()].reshape(num_layers, batch_size, num_queries, max_targets)
        if num_labels is not None:
            id_range_np = host[cost.numel():].reshape(batch_size, 2)
            for i, size in enumerate(sizes):
                low, high = id_range_np[i]
                if size and (low < 0 or high >= num_labels):
                    bad = int(low) if low < 0 else int(high)
                    raise ValueError(
                        f"labels[{i}]['class_labels'] must be in [0, num_labels={num_labels}), got class id {bad}"
                    )

        finite = np.isfinite(cost_np)
        if not finite.all():
            # Larger than any finite cost: such pairs are matched only when nothing else is left.
            largest = np.abs(cost_np[finite]).max(initial=0.0)
            cost_np = np.where(finite, cost_np, 1e3 * (1.0 + largest))

        return [
            [linear_sum_assignment(cost_np[layer, i, :, :size]) if size else
             (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
             for i, size in enumerate(sizes)]
            for layer in range(num_layers)
        ]


# The model outputs of the training-only queries that the loss reads (see `DetrForObjectDetection`).
TRAINING_PREDICTIONS = ("group_logits", "group_pred_boxes", "hybrid_logits", "hybrid_pred_boxes")


def _repeat_targets(values: torch.Tensor, sizes, repeats: int) -> torch.Tensor:
    """Targets concatenated over images (`(T, ...)`, `sizes` per image) with each image's block repeated `repeats`
    times in place: image 0's targets `repeats` times, then image 1's, ... (`(repeats * T, ...)`)."""
    blocks = values.split(list(sizes))
    return torch.cat([block.repeat(repeats, *([1] * (block.ndim - 1))) for block in blocks]) if blocks else values


def _get(outputs, key):
    return outputs.get(key) if isinstance(outputs, Mapping) else getattr(outputs, key, None)


class DetrLoss(nn.Module):
    """The Hungarian loss of DETR, for the final decoder layer and (optionally) every auxiliary layer.

    Use it inside the model (`forward(labels=...)` calls it) or on its own, e.g. as Trainer's
    `compute_loss_func`: ``loss = DetrLoss.from_config(config)(outputs, labels)``.

    With predicted masks (the panoptic model) the matched masks of the final layer add a sigmoid focal loss
    (`loss_mask`) and a dice loss (`loss_dice`), see `loss_detr_segmentation.py`.

    Args:
        num_labels (`int`): number of object classes (the "no object" class is `num_labels`).
        matcher (`HungarianMatcher`): the matching.
        eos_coef (`float`): weight of the "no object" class in the cross-entropy.
        ce_loss_coefficient, bbox_loss_coefficient, giou_loss_coefficient (`float`): weights of the three losses
            in the total.
        mask_loss_coefficient, dice_loss_coefficient (`float`): weights of the focal and dice mask losses.
        focal_alpha, focal_gamma (`float`): the focal loss's alpha (negative: none) and gamma.
        mask_cost, dice_cost (`float`): weights of the focal and dice terms in the final layer's matching cost
            (0: match on classes and boxes only, as the paper).
        hybrid_repeats (`int`): how often each target is repeated for the one-to-many (hybrid) branch.
        hybrid_loss_coefficient (`float`): weight of the one-to-many branch's loss in the total.
    """

    def __init__(
        self,
        num_labels: int,
        matcher: HungarianMatcher | None = None,
        eos_coef: float = 0.1,
        ce_loss_coefficient: float = 1.0,
        bbox_loss_coefficient: float = 5.0,
        giou_loss_coefficient: float = 2.0,
        mask_loss_coefficient: float = 1.0,
        dice_loss_coefficient: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        mask_cost: float = 0.0,
        dice_cost: float = 0.0,
        hybrid_repeats: int = 6,
        hybrid_loss_coefficient: float = 1.0,
    ):
        super().__init__()
        if not isinstance(hybrid_repeats, int) or hybrid_repeats < 1:
            raise ValueError(f"hybrid_repeats must be a positive integer, got {hybrid_repeats!r}")
        self.num_labels = num_labels
        self.matcher = matcher if matcher is not None else HungarianMatcher()
        self.eos_coef = eos_coef
        self.weights = {"loss_ce": ce_loss_coefficient, "loss_bbox": bbox_loss_coefficient,
                        "loss_giou": giou_loss_coefficient}
        self.mask_weights = {"loss_mask": mask_loss_coefficient, "loss_dice": dice_loss_coefficient}
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.mask_cost = mask_cost
        self.dice_cost = dice_cost
        self.hybrid_repeats = hybrid_repeats
        self.hybrid_loss_coefficient = hybrid_loss_coefficient

    @classmethod
    def from_config(cls, config) -> "DetrLoss":
        """Build the loss from a [`DetrConfig`] (matching costs, loss weights, `eos_coefficient`, `num_labels`), and
        from the mask settings of a [`DetrSegmentationConfig`] when it is one."""
        mask_settings = ("mask_loss_coefficient", "dice_loss_coefficient", "focal_alpha", "focal_gamma", "mask_cost",
                         "dice_cost")
        return cls(
            **{name: getattr(config, name) for name in mask_settings if hasattr(config, name)},
            num_labels=config.num_labels,
            matcher=HungarianMatcher(config.class_cost, config.bbox_cost, config.giou_cost),
            eos_coef=config.eos_coefficient,
            ce_loss_coefficient=config.ce_loss_coefficient,
            bbox_loss_coefficient=config.bbox_loss_coefficient,
            giou_loss_coefficient=config.giou_loss_coefficient,
            hybrid_repeats=getattr(config, "hybrid_repeats", 6),
            hybrid_loss_coefficient=getattr(config, "hybrid_loss_coefficient", 1.0),
        )

    def forward(self, outputs, labels, num_items_in_batch=None) -> torch.Tensor:
        """The total loss, with the signature Trainer's `compute_loss_func` expects.

        Args:
            outputs: a model output (or dict) with `logits` `(B, Q, C+1)`, `pred_boxes` `(B, Q, 4)`, when
                auxiliary losses are wanted `auxiliary_outputs` (a list of dicts with the same two keys), for the
                mask losses `pred_masks` `(B, Q, h, w)` (then `labels` need `masks`), and in training with query
                groups or a hybrid branch their predictions (`group_logits`, `group_pred_boxes`, `hybrid_logits`,
                `hybrid_pred_boxes`, see [`compute`]).
            labels (`list[dict]`): see [`check_detection_labels`].
            num_items_in_batch: ignored; the box count is taken from `labels` and summed over processes.
        """
        return self.loss_and_dict(outputs, labels)[0]

    def loss_and_dict(self, outputs, labels) -> tuple[torch.Tensor, dict]:
        """Like `forward`, also returning the dict of every term (see [`compute`])."""
        logits, pred_boxes = _get(outputs, "logits"), _get(outputs, "pred_boxes")
        if logits is None or pred_boxes is None:
            raise ValueError("outputs must have 'logits' and 'pred_boxes'")
        auxiliary = _get(outputs, "auxiliary_outputs") or []
        logits = torch.stack([a["logits"] for a in auxiliary] + [logits])
        pred_boxes = torch.stack([a["pred_boxes"] for a in auxiliary] + [pred_boxes])
        training = {name: _get(outputs, name) for name in TRAINING_PREDICTIONS}
        return self.compute(logits, pred_boxes, labels, pred_masks=_get(outputs, "pred_masks"), **training)

    def compute(self, logits: torch.Tensor, pred_boxes: torch.Tensor, labels,
                pred_masks: torch.Tensor | None = None, group_logits: torch.Tensor | None = None,
                group_pred_boxes: torch.Tensor | None = None, hybrid_logits: torch.Tensor | None = None,
                hybrid_pred_boxes: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """
        Args:
            logits (`torch.FloatTensor` of shape `(num_layers, batch_size, num_queries, num_labels + 1)`): class
                logits of every decoder layer whose loss is wanted, the final layer last.
            pred_boxes (`torch.FloatTensor` of shape `(num_layers, batch_size, num_queries, 4)`): normalized cx, cy,
                w, h boxes of the same layers.
            labels (`list[dict]`): one dict per image, `class_labels` `(n,)` and `boxes` `(n, 4)` (normalized cx,
                cy, w, h, relative to the unpadded image). Images without objects have `boxes` of shape `(0, 4)`.
                With `pred_masks`, also `masks` (`(n, h_i, w_i)`, 0/1, in the pixels of the padded input: top-left
                aligned, any size up to the padded one).
            pred_masks (`torch.FloatTensor` of shape `(batch_size, num_queries, h, w)`, *optional*): mask logits of
                the final layer (a quarter of the padded input); adds `loss_mask` and `loss_dice`.
            group_logits (`torch.FloatTensor` of shape `(G, num_layers, batch_size, num_queries, num_labels + 1)`)
                and group_pred_boxes (`(G, num_layers, batch_size, num_queries, 4)`), *optional*: Group DETR's extra
                query groups; each group and layer is matched one-to-one on its own and adds its Hungarian loss.
            hybrid_logits (`torch.FloatTensor` of shape `(num_layers, batch_size, H, num_labels + 1)`) and
                hybrid_pred_boxes (`(num_layers, batch_size, H, 4)`), *optional*: the one-to-many branch, matched
                against every target repeated `hybrid_repeats` times; adds `hybrid_loss_coefficient` times its
                Hungarian loss (box losses divided by the global count of repeated targets).

        Returns:
            `(loss, loss_dict)`: `loss` the weighted sum over layers (and groups and branch); `loss_dict` with
            `loss_ce`, `loss_bbox`, `loss_giou`, `cardinality_error` (and `loss_mask`, `loss_dice`) for the final
            layer and the same names (masks excepted) suffixed `_{i}` for auxiliary layer `i` (0 = first decoder
            layer); with query groups `loss_ce_groups`, `loss_bbox_groups`, `loss_giou_groups` (final layer, mean over
            the extra groups), with the hybrid branch `loss_ce_hybrid`, `loss_bbox_hybrid`, `loss_giou_hybrid` (final
            layer).
        """
        if logits.ndim != 4 or pred_boxes.shape != logits.shape[:3] + (4,):
            raise ValueError(
                f"logits must be (L, B, Q, C+1) and pred_boxes (L, B, Q, 4), got {tuple(logits.shape)} and "
                f"{tuple(pred_boxes.shape)}"
            )
        if logits.shape[-1] != self.num_labels + 1:
            raise ValueError(f"logits must have num_labels + 1 = {self.num_labels + 1} classes, got {logits.shape[-1]}")
        num_layers, batch_size, num_queries, _ = logits.shape
        device = logits.device
        check_detection_labels(labels, batch_size)
        num_groups = self._check_training_predictions(logits, pred_masks, group_logits, group_pred_boxes,
                                                      hybrid_logits, hybrid_pred_boxes)
        if num_groups:  # matched and weighed like extra decoder layers, after the model's own
            logits = torch.cat([logits, group_logits.flatten(0, 1)])  # ((1 + G) * L, B, Q, C+1)
            pred_boxes = torch.cat([pred_boxes, group_pred_boxes.flatten(0, 1)])
        class_ids, target_boxes, sizes = _flatten_targets(labels, device)
        target_masks = extra_cost = None
        if pred_masks is not None:
            if pred_masks.ndim != 4 or pred_masks.shape[:2] != logits.shape[1:3]:
                raise ValueError(f"pred_masks must be (batch_size, num_queries, h, w) = {tuple(logits.shape[1:3])} + "
                                 f"(h, w), got shape {tuple(pred_masks.shape)}")
            check_mask_labels(labels)
            target_masks = pad_target_masks(labels, device)  # (T, H, W)
            if (self.mask_cost or self.dice_cost) and len(target_masks):
                extra_cost = self._mask_matching_cost(pred_masks, target_masks)
        per_layer, pairs, num_boxes = self._layer_losses(logits, pred_boxes, class_ids, target_boxes, sizes,
                                                         extra_cost)
        layer_idx, image_idx, query_idx, target_idx = pairs

        own = {name: values[:num_layers] for name, values in per_layer.items()}  # the model's own queries
        loss = sum(self.weights[name] * own[name].sum() for name in self.weights)
        loss_dict = {name: values[-1] for name, values in own.items()}  # the final layer first
        if pred_masks is not None:
            final = layer_idx == num_layers - 1
            mask_losses = self._mask_losses(pred_masks, target_masks, image_idx[final], query_idx[final],
                                            target_idx[final], num_boxes)
            loss = loss + sum(self.mask_weights[name] * value for name, value in mask_losses.items())
            loss_dict.update(mask_losses)
        for layer in range(num_layers - 1):
            loss_dict.update({f"{name}_{layer}": values[layer] for name, values in own.items()})
        if num_groups:
            groups = {name: per_layer[name][num_layers:].view(num_groups, num_layers) for name in self.weights}
            loss = loss + sum(self.weights[name] * groups[name].sum() for name in self.weights)
            loss_dict.update({f"{name}_groups": groups[name][:, -1].mean() for name in self.weights})
        if hybrid_logits is not None:
            repeats = self.hybrid_repeats
            hybrid, _, _ = self._layer_losses(
                hybrid_logits, hybrid_pred_boxes, _repeat_targets(class_ids, sizes, repeats),
                _repeat_targets(target_boxes, sizes, repeats), [size * repeats for size in sizes])
            loss = loss + self.hybrid_loss_coefficient * sum(self.weights[name] * hybrid[name].sum()
                                                             for name in self.weights)
            loss_dict.update({f"{name}_hybrid": hybrid[name][-1] for name in self.weights})
        return loss, loss_dict

    @staticmethod
    def _check_training_predictions(logits, pred_masks, group_logits, group_pred_boxes, hybrid_logits,
                                    hybrid_pred_boxes) -> int:
        """Check the shapes of the query groups' and the hybrid branch's predictions; return the number of extra
        groups."""
        for name, class_logits, boxes in (("group", group_logits, group_pred_boxes),
                                          ("hybrid", hybrid_logits, hybrid_pred_boxes)):
            if (class_logits is None) != (boxes is None):
                raise ValueError(f"{name}_logits and {name}_pred_boxes must be given together")
        if pred_masks is not None and (group_logits is not None or hybrid_logits is not None):
            raise ValueError("the mask losses (pred_masks) cannot be combined with query groups or a hybrid branch")
        num_layers, batch_size, num_queries, num_classes = logits.shape
        if group_logits is not None:
            if (group_logits.ndim != 5 or group_logits.shape[1:] != logits.shape
                    or group_pred_boxes.shape != group_logits.shape[:4] + (4,)):
                raise ValueError(
                    f"group_logits must be (G, L, B, Q, C+1) = (G, {num_layers}, {batch_size}, {num_queries}, "
                    f"{num_classes}) and group_pred_boxes (G, L, B, Q, 4), got {tuple(group_logits.shape)} and "
                    f"{tuple(group_pred_boxes.shape)}"
                )
        if hybrid_logits is not None:
            if (hybrid_logits.ndim != 4 or hybrid_logits.shape[:2] != (num_layers, batch_size)
                    or hybrid_logits.shape[-1] != num_classes
                    or hybrid_pred_boxes.shape != hybrid_logits.shape[:3] + (4,)):
                raise ValueError(
                    f"hybrid_logits must be (L, B, H, C+1) = ({num_layers}, {batch_size}, H, {num_classes}) and "
                    f"hybrid_pred_boxes (L, B, H, 4), got {tuple(hybrid_logits.shape)} and "
                    f"{tuple(hybrid_pred_boxes.shape)}"
                )
        return 0 if group_logits is None else group_logits.shape[0]

    def _layer_losses(self, logits, pred_boxes, class_ids, target_boxes, sizes, extra_cost=None):
        """Match every layer `(L, B, Q, .)` to the concatenated targets (class ids `(T,)`, boxes `(T, 4)`, per-image
        counts `sizes`) and return `(per_layer, pairs, num_boxes)`: `per_layer` maps `loss_ce`, `loss_bbox`,
        `loss_giou`, `cardinality_error` to `(L,)` tensors; `pairs` is the `(4, P)` tensor of matched (layer, image,
        query, target row); `num_boxes` the global box count per process (see [`_num_boxes`])."""
        num_layers, batch_size, num_queries, _ = logits.shape
        device = logits.device
        indices = self.matcher.match_targets(logits, pred_boxes, class_ids, target_boxes, sizes, self.num_labels,
                                             extra_cost)

        # Matched pairs of all layers, built on the host and moved in one copy: layer, image, slot, target row.
        offsets = np.cumsum(sizes) - sizes
        rows = [
            np.stack([np.full(len(pred), layer), np.full(len(pred), image), pred, offsets[image] + tgt])
            for layer, per_image in enumerate(indices)
            for image, (pred, tgt) in enumerate(per_image)
        ]
        pairs = torch.from_numpy(np.concatenate(rows, axis=1).astype(np.int64)).to(device, non_blocking=True)
        layer_idx, image_idx, query_idx, target_idx = pairs

        with torch.autocast(device_type=device.type, enabled=False):
            logits = logits.float()
            pred_boxes = pred_boxes.float()

            # Classification: every slot, "no object" for the unmatched ones, weighted mean per layer.
            target_classes = torch.full((num_layers, batch_size, num_queries), self.num_labels, dtype=torch.int64,
                                        device=device)
            target_classes[layer_idx, image_idx, query_idx] = class_ids[target_idx]
            class_weight = torch.ones(self.num_labels + 1, device=device)
            class_weight[-1] = self.eos_coef
            cross_entropy = F.cross_entropy(logits.flatten(0, 2), target_classes.flatten(), reduction="none")
            weight = class_weight[target_classes].flatten(1)  # (L, B*Q)
            loss_ce = (weight * cross_entropy.view(num_layers, -1)).sum(1) / weight.sum(1)

            # Boxes: L1 and GIoU on the matched pairs, summed per layer and divided by the global box count.
            num_boxes = self._num_boxes(sum(sizes), device)
            matched = pred_boxes[layer_idx, image_idx, query_idx]  # (P, 4)
            matched_targets = target_boxes[target_idx]
            l1 = (matched - matched_targets).abs().sum(-1)
            giou = generalized_box_iou_loss(
                box_convert(matched, "cxcywh", "xyxy"), box_convert(matched_targets, "cxcywh", "xyxy"),
                reduction="none", eps=0.0,
            )
            loss_bbox = logits.new_zeros(num_layers).index_add(0, layer_idx, l1) / num_boxes
            loss_giou = logits.new_zeros(num_layers).index_add(0, layer_idx, giou) / num_boxes

            # Cardinality error (logging only): |number of slots not predicting "no object" - number of objects|.
            with torch.no_grad():
                predicted = (logits.argmax(-1) != self.num_labels).sum(-1).float()  # (L, B)
                cardinality = (predicted - torch.as_tensor(sizes, dtype=torch.float32, device=device)).abs().mean(1)

        per_layer = {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou,
                     "cardinality_error": cardinality}
        return per_layer, pairs, num_boxes

    def _mask_matching_cost(self, pred_masks: torch.Tensor, target_masks: torch.Tensor) -> torch.Tensor:
        """`(B, Q, T)` weighted focal + dice cost of every query of every image against every target mask."""
        batch_size, num_queries = pred_masks.shape[:2]
        with torch.autocast(device_type=pred_masks.device.type, enabled=False):
            upsampled = upsample_masks(pred_masks.detach().float().flatten(0, 1), target_masks.shape[-2:])
            focal, dice = pairwise_mask_costs(upsampled.flatten(1), target_masks.flatten(1), self.focal_alpha,
                                              self.focal_gamma)  # (B*Q, T) each
        return (self.mask_cost * focal + self.dice_cost * dice).view(batch_size, num_queries, -1)

    def _mask_losses(self, pred_masks, target_masks, image_idx, query_idx, target_idx, num_boxes) -> dict:
        """Focal and dice losses of the matched masks (final layer), summed and divided by `num_boxes`."""
        with torch.autocast(device_type=pred_masks.device.type, enabled=False):
            matched = upsample_masks(pred_masks[image_idx, query_idx].float(), target_masks.shape[-2:])  # (P, H, W)
            targets = target_masks[target_idx].flatten(1)
            matched = matched.flatten(1)
            return {
                "loss_mask": sigmoid_focal_loss(matched, targets, self.focal_alpha, self.focal_gamma).sum() / num_boxes,
                "loss_dice": dice_loss(matched, targets).sum() / num_boxes,
            }

    @staticmethod
    def _num_boxes(local_count: int, device: torch.device) -> torch.Tensor:
        """Average number of target boxes per process: the global sum divided by the world size, at least 1."""
        num_boxes = torch.tensor(float(local_count), device=device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(num_boxes)
            num_boxes = num_boxes / torch.distributed.get_world_size()
        return num_boxes.clamp(min=1.0)
