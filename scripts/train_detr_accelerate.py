"""Train and evaluate DETR with `accelerate` (any number of processes, mixed precision, exact resume).

    accelerate launch --multi_gpu --num_processes 2 scripts/train_detr_accelerate.py --output_dir out/detr \
        --dataset synthetic --backbone resnet18 --max_steps 1000    # 2 GPUs, or 2 CPU processes (gloo) without GPU
    python scripts/train_detr_accelerate.py --output_dir out/detr --mixed_precision bf16 ...   # one process

Data: the synthetic shapes set (default), a COCO folder (`--dataset coco`), a saved DatasetDict (`--dataset disk`), a
Hub dataset id or local folder in the Hub's object-detection layout (`--dataset_name`), or shards read as a stream
(`--streaming --stream_source folder`). `accelerate launch --config_file configs/accelerate/fsdp_full_shard.yaml` shards
the model (FSDP2, also on CPU processes).
The output folder gets `config.json`, `model.safetensors` and `preprocessor_config.json` (loadable with
`AutoModelForObjectDetection.from_pretrained` / `AutoImageProcessor.from_pretrained` after `import detrvilt`),
`train_summary.json` (losses, COCO mAP) and, with `--checkpointing_steps`, `checkpoint-<step>` folders for
`--resume_from_checkpoint`.
"""

from transformers import HfArgumentParser

from detrvilt.training.detr.arguments import DetrAccelerateArguments, DetrDataArguments, DetrModelArguments
from detrvilt.training.detr.recipes import run_accelerate_training


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((DetrModelArguments, DetrDataArguments, DetrAccelerateArguments),
                              description=__doc__.split("\n\n")[0])
    model_args, data_args, train_args = parser.parse_args_into_dataclasses(args=argv)
    return run_accelerate_training(model_args, data_args, train_args)


if __name__ == "__main__":
    main()
