"""DETR and ViLT to ONNX: the whole model as one graph with dynamic batch size, image size (and text length).

As the DETR paper promises, the detector's graph needs no NMS and no custom operator: it maps `pixel_values`
`(B, 3, H, W)` and `pixel_mask` `(B, H, W)` to `logits` `(B, num_queries, num_labels + 1)` and `pred_boxes`
`(B, num_queries, 4)` (normalized cx, cy, w, h), exactly the model's outputs; post-processing (softmax, top scores,
box scaling) stays with the caller. ViLT's single-image heads (VQA, retrieval) map `input_ids` / `attention_mask`
`(B, T)` and `pixel_values` / `pixel_mask` to their `logits`.

The export goes through `torch.export` (``torch.onnx.export(dynamo=True)``, which needs ``onnxscript``); the older
TorchScript exporter produced wrong DETR encoder outputs here (torch 2.14), so it is not offered.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..modeling.detr import DetrForObjectDetection
from ..modeling.vilt import ViltForImageAndTextRetrieval, ViltForQuestionAnswering

_TEXT = ("input_ids", "attention_mask")
_IMAGE = ("pixel_values", "pixel_mask")
# Exported classes: (input names, output names).
SIGNATURES = {
    DetrForObjectDetection: (_IMAGE, ("logits", "pred_boxes")),
    ViltForQuestionAnswering: (_TEXT + _IMAGE, ("logits",)),
    ViltForImageAndTextRetrieval: (_TEXT + _IMAGE, ("logits",)),
}


def _signature(model) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if type(model) not in SIGNATURES:
        raise TypeError(f"model must be one of {[c.__name__ for c in SIGNATURES]}, got {type(model).__name__}")
    return SIGNATURES[type(model)]


class OnnxWrapper(torch.nn.Module):
    """Positional tensors in (the signature's input names), a tuple of output tensors out: what is exported."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.input_names, self.output_names = _signature(model)

    def forward(self, *inputs: torch.Tensor):
        outputs = self.model(**dict(zip(self.input_names, inputs, strict=True)))
        return tuple(getattr(outputs, name) for name in self.output_names)


def example_inputs(model, batch_size: int = 2, height: int = 96, width: int = 128, text_length: int = 8,
                   seed: int = 0) -> dict:
    """Random inputs of `model`'s signature in which sample `i > 0` is padded: its image on the bottom/right (zeros,
    `pixel_mask` 0) and, for ViLT, its text at the end (`attention_mask` 0).

    Returns:
        `dict` name -> tensor: `pixel_values` `(B, 3, H, W)` float, `pixel_mask` `(B, H, W)` long, and for ViLT
        `input_ids` / `attention_mask` `(B, text_length)` long ([CLS]=101 first).
    """
    input_names, _ = _signature(model)
    generator = torch.Generator().manual_seed(seed)
    pixel_mask = torch.ones(batch_size, height, width, dtype=torch.long)
    attention_mask = torch.ones(batch_size, text_length, dtype=torch.long)
    for i in range(1, batch_size):
        pixel_mask[i, height - height // (i + 2):, :] = 0
        pixel_mask[i, :, width - width // (i + 2):] = 0
        attention_mask[i, max(text_length - i, 2):] = 0
    pixel_values = torch.randn(batch_size, 3, height, width, generator=generator) * pixel_mask[:, None]
    inputs = {"pixel_values": pixel_values, "pixel_mask": pixel_mask}
    if "input_ids" in input_names:
        vocab_size = model.config.vocab_size
        input_ids = torch.randint(1, vocab_size, (batch_size, text_length), generator=generator)
        input_ids[:, 0] = min(101, vocab_size - 1)
        inputs.update(input_ids=input_ids * attention_mask, attention_mask=attention_mask)
    return {name: inputs[name] for name in input_names}


def export_onnx(model, path: str | os.PathLike, opset_version: int = 18,
                example_size: tuple[int, int, int] = (2, 96, 128), text_length: int = 8) -> str:
    """Export `model` (put in eval mode) to the ONNX file `path`; batch, height, width (and text length) stay dynamic.

    Args:
        model: a detrvilt `DetrForObjectDetection`, `ViltForQuestionAnswering` or `ViltForImageAndTextRetrieval`.
        path: the `.onnx` file to write.
        opset_version: ONNX opset (18 by default).
        example_size: `(batch_size, height, width)` of the tracing example; the batch must be >= 2 (a batch of one
            would be fixed to 1).
        text_length: text length of the ViLT example (>= 2, for the same reason).

    Returns:
        `path` as a string.
    """
    input_names, output_names = _signature(model)
    batch_size, height, width = example_size
    if batch_size < 2 or text_length < 2:
        raise ValueError(f"example_size must have a batch of at least 2 and text_length must be at least 2 to stay "
                         f"dynamic, got {example_size} and {text_length}")
    model.eval()
    batch, rows, columns, text = (torch.export.Dim(name) for name in ("batch", "height", "width", "text_length"))
    axes = {"pixel_values": {0: batch, 2: rows, 3: columns}, "pixel_mask": {0: batch, 1: rows, 2: columns},
            "input_ids": {0: batch, 1: text}, "attention_mask": {0: batch, 1: text}}
    inputs = example_inputs(model, batch_size, height, width, text_length)
    # The wrapper takes `*inputs`: torch.export sees one (varargs) argument, hence the nested tuple of shapes.
    torch.onnx.export(OnnxWrapper(model).eval(), tuple(inputs.values()), str(path), input_names=list(input_names),
                      output_names=list(output_names), opset_version=opset_version, dynamo=True,
                      dynamic_shapes=(tuple(axes[name] for name in input_names),), verbose=False)
    return str(path)


def onnx_max_difference(model, path: str | os.PathLike, inputs: dict) -> dict:
    """Run the exported graph in onnxruntime (CPU) and `model` in PyTorch on the same `inputs` (see
    `example_inputs`).

    Returns:
        `dict` output name -> largest absolute difference.
    """
    import onnxruntime

    _, output_names = _signature(model)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_outputs = session.run(list(output_names), {name: tensor.numpy() for name, tensor in inputs.items()})
    with torch.no_grad():
        torch_outputs = OnnxWrapper(model.eval())(*inputs.values())
    return {name: float(np.abs(ours - theirs.numpy()).max())
            for name, ours, theirs in zip(output_names, onnx_outputs, torch_outputs, strict=True)}


__all__ = ["OnnxWrapper", "SIGNATURES", "example_inputs", "export_onnx", "onnx_max_difference"]
