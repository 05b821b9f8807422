"""A tiny DETR trained through `prepare_training` + `train_loop` + `model_for_saving`, as the recipes do, for the
launcher tests of `test_fsdp.py` (`accelerate launch --config_file configs/accelerate/<config>.yaml`). Writes
`result.json` (losses, sharding, parameter type) into `--output_dir` from the main process."""

import argparse
import json
import os

import torch
from conftest import tiny_detr_config
from torch.distributed.fsdp import FSDPModule
from torch.utils.data import DataLoader

from detrvilt import DetrForObjectDetection, DetrImageProcessor
from detrvilt.data import DetrDataCollator, make_shapes_dataset
from detrvilt.data.detr.sources import InMemoryDetectionDataset
from detrvilt.training import EpochShuffleSampler, LoopConfig, create_detr_optimizer, train_loop
from detrvilt.training.recipes import make_accelerator, save_trained
from detrvilt.training.sharding import model_for_saving, prepare_training

SIZE = 64


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--max_steps", type=int, default=4)
    parser.add_argument("--checkpointing_steps", type=int, default=None)
    parser.add_argument("--resume_from_checkpoint", default=None)
    parser.add_argument("--mixed_precision", default="no")
    parser.add_argument("--cpu", action="store_true")
    args = parser.parse_args()
    accelerator = make_accelerator(args.mixed_precision, cpu=args.cpu)
    processor = DetrImageProcessor(size={"shortest_edge": SIZE, "longest_edge": SIZE}, num_labels=3)
    dataset = InMemoryDetectionDataset(make_shapes_dataset(8, seed=0, image_size=SIZE, min_objects=1, max_objects=3),
                                       processor, flip_prob=0.5)
    sampler = EpochShuffleSampler(len(dataset), seed=0)
    loader = DataLoader(dataset, batch_size=2, sampler=sampler, collate_fn=DetrDataCollator(),
                        generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = DetrForObjectDetection(tiny_detr_config(num_labels=3, num_queries=6))
    optimizer = create_detr_optimizer(model, learning_rate=1e-3, backbone_learning_rate=1e-4)
    model, optimizer, loader = prepare_training(accelerator, model, optimizer, loader, gradient_accumulation_steps=2,
                                                max_grad_norm=0.1)
    config = LoopConfig(max_steps=args.max_steps, gradient_accumulation_steps=2, max_grad_norm=0.1,
                        progress_bar=False, output_dir=args.output_dir, checkpointing_steps=args.checkpointing_steps,
                        resume_from_checkpoint=args.resume_from_checkpoint)
    losses = train_loop(accelerator, model, optimizer, loader, config, sampler=sampler)
    plain = model_for_saving(accelerator, model)
    if accelerator.is_main_process:
        save_trained(plain, processor, os.path.join(args.output_dir, "model"))
        with open(os.path.join(args.output_dir, "result.json"), "w") as handle:
            json.dump({"losses": losses, "distributed_type": accelerator.distributed_type.value,
                       "num_processes": accelerator.num_processes, "fsdp": isinstance(model, FSDPModule),
                       "parameter_type": type(next(model.parameters()).data).__name__}, handle)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
