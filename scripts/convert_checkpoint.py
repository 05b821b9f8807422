"""Convert a transformers-format DETR checkpoint folder into a detrvilt one (weights and config).

    python scripts/convert_checkpoint.py --input_dir path/to/detr-resnet-50 --output_dir detrvilt-detr-resnet-50

The input is a local folder as `save_pretrained` writes it (e.g. a downloaded facebook/detr-resnet-50); nothing is
fetched from the Hub. The output loads with `AutoModelForObjectDetection.from_pretrained` after `import detrvilt`.
Converting the image processor and the official repositories' checkpoints (.pth, .ckpt) is not done here yet.
"""

from dataclasses import dataclass, field

from transformers import DetrForObjectDetection as TransformersDetr
from transformers import HfArgumentParser

from detrvilt.conversion import convert_transformers_detr


@dataclass
class ConvertArguments:
    input_dir: str = field(metadata={"help": "Folder of a transformers DetrForObjectDetection (config.json + weights)."})
    output_dir: str = field(metadata={"help": "Where to write the detrvilt model (created if missing)."})


def main(argv: list[str] | None = None) -> None:
    (args,) = HfArgumentParser(ConvertArguments).parse_args_into_dataclasses(args=argv)
    model = convert_transformers_detr(TransformersDetr.from_pretrained(args.input_dir))
    model.save_pretrained(args.output_dir)
    print(f"wrote {type(model).__name__} ({model.config.backbone}, {model.config.num_labels} classes) to {args.output_dir}")


if __name__ == "__main__":
    main()
