"""The mask terms of DETR's panoptic training: sigmoid focal loss and dice loss on matched masks, and their
pairwise versions for a matching cost that includes masks.

Carion et al., 2020, section 4.4: "the mask head ... is trained with the DICE/F-1 loss and Focal loss". Follows the
definitions of facebookresearch/detr (``models/segmentation.py``): the focal loss (Lin et al., 2017, alpha 0.25,
gamma 2) is averaged over the pixels of a mask, the dice loss is ``1 - (2 |p t| + 1) / (|p| + |t| + 1)`` on the
sigmoid probabilities, and both are summed over the matched masks and divided by ``num_boxes``. Predicted masks (at a
quarter of the padded input) are upsampled bilinearly to the target masks, which are padded bottom/right to the
largest of the batch. Matching on masks (``mask_cost``, ``dice_cost``) is not in the paper; the pairwise costs are
the same two losses evaluated for every (query, target) pair.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def check_mask_labels(labels: Sequence) -> None:
    """Check that every label dict has `masks` of shape `(n, h, w)` with `n` its number of objects."""
    for i, target in enumerate(labels):
        masks = target.get("masks") if hasattr(target, "get") else None
        if not isinstance(masks, torch.Tensor):
            raise ValueError(f"labels[{i}] needs 'masks' (a tensor of shape (n, height, width)) to train the mask head,"
                             f" got {type(masks).__name__}")
        count = len(target["class_labels"])
        if masks.ndim != 3 or masks.shape[0] != count:
            raise ValueError(f"labels[{i}]['masks'] must be (n, height, width) with n = {count} objects, got shape "
                             f"{tuple(masks.shape)}")


def pad_target_masks(labels: Sequence, device: torch.device) -> torch.Tensor:
    """The masks of all images concatenated, `(num_targets, H, W)` float32, padded bottom/right to the largest
    `(H, W)` of the batch (so that they align with the padded images)."""
    height = max(t["masks"].shape[-2] for t in labels)
    width = max(t["masks"].shape[-1] for t in labels)
    total = sum(t["masks"].shape[0] for t in labels)
    padded = torch.zeros((total, height, width), dtype=torch.float32, device=device)
    start = 0
    for target in labels:
        masks = target["masks"]
        padded[start:start + masks.shape[0], : masks.shape[-2], : masks.shape[-1]] = masks.to(device, torch.float32)
        start += masks.shape[0]
    return padded


def upsample_masks(mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`(N, h, w)` mask logits to `(N, H, W)` by bilinear interpolation (``align_corners=False``, as the official)."""
    if tuple(mask_logits.shape[-2:]) == tuple(size):
        return mask_logits
    return F.interpolate(mask_logits[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0):
    """Focal loss of each mask, averaged over its pixels.

    Args:
        logits, targets (`torch.FloatTensor` of shape `(N, P)`): mask logits and 0/1 targets over `P` pixels.
        alpha (`float`): weight of the positive pixels (negatives get `1 - alpha`); negative: no weighting.
        gamma (`float`): focusing exponent on `1 - p_t`.

    Returns:
        `torch.FloatTensor` of shape `(N,)`.
    """
    prob = logits.sigmoid()
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = cross_entropy * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice loss `1 - (2 |p t| + 1) / (|p| + |t| + 1)` of each mask: logits and targets `(N, P)`, result `(N,)`."""
    prob = logits.sigmoid()
    return 1 - (2 * (prob * targets).sum(1) + 1) / (prob.sum(1) + targets.sum(1) + 1)


@torch.no_grad()
def pairwise_mask_costs(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0):
    """[`sigmoid_focal_loss`] and [`dice_loss`] for every pair of a predicted and a target mask.

    Args:
        logits (`torch.FloatTensor` of shape `(N, P)`): predicted mask logits.
        targets (`torch.FloatTensor` of shape `(T, P)`): 0/1 target masks.

    Returns:
        `(focal, dice)`, each `torch.FloatTensor` of shape `(N, T)`: entry `(i, j)` equals the loss of prediction
        `i` against target `j`.
    """
    prob = logits.sigmoid()
    # The focal loss is linear in the target: pixel p costs `positive[p]` where t=1 and `negative[p]` where t=0.
    positive = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    negative = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    positive, negative = positive * (1 - prob) ** gamma, negative * prob**gamma
    if alpha >= 0:
        positive, negative = alpha * positive, (1 - alpha) * negative
    focal = (positive @ targets.T + negative @ (1 - targets).T) / logits.shape[1]  # (N, T)
    dice = 1 - (2 * prob @ targets.T + 1) / (prob.sum(1)[:, None] + targets.sum(1)[None, :] + 1)  # (N, T)
    return focal, dice
