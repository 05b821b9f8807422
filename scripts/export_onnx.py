"""Export a saved detrvilt DETR (or single-image ViLT: VQA, retrieval) to ONNX and check it against PyTorch.

    python scripts/export_onnx.py --model_dir outputs/demo/model --output detr.onnx

DETR's graph maps `pixel_values` (B, 3, H, W) and `pixel_mask` (B, H, W) to `logits` and `pred_boxes`, with no NMS and
no custom operator; ViLT's also takes `input_ids` and `attention_mask` (B, T). Batch, image size and text length stay
dynamic. The check runs the graph in onnxruntime next to PyTorch on a padded batch of 3 at another size and prints
the largest differences.
"""

import json
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from detrvilt.conversion.onnx_export import example_inputs, export_onnx, onnx_max_difference
from detrvilt.hub import load_for_hub


@dataclass
class ExportArguments:
    model_dir: str = field(metadata={"help": "Folder of a saved detrvilt DetrForObjectDetection, "
                                             "ViltForQuestionAnswering or ViltForImageAndTextRetrieval."})
    output: str = field(metadata={"help": "The .onnx file to write."})
    opset_version: int = field(default=18, metadata={"help": "ONNX opset version."})
    example_height: int = field(default=224, metadata={"help": "Height of the tracing example (any size works later)."})
    example_width: int = field(default=320, metadata={"help": "Width of the tracing example."})
    check: bool = field(default=True, metadata={
        "help": "Compare onnxruntime with PyTorch on a padded batch of 3 at another size (--check false: skip)."})


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(ExportArguments).parse_args_into_dataclasses(args=argv)
    model = load_for_hub(args.model_dir)[0].eval()
    export_onnx(model, args.output, args.opset_version, (2, args.example_height, args.example_width))
    result = {"output": args.output, "model_class": type(model).__name__}
    if args.check:
        inputs = example_inputs(model, 3, args.example_height + 32, args.example_width - 64, text_length=11, seed=1)
        result["max_difference"] = onnx_max_difference(model, args.output, inputs)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
