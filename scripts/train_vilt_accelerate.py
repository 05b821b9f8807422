"""Train and evaluate ViLT with `accelerate` (any number of processes, mixed precision, exact resume), on the same
training loop as DETR: pretraining (MLM + ITM + WPA), VQA, NLVR2 or retrieval.

    accelerate launch --num_processes 2 --cpu scripts/train_vilt_accelerate.py --task pretrain \
        --output_dir out/vilt_pretrain --hidden_size 128 --num_hidden_layers 4 --num_attention_heads 4 \
        --intermediate_size 512 --patch_size 16 --image_size 64 --shortest_edge 64 --synthetic_image_size 64
    accelerate launch --mixed_precision bf16 scripts/train_vilt_accelerate.py --task retrieval --dataset files \
        --train_file dataset_flickr30k.json --train_images_dir flickr30k-images --output_dir out/irtr \
        --model_name_or_path out/vilt_pretrain

Data: the synthetic scenes (default), the official files (`--dataset files`: Karpathy json for pretrain/retrieval,
VQAv2 json for vqa, NLVR2 json lines for nlvr2), a saved DatasetDict (`--dataset disk`), a Hub dataset id or local
folder (`--dataset_name`), or shards read as a stream (`--streaming --stream_source folder`). The output folder gets
`config.json`, `model.safetensors`, the processor files (loadable with the Auto classes after `import detrvilt`),
`train_summary.json` (losses, metrics) and, with `--checkpointing_steps`, `checkpoint-<step>` folders for
`--resume_from_checkpoint`.
"""

from transformers import HfArgumentParser

from detrvilt.training.vilt.arguments import ViltAccelerateArguments, ViltDataArguments, ViltModelArguments
from detrvilt.training.vilt.recipes import run_vilt_accelerate_training


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((ViltModelArguments, ViltDataArguments, ViltAccelerateArguments),
                              description=__doc__.split("\n\n")[0])
    model_args, data_args, train_args = parser.parse_args_into_dataclasses(args=argv)
    return run_vilt_accelerate_training(model_args, data_args, train_args)


if __name__ == "__main__":
    main()
