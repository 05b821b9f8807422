"""Convert a local DETR or ViLT checkpoint into a detrvilt Hub folder: weights, remote code, processor and card.

    python scripts/convert_checkpoint.py --input path/to/detr-resnet-50 --output_dir detrvilt-detr-resnet-50
    python scripts/convert_checkpoint.py --input detr-r50-e632da11.pth --output_dir detrvilt-detr-r50
    python scripts/convert_checkpoint.py --input vilt_200k_mlm_itm.ckpt --output_dir detrvilt-vilt-mlm-itm

Inputs (nothing is fetched from the Hub): a transformers folder as `save_pretrained` writes it (facebook/detr-resnet-50,
dandelin/vilt-b32-mlm, -finetuned-vqa, -finetuned-nlvr2, -finetuned-coco, downloaded), a facebookresearch/detr `.pth`
or a dandelin/ViLT `.ckpt` (its ITM head is kept). The output loads with the Auto classes after `import detrvilt`, or
with `trust_remote_code=True` without it.
"""

import json
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from detrvilt.conversion.checkpoints import SOURCES, convert_checkpoint
from detrvilt.hub import render_model_card, save_for_hub


@dataclass
class ConvertArguments:
    input: str = field(metadata={"help": "Folder of a transformers DETR/ViLT model, or an official .pth / .ckpt file."})
    output_dir: str = field(metadata={"help": "Where to write the detrvilt model (created if missing)."})
    source: str = field(default="auto", metadata={
        "help": f"Checkpoint layout, one of {SOURCES}; auto: folder -> transformers, .pth -> DETR, .ckpt -> ViLT."})
    id2label_file: str | None = field(default=None, metadata={
        "help": "JSON file {index: name} with the class / answer names of an official checkpoint (default: COCO's "
                "names for a 91-class DETR, else LABEL_<i>)."})
    repo_id: str | None = field(default=None, metadata={
        "help": "Hub repository named in the card's loading examples (default: the output folder's name)."})
    variant: str | None = field(default=None, metadata={
        "help": "One line for the card on where the weights come from (default: names the input)."})


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(ConvertArguments).parse_args_into_dataclasses(args=argv)
    overrides = {}
    if args.id2label_file:
        with open(args.id2label_file) as handle:
            overrides["id2label"] = {int(k): v for k, v in json.load(handle).items()}
    model, processor, source = convert_checkpoint(args.input, args.source, overrides)
    files = save_for_hub(model, processor, args.output_dir)
    repo_id = args.repo_id or args.output_dir.rstrip("/").split("/")[-1]
    card = render_model_card(model.config, repo_id, processor=processor, dataset_name="not evaluated here",
                             variant=args.variant or f"converted by detrvilt from {args.input} ({source} layout)",
                             training_text=f"Weights converted from `{args.input}` ({source} layout); see the "
                                           "original release for how they were trained.")
    card.save(f"{args.output_dir}/README.md")
    print(f"wrote {type(model).__name__} ({source}) to {args.output_dir}: {', '.join(files + ['README.md'])}")
    return {"model_class": type(model).__name__, "source": source, "files": sorted(files + ["README.md"])}


if __name__ == "__main__":
    main()
