"""The demo: train a small DETR from scratch on the synthetic shapes set on the CPU, evaluate it, draw it, reload it.

    make demo            # or: .venv/bin/python scripts/demo.py --output_dir outputs/demo

Offline throughout. Steps: build the synthetic set (train seed 0, held-out validation seed 1); train with the
Accelerate loop (one process); print the COCO table on the held-out images; write `predictions.png` and
`loss_curve.png`; save a Hub-ready folder (`model/`: config, safetensors weights, image processor); reload it with
`AutoModelForObjectDetection.from_pretrained` and `AutoImageProcessor.from_pretrained` and check that the reloaded
model gives the same outputs. The recipe (a small DC5 ResNet on 64-pixel images, the backbone trained at the
transformer's learning rate) is what fits a 10-minute CPU budget; the paper's recipe is the scripts' default.
"""

from transformers import HfArgumentParser

from detrvilt.training.demo import DemoArguments, run_demo


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(DemoArguments, description=__doc__.split("\n\n")[0]).parse_args_into_dataclasses(
        args=argv)
    return run_demo(args)


if __name__ == "__main__":
    main()
