"""Word-patch alignment (WPA): an optimal-transport distance between a text's tokens and an image's patches.

ViLT (Kim et al., 2021, section 3.2) adds WPA to image-text matching: the cost of moving the text's token
features onto the image's patch features (cosine distance), under the transport plan that the inexact proximal
point method (IPOT; Xie et al., 2018, "A Fast Proximal Point Method for Computing Exact Wasserstein Distance")
finds. Matched pairs should be close, unmatched pairs far: the loss is the mean of +distance over matched pairs
and -distance over unmatched ones, weighted 0.1 in the total.

The setting follows dandelin/ViLT (``objectives.py``, which takes UNITER's ``ot.py``): the text [CLS], the text's
last token ([SEP]) and the image [CLS] do not take part; IPOT runs with beta 0.5, 50 outer iterations and one
Sinkhorn update each; the plan is computed without gradient, so gradients reach the features only through the
cost; everything runs in fp32 with autocast off. Written here in a (text, image) orientation with explicit
validity masks; the uniform marginals are `1 / #valid` on each side.
"""

import torch
import torch.nn.functional as F


def cosine_cost(text_features: torch.Tensor, image_features: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """`1 - cos(text_i, image_j)` for every pair: `(B, M, D)` and `(B, N, D)` -> `(B, M, N)`, in [0, 2]."""
    text = F.normalize(text_features, dim=-1, eps=eps)
    image = F.normalize(image_features, dim=-1, eps=eps)
    return 1.0 - text @ image.transpose(1, 2)  # (B, M, N)


@torch.no_grad()
def ipot_plan(
    cost: torch.Tensor,
    text_valid: torch.Tensor,
    image_valid: torch.Tensor,
    beta: float = 0.5,
    iterations: int = 50,
    inner_iterations: int = 1,
) -> torch.Tensor:
    """Transport plan between uniform distributions over the valid text tokens and the valid image patches.

    Each outer iteration replaces the kernel by `exp(-cost / beta) * plan` (the proximal term) and rescales it with
    `inner_iterations` Sinkhorn updates, image side first. After the last update the text marginal is exact and
    the image marginal converges with the iterations.

    Args:
        cost (`torch.FloatTensor` of shape `(B, M, N)`): transport cost (fp32).
        text_valid (`torch.BoolTensor` of shape `(B, M)`), image_valid (`torch.BoolTensor` of shape `(B, N)`):
            the tokens and patches that take part; each row needs at least one of each.

    Returns:
        `torch.FloatTensor` of shape `(B, M, N)`: the plan, zero outside valid pairs; rows sum to
        `1 / #valid tokens`, columns to `1 / #valid patches`.
    """
    dtype = cost.dtype
    text_weights = text_valid.to(dtype)
    image_weights = image_valid.to(dtype)
    text_marginal = text_weights / text_weights.sum(1, keepdim=True).clamp(min=1)  # (B, M)
    image_marginal = image_weights / image_weights.sum(1, keepdim=True).clamp(min=1)  # (B, N)
    joint = text_weights[:, :, None] * image_weights[:, None, :]  # (B, M, N)
    kernel = torch.exp(-cost / beta) * joint
    plan = joint
    text_scale = text_marginal  # (B, M)
    tiny = torch.finfo(dtype).tiny
    for _ in range(iterations):
        q = kernel * plan  # (B, M, N)
        for _ in range(inner_iterations):
            image_mass = (text_scale[:, None, :] @ q).squeeze(1)  # (B, N)
            image_scale = image_marginal / image_mass.clamp(min=tiny)  # 0 where the patch is not valid
            text_mass = (q @ image_scale[:, :, None]).squeeze(2)  # (B, M)
            text_scale = text_marginal / text_mass.clamp(min=tiny)
        plan = text_scale[:, :, None] * q * image_scale[:, None, :]
    return plan


def wpa_distance(
    text_features: torch.Tensor,
    image_features: torch.Tensor,
    text_valid: torch.Tensor,
    image_valid: torch.Tensor,
    beta: float = 0.5,
    iterations: int = 50,
    inner_iterations: int = 1,
) -> torch.Tensor:
    """Optimal-transport distance between each text and its image (fp32, autocast off, plan detached).

    Args:
        text_features (`torch.FloatTensor` of shape `(B, M, D)`), image_features (`(B, N, D)`): any float dtype.
        text_valid (`torch.BoolTensor` of shape `(B, M)`), image_valid (`(B, N)`): the tokens and patches that
            take part.

    Returns:
        `torch.FloatTensor` of shape `(B,)`: `sum(cost * plan)` per pair, differentiable through the cost.
    """
    cost, plan = wpa_transport(
        text_features, image_features, text_valid, image_valid, beta, iterations, inner_iterations
    )  # fp32, autocast off inside
    return (cost * plan).sum(dim=(1, 2))


def wpa_transport(
    text_features: torch.Tensor,
    image_features: torch.Tensor,
    text_valid: torch.Tensor,
    image_valid: torch.Tensor,
    beta: float = 0.5,
    iterations: int = 50,
    inner_iterations: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cost and the IPOT plan behind [`wpa_distance`] (fp32, autocast off); the plan is what the word-patch
    alignment pictures (``detrvilt.viz``) draw.

    Args: as [`wpa_distance`].

    Returns:
        `cost` (`torch.FloatTensor` of shape `(B, M, N)`, cosine distances, 0 outside valid pairs, differentiable)
        and `plan` (`(B, M, N)`, detached; rows sum to `1 / #valid tokens` on valid tokens, 0 elsewhere).
    """
    with torch.autocast(device_type=text_features.device.type, enabled=False):
        cost = cosine_cost(text_features.float(), image_features.float())  # (B, M, N)
        joint = text_valid[:, :, None] & image_valid[:, None, :]
        cost = cost.masked_fill(~joint, 0.0)
        plan = ipot_plan(cost.detach(), text_valid, image_valid, beta, iterations, inner_iterations)
    return cost, plan


def wpa_loss(distance: torch.Tensor, itm_labels: torch.Tensor) -> torch.Tensor:
    """`(sum of distances of matched pairs - sum over unmatched pairs) / B`: `(B,)`, `(B,)` 0/1 -> scalar."""
    sign = 2.0 * itm_labels.to(distance.dtype) - 1.0  # +1 matched, -1 unmatched
    return (distance * sign).sum() / distance.shape[0]


def wpa_masks(
    attention_mask: torch.Tensor, image_token_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens WPA aligns: text tokens without [CLS] and the last valid token ([SEP]); patches without the
    image [CLS]. `(B, T)` and `(B, 1 + L)` masks -> `(B, T)` and `(B, 1 + L)` boolean masks."""
    text_valid = attention_mask.bool().clone()
    last = (text_valid.sum(1) - 1).clamp(min=0)  # (B,) index of [SEP] (right padding)
    text_valid.scatter_(1, last[:, None], False)
    text_valid[:, 0] = False
    image_valid = image_token_mask.bool().clone()
    image_valid[:, 0] = False
    return text_valid, image_valid
