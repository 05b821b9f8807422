"""Write a training source of DETR or ViLT as shards for the Accelerate scripts' `--streaming --stream_source DIR`.

    python scripts/write_shards.py --model detr --output_dir out/shards/detr --num_shards 8     # synthetic shapes
    python scripts/write_shards.py --model detr --dataset coco --train_images_dir coco/train2017 \
        --train_annotation_file coco/annotations/instances_train2017.json --output_dir out/shards/coco --num_shards 64
    python scripts/write_shards.py --model vilt --task pretrain --dataset files --train_file dataset_coco.json \
        --train_images_dir coco --output_dir out/shards/captions --num_shards 64 --shard_format webdataset

The source is picked by the model's own data arguments (`--help` with `--model detr` or `--model vilt` lists them), and
the rows are those its map-style training reads (`load_data` / `load_vilt_data` of the recipes); every image's bytes
go into the shards (`detrvilt.data.streaming.write_shards`).
"""

import argparse
import os
import sys

from transformers import HfArgumentParser

from detrvilt.data.streaming import write_shards
from detrvilt.training.arguments import SHARD_MODELS, WriteShardsArguments


def _model_name(argv: list[str]) -> str:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--model", default="detr", choices=SHARD_MODELS)
    return parser.parse_known_args(argv)[0].model


def main(argv: list[str] | None = None) -> dict[str, list[str]]:
    argv = sys.argv[1:] if argv is None else list(argv)
    if _model_name(argv) == "detr":
        from detrvilt.training.detr.arguments import DetrDataArguments as DataArguments
        from detrvilt.training.detr.recipes import load_data as load
    else:
        from detrvilt.training.vilt.arguments import ViltDataArguments as DataArguments
        from detrvilt.training.vilt.recipes import load_vilt_data as load
    parser = HfArgumentParser((WriteShardsArguments, DataArguments), description=__doc__.split("\n\n")[0])
    args, data_args = parser.parse_args_into_dataclasses(args=argv)
    train, evaluation, _ = load(data_args)
    written = {}
    for split, dataset in (("train", train), ("validation", evaluation)):
        if split not in args.split_names():
            continue
        if dataset is None:
            raise ValueError(f"--splits names {split!r}, but the source has no {split} set")
        num_shards = args.num_shards
        if split == "validation" and num_shards is not None:  # a small evaluation set: at most a row per shard
            num_shards = min(num_shards, len(dataset))
        written[split] = write_shards(dataset, args.output_dir, args.shard_format, split=split,
                                      num_shards=num_shards, max_shard_bytes=args.max_shard_mib * 2**20)
        print(f"{split}: {len(dataset)} rows in {len(written[split])} {args.shard_format} shard(s) under "
              f"{os.path.abspath(args.output_dir)}")
    return written


if __name__ == "__main__":
    main()
