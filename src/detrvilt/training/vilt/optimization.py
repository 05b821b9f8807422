"""ViLT's optimization (Kim et al., 2021, section 4.2): AdamW (betas 0.9/0.98, eps 1e-8, lr 1e-4, weight decay
0.01), no weight decay on biases and LayerNorm parameters, a linear warmup (10% of the steps) then a linear decay to
0, and a larger learning rate (x10) for the downstream task heads.

Follows the facts of dandelin/ViLT's ``set_schedule`` (``vilt/modules/vilt_utils.py``): four parameter groups
(decay / no decay x backbone / head), ``lr_mult`` 10 for the VQA and NLVR2 classifiers in their fine-tuning
configs (1 for pretraining and retrieval), ``get_polynomial_decay_schedule_with_warmup`` with power 1 and end
learning rate 0. Here the no-decay set is found by module type (every `nn.LayerNorm` parameter and every bias)
instead of by name.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

VILT_LEARNING_RATE = 1e-4
VILT_WEIGHT_DECAY = 0.01
VILT_BETAS = (0.9, 0.98)
VILT_EPS = 1e-8
VILT_WARMUP_RATIO = 0.1
VILT_HEAD_LR_MULTIPLIER = 10.0
# Module names of the downstream heads that get the multiplier: VQA and NLVR2 (`classifier`). The pretraining heads
# (`mlm_score`, `itm_score`) and the retrieval head (`rank_output`) train at the base rate, as in the official configs.
VILT_HEAD_NAMES = ("classifier",)


def _no_decay_parameter_ids(model: nn.Module) -> set[int]:
    ids = set()
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if name == "bias" or isinstance(module, nn.LayerNorm):
                ids.add(id(parameter))
    return ids


def is_head_parameter(name: str, head_names: Sequence[str] = VILT_HEAD_NAMES) -> bool:
    """Whether parameter `name` (from `named_parameters()`) belongs to one of the task heads `head_names`."""
    return name.split(".", 1)[0] in head_names


def vilt_parameter_groups(
    model: nn.Module,
    learning_rate: float = VILT_LEARNING_RATE,
    weight_decay: float = VILT_WEIGHT_DECAY,
    head_lr_multiplier: float = VILT_HEAD_LR_MULTIPLIER,
    head_names: Sequence[str] = VILT_HEAD_NAMES,
) -> list[dict]:
    """The optimizer's four groups: (transformer, head) x (with weight decay, without: biases and LayerNorms).

    Args:
        model: any ViLT model (`ViltForQuestionAnswering`, ...); frozen parameters are left out.
        learning_rate (`float`): the transformer's learning rate; heads get `learning_rate * head_lr_multiplier`.
        weight_decay (`float`): applied to weight matrices and embeddings, never to biases or norms.
        head_names (`Sequence[str]`): top-level module names of the heads (default: `classifier`).

    Returns:
        `list[dict]` with `params`, `lr`, `weight_decay` and `name` (`"decay"`, `"no_decay"`, `"head_decay"`,
        `"head_no_decay"`); empty groups dropped. Every trainable parameter is in exactly one group.
    """
    for name, value in (("learning_rate", learning_rate), ("weight_decay", weight_decay),
                        ("head_lr_multiplier", head_lr_multiplier)):
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    no_decay = _no_decay_parameter_ids(model)
    groups = {key: [] for key in ("decay", "no_decay", "head_decay", "head_no_decay")}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        key = ("head_" if is_head_parameter(name, head_names) else "") + (
            "no_decay" if id(parameter) in no_decay else "decay")
        groups[key].append(parameter)
    result = []
    for key, parameters in groups.items():
        if parameters:
            rate = learning_rate * (head_lr_multiplier if key.startswith("head_") else 1.0)
            result.append({"params": parameters, "lr": rate, "weight_decay": 0.0 if "no_decay" in key else weight_decay,
                           "name": key})
    if not result:
        raise ValueError("the model has no trainable parameter")
    return result


def create_vilt_optimizer(
    model: nn.Module,
    learning_rate: float = VILT_LEARNING_RATE,
    weight_decay: float = VILT_WEIGHT_DECAY,
    head_lr_multiplier: float = VILT_HEAD_LR_MULTIPLIER,
    betas: tuple[float, float] = VILT_BETAS,
    eps: float = VILT_EPS,
    head_names: Sequence[str] = VILT_HEAD_NAMES,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """`torch.optim.AdamW` over [`vilt_parameter_groups`] with the official betas and epsilon.

    `fused` (`bool`, *optional*): torch's one-kernel AdamW (the same update; on one CPU thread it steps a small
    ViLT's 8M parameters, most of them the two vocabulary matrices, about 5x faster than the per-tensor loop). The
    default `None` uses it when every parameter lives on the CPU or a CUDA device.
    """
    groups = vilt_parameter_groups(model, learning_rate, weight_decay, head_lr_multiplier, head_names)
    if fused is None:
        fused = all(p.device.type in ("cpu", "cuda") for group in groups for p in group["params"])
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps, weight_decay=weight_decay,
                             fused=bool(fused))


def warmup_steps_for(num_training_steps: int, warmup: float | int = VILT_WARMUP_RATIO) -> int:
    """`warmup` as a number of steps: a float in [0, 1) is a fraction of `num_training_steps`, an int is steps."""
    if isinstance(warmup, float) and 0 <= warmup < 1:
        return int(round(warmup * num_training_steps))
    if isinstance(warmup, int) and warmup >= 0:
        return warmup
    raise ValueError(f"warmup must be a fraction in [0, 1) or a number of steps >= 0, got {warmup!r}")


def create_vilt_scheduler(optimizer: torch.optim.Optimizer, num_training_steps: int,
                          warmup: float | int = VILT_WARMUP_RATIO) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over `warmup` (fraction or steps), then linear decay to 0 at `num_training_steps`."""
    if not isinstance(num_training_steps, int) or num_training_steps < 1:
        raise ValueError(f"num_training_steps must be a positive integer, got {num_training_steps!r}")
    return get_linear_schedule_with_warmup(optimizer, warmup_steps_for(num_training_steps, warmup), num_training_steps)
