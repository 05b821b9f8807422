"""Fixed-shape inference: padding to a few sizes, and replaying the forward pass from a CUDA graph.

A GPU runs small batches faster than the host can launch their kernels (a batch-1 ViLT-B/32 forward is about 400
kernels): capturing the forward once in a CUDA graph and replaying it removes the launch cost, but a graph holds
one input shape. Padding the inputs to a few fixed sizes keeps the number of graphs (and of `torch.compile`
specialisations) small; both models mask padding, so the padded call gives the same predictions:

- ViLT exactly (up to float summation order): padding patches, padding words and padding batch rows are masked
  keys, and the position table is resampled to each image's own patch grid;
- DETR's transformer masks padding too, but its CNN backbone sees the zero pixels next to an image, so predictions
  change slightly with the padded size, as they do with any batch of mixed sizes. Padding the batch dimension
  (extra rows) changes nothing in eval (frozen batch norm, images independent).

Usage::

    runner = CudaGraphInference(model.cuda().eval())
    inputs = pad_images(pixel_values, pixel_mask, buckets=[(384, 640), (640, 384)])
    logits = runner(**inputs).logits

`torch.compile(model, mode="reduce-overhead")` is the other route to CUDA graphs (with fused kernels, after a
compilation of a minute or more per shape); this class needs no compilation.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
import torch.nn.functional as F


def choose_bucket(height: int, width: int, buckets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The smallest-area `(height, width)` of `buckets` that holds a `height` x `width` image.

    Raises:
        ValueError: when no bucket is large enough, or `buckets` is empty.
    """
    fitting = [(h, w) for h, w in buckets if h >= height and w >= width]
    if not fitting:
        raise ValueError(f"no bucket of {list(buckets)} holds an image of {height}x{width}; add a larger bucket")
    return min(fitting, key=lambda size: (size[0] * size[1], size))


def pad_images(pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None,
               buckets: Sequence[tuple[int, int]] = ((800, 1333), (1333, 800))) -> dict[str, torch.Tensor]:
    """Pad a batch bottom/right to the smallest bucket that holds it.

    Args:
        pixel_values (`torch.FloatTensor` of shape `(batch_size, channels, height, width)`): padded images.
        pixel_mask (`torch.Tensor` of shape `(batch_size, height, width)`, *optional*): 1 on real pixels; all ones
            when `None`.
        buckets (sequence of `(height, width)`): the allowed padded sizes (multiples of the patch size for ViLT).

    Returns:
        `{"pixel_values": (batch_size, channels, H, W), "pixel_mask": (batch_size, H, W)}` with `(H, W)` the bucket;
        new pixels are 0 with mask 0.
    """
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must be a (batch_size, channels, height, width) tensor, got "
                         f"{getattr(pixel_values, 'shape', type(pixel_values).__name__)}")
    batch_size, _, height, width = pixel_values.shape
    if pixel_mask is None:
        pixel_mask = torch.ones(batch_size, height, width, dtype=torch.long, device=pixel_values.device)
    elif tuple(pixel_mask.shape) != (batch_size, height, width):
        raise ValueError(f"pixel_mask must be (batch_size, height, width) = {(batch_size, height, width)}, "
                         f"got shape {tuple(pixel_mask.shape)}")
    new_height, new_width = choose_bucket(height, width, buckets)
    padding = (0, new_width - width, 0, new_height - height)  # F.pad: last dim first (left, right, top, bottom)
    return {"pixel_values": F.pad(pixel_values, padding), "pixel_mask": F.pad(pixel_mask, padding)}


def pad_text(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, length: int = 40,
             pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad `input_ids` `(batch_size, text_length)` (and its `attention_mask`, all ones when `None`) to
    `length` tokens with `pad_token_id` / mask 0. Returns `{"input_ids", "attention_mask"}`, each
    `(batch_size, length)`."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2:
        raise ValueError(f"input_ids must be a (batch_size, text_length) tensor, got "
                         f"{getattr(input_ids, 'shape', type(input_ids).__name__)}")
    if input_ids.shape[1] > length:
        raise ValueError(f"input_ids has {input_ids.shape[1]} tokens, more than length={length}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    elif attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask must have input_ids' shape {tuple(input_ids.shape)}, "
                         f"got {tuple(attention_mask.shape)}")
    extra = length - input_ids.shape[1]
    return {"input_ids": F.pad(input_ids, (0, extra), value=pad_token_id),
            "attention_mask": F.pad(attention_mask, (0, extra))}


def pad_batch(inputs: dict[str, torch.Tensor], batch_size: int) -> dict[str, torch.Tensor]:
    """Repeat the first row of every `(n, ...)` tensor in `inputs` until the batch holds `batch_size` rows.

    The extra rows are real inputs (not all-padding ones, which some models reject), so their predictions are
    valid and simply discarded: slice the outputs with `[:n]`. Non-tensor values pass through.
    """
    sizes = {value.shape[0] for value in inputs.values() if isinstance(value, torch.Tensor)}
    if len(sizes) != 1:
        raise ValueError(f"the tensors in inputs must share their first dimension, got sizes {sorted(sizes)}")
    size = sizes.pop()
    if size > batch_size:
        raise ValueError(f"inputs hold {size} rows, more than batch_size={batch_size}")
    padded = {}
    for name, value in inputs.items():
        if isinstance(value, torch.Tensor) and size < batch_size:
            value = torch.cat([value, value[:1].expand(batch_size - size, *value.shape[1:])])
        padded[name] = value
    return padded


def _signature(inputs: dict) -> tuple:
    return tuple(sorted(
        (name, (tuple(value.shape), value.dtype, value.device)) if isinstance(value, torch.Tensor) else (name, value)
        for name, value in inputs.items()
    ))


class CudaGraphInference:
    """Run `model(**inputs)` in eval and no_grad by replaying a CUDA graph, one graph per input signature.

    The first call with a new signature (tensor shapes, dtypes and the non-tensor keyword values) warms the model up
    on a side stream and captures a graph; later calls copy the inputs into the captured buffers and replay it.
    All graphs share one memory pool. The forward must not synchronise with the host (detrvilt's DETR and ViLT
    inference forwards do not on CUDA).

    Args:
        model (`torch.nn.Module`): on a CUDA device; put in eval mode by the caller.
        autocast_dtype (`torch.dtype`, *optional*): run the forward under `torch.autocast("cuda", autocast_dtype)`.
        clone_outputs (`bool`, defaults to `True`): return copies; with `False` the returned tensors are the
            graph's own buffers, overwritten by the next replay (saves a copy per call).
        warmup (`int`, defaults to 3): eager calls before a capture (lazy initialisations, cuBLAS workspaces).
    """

    def __init__(self, model: torch.nn.Module, autocast_dtype: torch.dtype | None = None, clone_outputs: bool = True,
                 warmup: int = 3):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        device = next(model.parameters()).device
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a model on a CUDA device, got one on {device}")
        if warmup < 1:
            raise ValueError(f"warmup must be at least 1, got {warmup}")
        self.model = model
        self.autocast_dtype = autocast_dtype
        self.clone_outputs = clone_outputs
        self.warmup = warmup
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, dict, object]] = {}

    def _forward(self, inputs: dict):
        autocast = torch.autocast("cuda", dtype=self.autocast_dtype) if self.autocast_dtype else nullcontext()
        with torch.no_grad(), autocast:
            return self.model(**inputs)

    def _capture(self, inputs: dict):
        static = {name: value.clone() if isinstance(value, torch.Tensor) else value for name, value in inputs.items()}
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(self.warmup):
                self._forward(static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            outputs = self._forward(static)
        return graph, static, outputs

    def __call__(self, **inputs):
        """The model's outputs for `inputs` (CUDA tensors, with the shapes of a captured or capturable call)."""
        for name, value in inputs.items():
            if isinstance(value, torch.Tensor) and value.device.type != "cuda":
                raise ValueError(f"input {name!r} must be on a CUDA device, got one on {value.device}")
        key = _signature(inputs)
        if key not in self.graphs:
            self.graphs[key] = self._capture(inputs)
        graph, static, outputs = self.graphs[key]
        for name, value in inputs.items():
            if isinstance(value, torch.Tensor):
                static[name].copy_(value)
        graph.replay()
        if not self.clone_outputs:
            return outputs
        return _map_tensors(outputs, torch.Tensor.clone)


def _map_tensors(value, function):
    """Apply `function` to every tensor in a (nested) ModelOutput / dict / tuple / list."""
    if isinstance(value, torch.Tensor):
        return function(value)
    if isinstance(value, dict):  # ModelOutput is an OrderedDict: rebuild the same class from its set fields
        return type(value)(**{name: _map_tensors(item, function) for name, item in value.items()})
    if isinstance(value, (tuple, list)):
        return type(value)(_map_tensors(item, function) for item in value)
    return value


__all__ = ["CudaGraphInference", "choose_bucket", "pad_batch", "pad_images", "pad_text"]
