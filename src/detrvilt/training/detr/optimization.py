"""DETR's optimization (Carion et al., 2020, section 4 and appendix A.4): AdamW with a ten times smaller learning rate
for the backbone, weight decay 1e-4, gradient clipping at 0.1 and a step decay of the learning rate.

Follows facebookresearch/detr's `main.py` (`param_dicts`, `StepLR(lr_drop)`), with an optional linear warmup that the
paper does not use but that training from scratch on small data needs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

PAPER_LEARNING_RATE = 1e-4
PAPER_BACKBONE_LEARNING_RATE = 1e-5
PAPER_WEIGHT_DECAY = 1e-4
PAPER_MAX_GRAD_NORM = 0.1


def is_backbone_parameter(name: str) -> bool:
    """Whether parameter `name` (as `model.named_parameters()` gives it) belongs to DETR's CNN backbone."""
    return ".backbone." in f".{name}"


def detr_parameter_groups(
    model: nn.Module,
    learning_rate: float = PAPER_LEARNING_RATE,
    backbone_learning_rate: float = PAPER_BACKBONE_LEARNING_RATE,
    weight_decay: float = PAPER_WEIGHT_DECAY,
) -> list[dict]:
    """The optimizer's parameter groups: transformer and heads at `learning_rate`, backbone at `backbone_learning_rate`.

    Frozen parameters (`requires_grad=False`, e.g. the frozen stem) are left out. As in the official code, weight decay
    applies to every trainable parameter. A group with no parameter is dropped (e.g. a frozen backbone).
    """
    for name, value in (("learning_rate", learning_rate), ("backbone_learning_rate", backbone_learning_rate),
                        ("weight_decay", weight_decay)):
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    backbone, rest = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (backbone if is_backbone_parameter(name) else rest).append(parameter)
    groups = [
        {"params": rest, "lr": learning_rate, "weight_decay": weight_decay, "name": "transformer"},
        {"params": backbone, "lr": backbone_learning_rate, "weight_decay": weight_decay, "name": "backbone"},
    ]
    groups = [group for group in groups if group["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameter")
    return groups


def create_detr_optimizer(
    model: nn.Module,
    learning_rate: float = PAPER_LEARNING_RATE,
    backbone_learning_rate: float = PAPER_BACKBONE_LEARNING_RATE,
    weight_decay: float = PAPER_WEIGHT_DECAY,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    fused: bool = True,
) -> torch.optim.AdamW:
    """`torch.optim.AdamW` over [`detr_parameter_groups`] (the paper's defaults).

    `fused=True` updates all parameters in one kernel (CPU and CUDA): on the demo's small DETR the optimizer step
    takes 10 ms instead of 32 ms per step on one CPU thread.
    """
    groups = detr_parameter_groups(model, learning_rate, backbone_learning_rate, weight_decay)
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps, weight_decay=weight_decay, fused=fused)


def step_decay_lambda(lr_drop_step: int | None, warmup_steps: int = 0, gamma: float = 0.1) -> Callable[[int], float]:
    """The learning-rate factor at each optimizer step: linear warmup over `warmup_steps`, then multiplied by `gamma`
    once `lr_drop_step` steps are done (the paper: 200 of 300 epochs, or 100 of 150 in the short schedule)."""
    if lr_drop_step is not None and (not isinstance(lr_drop_step, int) or lr_drop_step < 1):
        raise ValueError(f"lr_drop_step must be a positive integer or None, got {lr_drop_step!r}")
    if not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be a non-negative integer, got {warmup_steps!r}")
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
        drop = gamma if lr_drop_step is not None and step >= lr_drop_step else 1.0
        return warm * drop

    return factor


def create_step_scheduler(
    optimizer: torch.optim.Optimizer, lr_drop_step: int | None, warmup_steps: int = 0, gamma: float = 0.1
) -> torch.optim.lr_scheduler.LambdaLR:
    """A `LambdaLR` with [`step_decay_lambda`], stepped once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, step_decay_lambda(lr_drop_step, warmup_steps, gamma))
