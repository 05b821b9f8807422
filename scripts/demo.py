"""The demo: a small DETR trained from scratch on synthetic shapes, then a small ViLT pretrained and fine-tuned on
synthetic VQA, both on the CPU, evaluated, drawn and reloaded.

    make demo            # or: .venv/bin/python scripts/demo.py --output_dir outputs/demo

Offline throughout. DETR: build the synthetic shapes set (train seed 0, held-out validation seed 1); train with the
Accelerate loop (one process); print the COCO table on the held-out images; write the pictures (predictions,
encoder and decoder attention, object-query boxes) and the loss curve; save a Hub-ready folder (`model/`: config,
safetensors weights, image processor, remote code); reload it with `AutoModelForObjectDetection.from_pretrained`
and check that it gives the same outputs. The recipe (a small DC5 ResNet on 64-pixel images, the backbone trained
at the transformer's learning rate) is what fits a CPU budget; the paper's recipe is the training scripts' default.
ViLT (`--vilt`, on by default; `python -m detrvilt.training.vilt.demo` runs it alone): pretrain on synthetic
captions (MLM + ITM + WPA), fine-tune on synthetic VQA and the same from scratch, print both VQA scores against the
majority answer, answer questions about a new picture, and draw the pretrained model's word-patch alignment, into
`output_dir/vilt`.
"""

from transformers import HfArgumentParser

from detrvilt.training.detr.demo import DemoArguments, run_demo


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(DemoArguments, description=__doc__.split("\n\n")[0]).parse_args_into_dataclasses(
        args=argv)
    return run_demo(args)


if __name__ == "__main__":
    main()
