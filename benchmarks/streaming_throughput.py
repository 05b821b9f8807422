"""Training-data throughput, streaming against map-style, on the same images and several processes (gloo, CPU).

Both paths feed a model's training input, without the model (the model's step is the same on both paths):

- `--model detr`: decode, the paper's augmentation (scaled to `--image_size`), normalization and `DetrDataCollator`
  padding, on the synthetic shapes. map-style: the rows saved with `save_to_disk` (memory-mapped Arrow, the scripts'
  `--dataset disk`), `SeededDetectionDataset` + `EpochShuffleSampler` in a DataLoader that `accelerator.prepare`
  splits across processes (what `run_accelerate_training` builds); streaming: the same rows written by
  `write_parquet_shards`, read with `load_stream` -> `distribute_stream` -> `StreamingDetectionDataset` (block
  shuffle) -> `stream_loader` (what a `--streaming` run builds).
- `--model vilt`: pretraining batches (decode, pixelbert resize, tokenization, whole-word masking, ITM negatives:
  `BatchSeededCollator(ViltPretrainingCollator)`) of the synthetic captions, one caption per row; map-style over
  `IndexedExamples`, streaming over `StreamingExamples`, otherwise as for DETR.

DataLoader workers start by fork, as in a training process launched by `torchrun` or `accelerate launch` on Linux (the
benchmark's own processes are spawned, whose children would otherwise be spawned too, re-importing everything at every
epoch). Every process reads one epoch of its share per repeat, the two paths alternating (map, stream, map, ...) so
that drifts of the machine's load hit both alike; examples/s = examples of all processes / the slowest process's
seconds. The median over repeats is printed (and written as JSON with `--output_json`).

    python benchmarks/streaming_throughput.py --num_processes 2 --num_images 512 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time

import torch
import torch.multiprocessing as mp


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("detr", "vilt"), default="detr", help="whose input pipeline")
    parser.add_argument("--num_processes", type=int, default=2)
    parser.add_argument("--num_images", type=int, default=512, help="ViLT: images (rows: one per caption)")
    parser.add_argument("--image_size", type=int, default=128, help="side of the synthetic images (and the resize)")
    parser.add_argument("--num_shards", type=int, default=8, help="Parquet shards (a multiple of the processes)")
    parser.add_argument("--batch_size", type=int, default=8, help="per process")
    parser.add_argument("--num_workers", type=int, default=0, help="DataLoader workers per process")
    parser.add_argument("--shuffle_buffer_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data_dir", default=None, help="where to write the two copies (default: a temporary folder)")
    parser.add_argument("--output_json", default=None)
    return parser.parse_args(argv)


def write_data(args, folder: str) -> int:
    from detrvilt.data import make_shapes_dataset, make_vilt_captions_dataset
    from detrvilt.data.streaming import write_parquet_shards

    if args.model == "vilt":
        from detrvilt.training.vilt.recipes import captions_to_texts

        dataset = captions_to_texts(make_vilt_captions_dataset(args.num_images, seed=0, image_size=args.image_size))
    else:
        dataset = make_shapes_dataset(args.num_images, seed=0, image_size=args.image_size, max_objects=5)
    dataset.save_to_disk(os.path.join(folder, "disk"))
    write_parquet_shards(dataset, os.path.join(folder, "shards"), num_shards=args.num_shards)
    return len(dataset)


def _worker_options(args) -> dict:
    if not args.num_workers:
        return {"num_workers": 0}
    return {"num_workers": args.num_workers, "multiprocessing_context": "fork"}


def _vilt_loaders(args, folder: str, accelerator):
    import datasets
    from torch.utils.data import DataLoader

    from detrvilt.data import BatchSeededCollator, IndexedExamples, ViltPretrainingCollator, default_vilt_processor
    from detrvilt.data.streaming import StreamingExamples, distribute_stream, load_stream, stream_loader
    from detrvilt.training import EpochShuffleSampler

    size = args.image_size
    processor = default_vilt_processor(size={"shortest_edge": size, "longest_edge": round(size * 1333 / 800)})
    collator = BatchSeededCollator(ViltPretrainingCollator(processor), seed=0)
    mapped = IndexedExamples(datasets.load_from_disk(os.path.join(folder, "disk")))
    sampler = EpochShuffleSampler(len(mapped), seed=0)
    map_loader = accelerator.prepare(DataLoader(mapped, batch_size=args.batch_size, sampler=sampler,
                                                collate_fn=collator, generator=torch.Generator().manual_seed(0),
                                                **_worker_options(args)))
    stream = distribute_stream(load_stream(os.path.join(folder, "shards")), accelerator.process_index,
                               accelerator.num_processes)
    streamed = StreamingExamples(stream, shuffle_buffer_size=args.shuffle_buffer_size, seed=0)
    stream_loader_ = stream_loader(streamed, args.batch_size, collator, **_worker_options(args))
    return {"map-style": (map_loader, [sampler, mapped]), "streaming": (stream_loader_, [streamed])}


def _loaders(args, folder: str, accelerator):
    if args.model == "vilt":
        return _vilt_loaders(args, folder, accelerator)
    import datasets
    from torch.utils.data import DataLoader

    from detrvilt import DetrImageProcessor
    from detrvilt.data import DetrDataCollator, DetrDetectionTransform, DetrTrainAugmentation, SeededDetectionDataset
    from detrvilt.data.streaming import StreamingDetectionDataset, distribute_stream, load_stream, stream_loader
    from detrvilt.training import EpochShuffleSampler

    size = args.image_size
    processor = DetrImageProcessor(size={"shortest_edge": size, "longest_edge": round(size * 1333 / 800)},
                                   num_labels=3)
    transform = DetrDetectionTransform(processor, DetrTrainAugmentation.scaled(size, round(size * 1333 / 800)))
    mapped = SeededDetectionDataset(datasets.load_from_disk(os.path.join(folder, "disk")), transform, seed=0)
    sampler = EpochShuffleSampler(len(mapped), seed=0)
    map_loader = accelerator.prepare(DataLoader(mapped, batch_size=args.batch_size, sampler=sampler,
                                                collate_fn=DetrDataCollator(),
                                                generator=torch.Generator().manual_seed(0), **_worker_options(args)))
    stream = distribute_stream(load_stream(os.path.join(folder, "shards")), accelerator.process_index,
                               accelerator.num_processes)
    streamed = StreamingDetectionDataset(stream, transform, seed=0, shuffle_buffer_size=args.shuffle_buffer_size)
    stream_loader_ = stream_loader(streamed, args.batch_size, DetrDataCollator(), **_worker_options(args))
    return {"map-style": (map_loader, [sampler]), "streaming": (stream_loader_, [streamed])}


def _worker(rank, args, folder, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(args.num_processes), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(args.num_processes), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from detrvilt.training.recipes import make_accelerator

    accelerator = make_accelerator(cpu=True)
    loaders = _loaders(args, folder, accelerator)
    rates = {name: [] for name in loaders}
    for repeat in range(args.repeats + 1):  # the first round warms up (imports, file cache)
        for name, (loader, epoch_holders) in loaders.items():
            for holder in epoch_holders:
                holder.set_epoch(repeat)
            accelerator.wait_for_everyone()
            start = time.perf_counter()
            examples = sum(int(batch["pixel_values"].shape[0]) for batch in loader)
            seconds = time.perf_counter() - start
            totals = accelerator.gather(torch.tensor([[float(examples), seconds]])).tolist()
            if repeat:
                rates[name].append(sum(t[0] for t in totals) / max(t[1] for t in totals))
    if accelerator.is_main_process:
        queue.put(rates)
    accelerator.wait_for_everyone()


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.num_shards % args.num_processes:
        raise ValueError(f"--num_shards ({args.num_shards}) must be a multiple of --num_processes "
                         f"({args.num_processes}): each process then reads whole shards")
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.data_dir or temporary
        num_rows = write_data(args, folder)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        context = mp.get_context("spawn")
        queue = context.Queue()
        processes = [context.Process(target=_worker, args=(rank, args, folder, port, queue))
                     for rank in range(args.num_processes)]
        for process in processes:
            process.start()
        rates = queue.get(timeout=3600)
        for process in processes:
            process.join()
    result = {"settings": vars(args), "rows": num_rows, "examples_per_second": rates,
              "median": {name: statistics.median(values) for name, values in rates.items()}}
    print(f"{args.model}: {args.num_processes} processes, {num_rows} rows ({args.num_images} images of "
          f"{args.image_size} px), batch "
          f"{args.batch_size} per process, {args.num_workers} workers, {args.repeats} epochs each (alternating)")
    for name, values in rates.items():
        print(f"{name:>10}: median {statistics.median(values):7.1f} examples/s  "
              f"({', '.join(f'{v:.1f}' for v in values)})")
    ratio = result["median"]["streaming"] / result["median"]["map-style"]
    print(f"streaming / map-style: {ratio:.2f}")
    if args.output_json:
        with open(args.output_json, "w") as handle:
            json.dump(result, handle, indent=1)
    return result


if __name__ == "__main__":
    main()
