"""Train and evaluate DETR with `transformers.Trainer` (the paper's optimizer groups, COCO mAP as compute_metrics).

    python scripts/train_detr.py --output_dir out/detr --dataset synthetic --backbone resnet18 --max_steps 1000 \
        --eval_strategy steps --eval_steps 500

Data as transformers' examples take it: `--dataset_name` (a Hub dataset id or a local folder, with
`--dataset_config_name`, `--train_split_name`, `--eval_split_name`), or `--dataset` (see `--help`). Every
`TrainingArguments` option works (`--bf16`, `--gradient_accumulation_steps`, `--resume_from_checkpoint`, ...);
the defaults follow the paper (AdamW, lr 1e-4, backbone 1e-5, weight decay 1e-4, clipping 0.1). The output folder gets
`config.json`, `model.safetensors`, `preprocessor_config.json` and `train_summary.json`.
"""

from transformers import HfArgumentParser

from detrvilt.training.detr.arguments import DetrDataArguments, DetrModelArguments, DetrTrainingArguments
from detrvilt.training.detr.recipes import run_trainer_training


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((DetrModelArguments, DetrDataArguments, DetrTrainingArguments),
                              description=__doc__.split("\n\n")[0])
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    return run_trainer_training(model_args, data_args, training_args)


if __name__ == "__main__":
    main()
