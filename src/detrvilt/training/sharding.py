"""Sharded training for the shared loop: FSDP2 and DeepSpeed through Accelerate, and FSDP2 on CPU processes.

[`prepare_training`] replaces `accelerator.prepare(model, optimizer, loader, scheduler)` in the recipes, so the same
script runs unchanged under plain DDP, `accelerate launch --config_file configs/accelerate/fsdp_full_shard.yaml`
(FSDP2), `.../zero2.yaml` or `.../zero3.yaml` (DeepSpeed):

- **FSDP2 through Accelerate** (GPUs): `fully_shard` refuses non-contiguous parameters ("FSDP does not support
  non-contiguous parameters yet"), and DETR's backbone keeps its convolution weights channels-last
  (`modeling/detr/backbone_detr.py`), so every parameter is made contiguous first ([`make_parameters_contiguous`]:
  the same values, the same `Parameter` objects, so the optimizer is unaffected). Accelerate then shards each
  `_no_split_modules` layer (DETR: backbone, encoder and decoder layers; ViLT: embeddings and blocks) and the root.
- **FSDP2 on CPU processes**: accelerate 1.15 ignores its FSDP plugin on the CPU (with `cpu=True` it makes
  `MULTI_CPU` and wraps the model in DDP), although PyTorch's `fully_shard` runs on gloo. So when FSDP is asked for
  (`ACCELERATE_USE_FSDP=true`, which `accelerate launch` with an FSDP config sets, or `fsdp_on_cpu=True`) and
  accelerate made `MULTI_CPU`, [`prepare_training`] shards the model itself with the same rule (the layers named by
  `FSDP_TRANSFORMER_CLS_TO_WRAP`, else `_no_split_modules`, then the root), points the optimizer at the sharded
  parameters, and leaves model and optimizer out of `accelerator.prepare` (which would wrap the model in DDP and save
  the main process's optimizer shard for everyone). Their checkpoint is then written by [`save_sharded_state`]
  (`torch.distributed.checkpoint`: each process writes its own shards) next to accelerate's `save_state` files.
- **DeepSpeed** (ZeRO-2/3, GPUs): the DeepSpeed engine steps, clips and accumulates itself; [`prepare_training`]
  gives it the loop's gradient accumulation and clipping norm (the config's `auto` would mean 1 and 1.0), and the
  loop marks each micro-batch's accumulation boundary (`accelerator.sync_gradients`).

The trained model is saved from a full state dict ([`model_for_saving`]: `accelerator.get_state_dict` under
Accelerate's FSDP2 and DeepSpeed, `get_model_state_dict(full_state_dict=True)` on the CPU path) loaded into a plain
model of the same class, so the Hub folder is the same as after a DDP run.

Loss normalization needs nothing here: DETR's `num_boxes` is summed over processes with `torch.distributed`, and the
Hungarian matching runs on the host on each process's own predictions, whatever holds the parameters.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch.distributed.fsdp import FSDPModule, fully_shard

SHARDED_STATE_DIR = "sharded_model_optimizer"


def fsdp_requested() -> bool:
    """Whether the launcher asked for FSDP (`ACCELERATE_USE_FSDP=true`, set by `accelerate launch` with an FSDP
    config)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").strip().lower() in ("1", "true", "yes")


def uses_cpu_fsdp(accelerator: Accelerator, model) -> bool:
    """Whether `model` was sharded by our CPU path (its checkpoints and full state dict are ours to make)."""
    return isinstance(model, FSDPModule) and accelerator.distributed_type != DistributedType.FSDP


def is_sharded(accelerator: Accelerator, model) -> bool:
    """Whether `model`'s parameters are split across processes or held by an engine (FSDP, DeepSpeed)."""
    return (isinstance(model, FSDPModule) or accelerator.distributed_type in (DistributedType.FSDP,
                                                                             DistributedType.DEEPSPEED))


def make_parameters_contiguous(model: torch.nn.Module) -> list[str]:
    """Give every non-contiguous parameter (e.g. channels-last convolution weights) a contiguous copy of its values,
    in place: the `Parameter` objects stay (an optimizer built before keeps working). Returns the changed names."""
    changed = []
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if not parameter.is_contiguous():
                parameter.data = parameter.data.contiguous()
                changed.append(name)
    return changed


def layer_classes(model: torch.nn.Module, names: str | list[str] | None = None) -> tuple[type, ...]:
    """The module classes to shard one by one: `names` (a list, or comma-separated as in
    `FSDP_TRANSFORMER_CLS_TO_WRAP`), else the model's `_no_split_modules` (accelerate's rule).

    Raises:
        `ValueError` naming a class that is not in the model.
    """
    if isinstance(names, str):
        names = [name.strip() for name in names.split(",") if name.strip()]
    if not names:
        names = list(getattr(model, "_no_split_modules", None) or [])
    found = {type(module).__name__: type(module) for module in model.modules()}
    missing = [name for name in names if name not in found]
    if missing:
        raise ValueError(f"layer classes {missing} are not in the model {type(model).__name__} (its classes with "
                         f"parameters: {sorted({type(m).__name__ for m in model.modules() if m._parameters})})")
    return tuple(found[name] for name in names)


def fully_shard_model(model: torch.nn.Module, classes: tuple[type, ...], reshard_after_forward: bool = True):
    """FSDP2 in place: every module of `classes` (outermost first matters not: FSDP2 groups by module), then the
    root. The parameters must be contiguous ([`make_parameters_contiguous`]). Returns `model` (now an `FSDPModule`)."""
    for module in model.modules():
        if module is not model and isinstance(module, classes) and any(p.requires_grad for p in module.parameters()):
            fully_shard(module, reshard_after_forward=reshard_after_forward)
    fully_shard(model, reshard_after_forward=reshard_after_forward)
    return model


def _point_optimizer_at(optimizer: torch.optim.Optimizer, before: dict[int, str], model: torch.nn.Module) -> None:
    """After `fully_shard` replaced the parameters, put the new ones into `optimizer`'s groups (matched by name)."""
    if optimizer.state:
        raise ValueError("the optimizer has already stepped: shard the model before the first optimizer step")
    after = dict(model.named_parameters())
    for group in optimizer.param_groups:
        group["params"] = [after[before[id(parameter)]] for parameter in group["params"]]


def _autocast_forward(accelerator: Accelerator, model: torch.nn.Module) -> None:
    """Run `model.forward` under the accelerator's autocast (what `accelerator.prepare` does for a model)."""
    forward = model.forward

    @functools.wraps(forward)
    def forward_with_autocast(*args, **kwargs):
        with accelerator.autocast():
            return forward(*args, **kwargs)

    model.forward = forward_with_autocast


def _is_stream_loader(value) -> bool:
    return isinstance(getattr(value, "dataset", None), torch.utils.data.IterableDataset) and hasattr(
        value, "state_dict")


def prepare_training(accelerator: Accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *objects,
                     gradient_accumulation_steps: int = 1, max_grad_norm: float | None = None,
                     fsdp_on_cpu: bool | None = None):
    """`accelerator.prepare(model, optimizer, *objects)` for every setting the recipes run in; returns
    `(model, optimizer, *objects)` in that order.

    Args:
        model, optimizer: the model and its optimizer, not stepped yet.
        objects: data loaders and schedulers. A streaming loader (a `StatefulDataLoader` over an iterable dataset,
            see `detrvilt.data.streaming.stream_loader`) is returned as it is: its stream is already split across
            processes, and `accelerate.prepare` would split it again.
        gradient_accumulation_steps (`int`), max_grad_norm (`float`, *optional*): the loop's; DeepSpeed needs them
            in its config (it accumulates and clips inside its engine).
        fsdp_on_cpu (`bool`, *optional*): shard with our FSDP2 path on CPU processes; default: when
            `ACCELERATE_USE_FSDP` is set ([`fsdp_requested`]). Ignored where accelerate does FSDP or DeepSpeed itself.
    """
    kind = accelerator.distributed_type
    streams = {i for i, value in enumerate(objects) if _is_stream_loader(value)}
    others = [value for i, value in enumerate(objects) if i not in streams]

    def merged(prepared):
        prepared = iter(prepared)
        return [value if i in streams else next(prepared) for i, value in enumerate(objects)]

    if kind == DistributedType.DEEPSPEED:
        plugin = accelerator.state.deepspeed_plugin
        accelerator.gradient_accumulation_steps = gradient_accumulation_steps
        config = plugin.deepspeed_config
        if config.get("gradient_clipping", "auto") == "auto":
            config["gradient_clipping"] = float(max_grad_norm or 0.0)
        if streams and config.get("train_micro_batch_size_per_gpu", "auto") == "auto":
            config["train_micro_batch_size_per_gpu"] = objects[min(streams)].batch_size
        model, optimizer, *prepared = accelerator.prepare(model, optimizer, *others)
        return (model, optimizer, *merged(prepared))
    if kind == DistributedType.FSDP:
        make_parameters_contiguous(model)
        model, optimizer, *prepared = accelerator.prepare(model, optimizer, *others)
        return (model, optimizer, *merged(prepared))
    wanted = fsdp_requested() if fsdp_on_cpu is None else fsdp_on_cpu
    if wanted and kind == DistributedType.MULTI_CPU:
        names = {id(parameter): name for name, parameter in model.named_parameters()}
        classes = layer_classes(model, os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP"))
        make_parameters_contiguous(model)
        reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").strip().lower() != "false"
        fully_shard_model(model, classes, reshard_after_forward=reshard)
        _point_optimizer_at(optimizer, names, model)
        if accelerator.mixed_precision != "no":
            _autocast_forward(accelerator, model)
        prepared = accelerator.prepare(*others) if others else []
        prepared = [prepared] if len(others) == 1 else list(prepared)
        return (model, optimizer, *merged(prepared))
    if wanted:
        accelerator.print(f"FSDP asked for, but accelerate runs {kind.value} here: no sharding "
                          "(FSDP on CPU needs several processes)")
    model, optimizer, *prepared = accelerator.prepare(model, optimizer, *others)
    return (model, optimizer, *merged(prepared))


@contextlib.contextmanager
def no_sync(accelerator: Accelerator, model):
    """Skip the gradient reduction of this backward (gradient accumulation): `accelerator.no_sync` (DDP, and FSDP2
    under Accelerate), and FSDP2's `set_requires_gradient_sync(False)` for a model of our CPU path."""
    if uses_cpu_fsdp(accelerator, model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        with accelerator.no_sync(model):
            yield


# ----------------------------------------------------------------------------------------------------------------
# State


def save_sharded_state(model, optimizer, folder: str) -> None:
    """Model and optimizer of our CPU FSDP2 path into `folder/sharded_model_optimizer` with
    `torch.distributed.checkpoint`: every process writes its own shards (call it on every process)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state},
             checkpoint_id=os.path.join(folder, SHARDED_STATE_DIR))


def load_sharded_state(model, optimizer, folder: str) -> None:
    """Restore [`save_sharded_state`] (call it on every process, with the same number of processes)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    path = os.path.join(folder, SHARDED_STATE_DIR)
    if not os.path.isdir(path):
        raise ValueError(f"the checkpoint {folder!r} has no {SHARDED_STATE_DIR}/: it was not written by a run "
                         "sharded with FSDP on CPU processes")
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def full_state_dict(accelerator: Accelerator, model) -> dict | None:
    """The full (unsharded) state dict of `model`, on the CPU, on the main process (`None` elsewhere, under
    sharding). Every process must call it: under FSDP and ZeRO-3 gathering the shards is collective."""
    if uses_cpu_fsdp(accelerator, model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    elif is_sharded(accelerator, model):
        state = accelerator.get_state_dict(model)
    else:
        state = accelerator.unwrap_model(model).state_dict()
    return state if accelerator.is_main_process else None


def _plain_class(module) -> type:
    """The model's own class under FSDP2's dynamic `FSDP<Class>` subclass."""
    return next(cls for cls in type(module).__mro__ if not issubclass(cls, FSDPModule))


def model_for_saving(accelerator: Accelerator, model):
    """The trained model as a plain `PreTrainedModel` with full weights, for `save_trained` on the main process.

    Unsharded runs return `accelerator.unwrap_model(model)` (no copy). Sharded runs (FSDP2, DeepSpeed) gather the full
    state dict ([`full_state_dict`], collective: every process must call this) and load it into a new model of the
    same class and config on the main process (built without pretrained weights: they are overwritten); the other
    processes get `None`.
    """
    unwrapped = accelerator.unwrap_model(model)
    if not is_sharded(accelerator, model):
        return unwrapped
    state = full_state_dict(accelerator, model)
    if not accelerator.is_main_process:
        return None
    config = copy.deepcopy(unwrapped.config)
    for name in list(vars(config)):
        if name.startswith("use_pretrained"):  # DETR's timm backbone: the weights come from the state dict
            setattr(config, name, False)
    plain = _plain_class(unwrapped)(config)
    missing, unexpected = plain.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"the gathered state dict does not fit {type(plain).__name__}: missing {missing}, "
                         f"unexpected {unexpected}")
    return plain
