"""Streaming, sharded data (`detrvilt.data.streaming`) and the loop's streaming support: shards are self-contained
and read back as written (Parquet and WebDataset), streamed examples get the map-style path's transforms and
randomness, two gloo processes see each example once per epoch, a resume continues the stream (exactly without a
shuffle buffer; with one, no example twice and the next epochs exact), and two processes train like one with the same
global batch where the loss is a mean over the batch (a toy regression, DETR with equal box counts per process); where
it is not, the difference is DETR's class-weighted cross-entropy, a weighted mean per process (tested as such)."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import free_port, tiny_detr_config
from PIL import Image

from detrvilt import DetrForObjectDetection, DetrImageProcessor
from detrvilt.data import (
    BatchSeededCollator,
    DetrDataCollator,
    DetrDetectionTransform,
    DetrTrainAugmentation,
    IndexedExamples,
    SeededDetectionDataset,
    ViltPretrainingCollator,
    default_vilt_processor,
    load_coco_detection,
    make_shapes_dataset,
    make_vilt_captions_dataset,
    write_coco_detection,
)
from detrvilt.data.streaming import (
    StreamingDetectionDataset,
    StreamingExamples,
    distribute_stream,
    load_stream,
    stream_loader,
    write_parquet_shards,
    write_webdataset_shards,
)
from detrvilt.training import LoopConfig, train_loop
from detrvilt.training.loop import STREAM_POSITIONS
from detrvilt.training.recipes import make_accelerator
from detrvilt.training.sharding import prepare_training

SIZE = 48
NUM_ROWS = 24  # the toy regression stream: 4 shards of 6 rows


def _pixels(value) -> np.ndarray:
    import io

    return np.asarray(Image.open(io.BytesIO(value["bytes"])).convert("RGB"))


# ------------------------------------------------------------------------------------------------ writing, reading


def test_parquet_shards_hold_the_images_and_read_back_as_written(tmp_path):
    shapes = make_shapes_dataset(9, seed=0, image_size=SIZE, max_objects=3)
    write_coco_detection(shapes, tmp_path / "coco", "train")
    coco = load_coco_detection(tmp_path / "coco" / "train", tmp_path / "coco" / "annotations" / "instances_train.json")
    expected = [(row["image_id"], np.asarray(row["image"].convert("RGB")), row["objects"]) for row in coco]
    paths = write_parquet_shards(coco, tmp_path / "shards", num_shards=4)
    assert [os.path.basename(p) for p in paths] == [f"train-0000{i}-of-00004.parquet" for i in range(4)]
    shutil.rmtree(tmp_path / "coco")  # the shards are self-contained
    stream = load_stream(tmp_path / "shards")
    assert stream.num_shards == 4
    assert stream.features["objects"]["category"].feature.names == ["circle", "square", "triangle"]
    rows = list(stream)
    assert [row["example_index"] for row in rows] == list(range(9))
    for row, (image_id, pixels, objects) in zip(rows, expected, strict=True):
        assert row["image_id"] == image_id
        np.testing.assert_array_equal(_pixels(row["image"]), pixels)
        assert row["objects"] == objects
    # Without num_shards, a shard closes once it holds max_shard_bytes: several small shards, every row once.
    paths = write_parquet_shards(shapes, tmp_path / "small", max_shard_bytes=1, batch_size=2)
    assert len(paths) == 5 and paths[-1].endswith("train-00004-of-00005.parquet")
    assert sorted(row["example_index"] for row in load_stream(tmp_path / "small")) == list(range(9))


def test_webdataset_shards_read_back_like_parquet(tmp_path):
    shapes = make_shapes_dataset(6, seed=2, image_size=SIZE, max_objects=3)
    write_parquet_shards(shapes, tmp_path / "parquet", num_shards=2)
    paths = write_webdataset_shards(shapes, tmp_path / "wds", num_shards=3)
    assert [os.path.basename(p) for p in paths] == [f"train-0000{i}-of-00003.tar" for i in range(3)]
    parquet, stream = list(load_stream(tmp_path / "parquet")), load_stream(tmp_path / "wds")
    # JSON loses the features; the file written next to the tars brings them back (DETR reads the class names there)
    assert stream.features["objects"]["category"].feature.names == ["circle", "square", "triangle"]
    tars = list(stream)
    assert [row["example_index"] for row in tars] == list(range(6))
    for a, b in zip(parquet, tars, strict=True):
        np.testing.assert_array_equal(_pixels(a["image"]), _pixels(b["image"]))
        assert a["image_id"] == b["image_id"]
        assert b["objects"]["category"] == a["objects"]["category"]
        np.testing.assert_allclose(np.asarray(b["objects"]["bbox"]).reshape(-1, 4),
                                   np.asarray(a["objects"]["bbox"]).reshape(-1, 4), rtol=1e-6)


def test_webdataset_shards_of_mixed_image_formats_keep_every_image(tmp_path):
    """PNG and JPEG files in one column (COCO folders hold both sometimes): every row keeps its image."""
    import io

    images = []
    for index in range(4):
        pixels = np.full((8, 8, 3), 40 * index, dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG" if index % 2 else "JPEG")
        images.append({"bytes": buffer.getvalue(), "path": f"{index}.{'png' if index % 2 else 'jpg'}"})
    features = datasets.Features(image=datasets.Image(), text=datasets.Value("string"))
    mixed = datasets.Dataset.from_dict({"image": images, "text": list("abcd")}, features=features)
    write_webdataset_shards(mixed, tmp_path, num_shards=2)
    rows = list(load_stream(tmp_path))
    assert [row["text"] for row in rows] == list("abcd")
    for index, row in enumerate(rows):
        assert row["image"] is not None and row["image"]["bytes"] == images[index]["bytes"], index


def test_streamed_detection_examples_equal_the_seeded_map_style_ones(tmp_path):
    shapes = make_shapes_dataset(6, seed=3, image_size=(40, 72), max_objects=4)
    write_parquet_shards(shapes, tmp_path / "shards", num_shards=3)
    processor = DetrImageProcessor(size={"shortest_edge": SIZE, "longest_edge": 80}, num_labels=3)
    transform = DetrDetectionTransform(processor, DetrTrainAugmentation.scaled(SIZE, 80))
    mapped = SeededDetectionDataset(shapes, transform, seed=5)
    streamed = StreamingDetectionDataset(load_stream(tmp_path / "shards"), transform, seed=5)
    for epoch in (0, 3):
        mapped.set_epoch(epoch)
        streamed.set_epoch(epoch)
        examples = list(streamed)  # in epoch 3 the shards come in another order: match by image id (= index)
        assert sorted(int(e["labels"]["image_id"]) for e in examples) == list(range(6))
        for example in examples:
            index = int(example["labels"]["image_id"])
            torch.testing.assert_close(example["pixel_values"], mapped[index]["pixel_values"], rtol=0, atol=0)
            torch.testing.assert_close(example["labels"]["boxes"], mapped[index]["labels"]["boxes"], rtol=0, atol=0)
    with pytest.raises(TypeError, match="DetrDetectionTransform"):
        StreamingDetectionDataset(load_stream(tmp_path / "shards"), processor)


def test_streamed_vilt_batches_equal_the_map_style_ones(tmp_path):
    captions = make_vilt_captions_dataset(6, seed=0, image_size=32).select_columns(["image", "image_id", "text"])
    write_parquet_shards(captions, tmp_path / "shards", num_shards=2)
    processor = default_vilt_processor(size={"shortest_edge": 32, "longest_edge": 64}, size_divisor=16)
    collator = BatchSeededCollator(ViltPretrainingCollator(processor), seed=1, return_indices=True)
    streamed = StreamingExamples(load_stream(tmp_path / "shards"))
    streamed.set_epoch(2)
    mapped = IndexedExamples(captions)
    mapped.set_epoch(2)
    stream_batches = list(stream_loader(streamed, batch_size=3, collate_fn=collator))
    for start, batch in zip((0, 3), stream_batches, strict=True):
        expected = collator([mapped[i] for i in range(start, start + 3)])
        assert batch["example_index"].tolist() == list(range(start, start + 3))
        for key in ("input_ids", "labels", "itm_labels", "pixel_values", "pixel_mask"):
            torch.testing.assert_close(batch[key], expected[key], rtol=0, atol=0, msg=key)


def test_distribute_stream_checks_its_arguments(tmp_path):
    write_parquet_shards(datasets.Dataset.from_dict({"x": list(range(4))}), tmp_path, num_shards=2)
    stream = load_stream(tmp_path)
    with pytest.raises(ValueError, match="at least world_size=4 shards"):
        distribute_stream(stream, 0, 4, strategy="shards")
    with pytest.raises(ValueError, match="shuffle_buffer_size"):
        StreamingExamples(stream, shuffle_buffer_size=-1)
    with pytest.raises(TypeError, match="IterableDataset"):
        distribute_stream(datasets.Dataset.from_dict({"x": [1]}), 0, 1)
    with pytest.raises(KeyError, match="no key column 'example_index'"):
        next(iter(StreamingExamples(datasets.Dataset.from_dict({"x": [1]}).to_iterable_dataset())))


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 4 workers on a 2-core machine, on purpose
@pytest.mark.parametrize(("num_shards", "world_size", "strategy", "num_workers"), [
    (5, 2, "auto", 0),  # 5 shards on 2 processes: "auto" keeps one example in 2 of every shard
    (5, 2, "shards", 2),  # 3 shards and 2 shards; 2 workers each (one worker of the second reads 1 shard)
    (4, 3, "examples", 0),
    (3, 2, "examples", 4),  # more workers than shards: the extra workers stop, nothing is lost
])
def test_every_example_once_per_epoch_across_processes_with_uneven_shards(tmp_path, num_shards, world_size, strategy,
                                                                           num_workers):
    """The processes' shares (built here for every rank in one process: the split needs no process group) hold every
    row exactly once, in each epoch, with the remainder of an uneven split: nothing is dropped or repeated."""
    num_rows = 23
    write_parquet_shards(datasets.Dataset.from_dict({"x": list(range(num_rows))}), tmp_path, num_shards=num_shards)
    for epoch in (0, 1):  # epoch 1 reads the shards in another order (and assigns them to processes anew)
        shares = []
        for rank in range(world_size):
            examples = StreamingExamples(distribute_stream(load_stream(tmp_path), rank, world_size, strategy),
                                         shuffle_buffer_size=4, seed=3)
            examples.set_epoch(epoch)
            batches = list(stream_loader(examples, batch_size=4, num_workers=num_workers))
            shares.append([key for batch in batches for key in batch["_index"].tolist()])
            assert all(int(e) == epoch for batch in batches for e in batch["_epoch"])
        assert sorted(key for share in shares for key in share) == list(range(num_rows)), (epoch, shares)
        sizes = sorted(len(share) for share in shares)
        if strategy != "shards":  # one example in N: the shares differ by at most the remainder's one example
            assert sizes[-1] - sizes[0] <= 1 and sizes[-1] == -(-num_rows // world_size)
    with pytest.warns(UserWarning, match="up to 6 examples per process and epoch are not seen"):
        stream_loader(StreamingExamples(load_stream(tmp_path)), batch_size=4, num_workers=2, drop_last=True)


# ------------------------------------------------------------------------------------------------ the loop


def write_regression_shards(folder, num_rows: int = NUM_ROWS, num_shards: int = 4) -> None:
    """A toy regression set (`x`: 4 numbers drawn from the row's index, `y`: their weighted sum) as shards."""
    rows = {"x": [], "y": []}
    for index in range(num_rows):
        x = torch.randn(4, generator=torch.Generator().manual_seed(index))
        rows["x"].append(x.tolist())
        rows["y"].append(float(x @ torch.tensor([1.0, -2.0, 0.5, 3.0])))
    write_parquet_shards(datasets.Dataset.from_dict(rows), folder, num_shards=num_shards)


def run_regression(folder, max_steps: int, batch_size: int, output_dir=None, checkpointing_steps=None, resume=None,
                   shuffle_buffer_size: int = 0, num_workers: int = 0, strategy: str = "auto"):
    """Train a linear model on the stream with `train_loop`; returns `(losses, [(epoch, keys) per batch], weights)`
    for the batches this run consumed."""
    accelerator = make_accelerator(cpu=True)
    stream = distribute_stream(load_stream(folder), accelerator.process_index, accelerator.num_processes, strategy)
    loader = stream_loader(StreamingExamples(stream, shuffle_buffer_size=shuffle_buffer_size, seed=7),
                           batch_size=batch_size, num_workers=num_workers, seed=7)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model, optimizer, loader = prepare_training(accelerator, model, optimizer, loader)
    seen = []

    def loss_step(model, batch):
        seen.append((int(batch["_epoch"][0]), batch["_index"].tolist()))
        x = torch.stack(batch["x"], dim=1).float()  # (B, 4): the default collate gives 4 tensors of (B,)
        return ((model(x).squeeze(1) - batch["y"].float()) ** 2).mean(), {}

    config = LoopConfig(max_steps=max_steps, max_grad_norm=None, progress_bar=False, output_dir=output_dir,
                        checkpointing_steps=checkpointing_steps, resume_from_checkpoint=resume)
    losses = train_loop(accelerator, model, optimizer, loader, config, loss_step=loss_step,
                        describe_batch=lambda batch: batch["_index"].tolist())
    weights = torch.cat([p.detach().flatten() for p in accelerator.unwrap_model(model).parameters()])
    # numpy, not a tensor: a tensor sent through a multiprocessing queue is shared, and gone once its process ends
    return losses, seen, weights.numpy().copy()


def keys_by_epoch(seen) -> dict[int, list[int]]:
    epochs = {}
    for epoch, keys in seen:
        epochs.setdefault(epoch, []).extend(keys)
    return epochs


@pytest.mark.parametrize(("num_workers", "shuffle_buffer_size"), [(0, 0), (2, 0), (0, 4), (2, 5)])
def test_stream_resume_repeats_the_uninterrupted_run(fresh_accelerate_state, tmp_path, num_workers,
                                                     shuffle_buffer_size):
    write_regression_shards(tmp_path / "shards")
    # batch 5: an epoch (24 rows; with 2 workers, two halves of 12) does not end on a batch boundary; 10 steps cross
    # into the second epoch, the checkpoint (after step 4) is inside a shuffle block of the first
    options = dict(num_workers=num_workers, shuffle_buffer_size=shuffle_buffer_size)
    full_losses, full_seen, full_weights = run_regression(tmp_path / "shards", 10, 5, **options)
    epochs = keys_by_epoch(full_seen)
    assert sorted(epochs[0]) == list(range(NUM_ROWS)) and 1 in epochs
    if shuffle_buffer_size:
        assert epochs[0] != sorted(epochs[0])
        assert epochs[1][:8] != epochs[0][:8]  # another order in the next epoch
    out = tmp_path / "run"
    run_regression(tmp_path / "shards", 4, 5, output_dir=out, checkpointing_steps=4, **options)
    assert os.path.isfile(out / "checkpoint-4" / STREAM_POSITIONS / "process_00000.pt")
    losses, seen, weights = run_regression(tmp_path / "shards", 10, 5, output_dir=out, resume="latest", **options)
    assert seen == full_seen[4:]  # the stream continues at the batch after the checkpoint
    assert losses == pytest.approx(full_losses, rel=1e-6)
    np.testing.assert_array_equal(weights, full_weights)


def test_datasets_rolling_buffer_is_not_resumable(tmp_path):
    """Why the block shuffle: `datasets`' own shuffle buffer, resumed from its state_dict, repeats and drops rows."""
    write_regression_shards(tmp_path / "shards")
    stream = load_stream(tmp_path / "shards").shuffle(seed=7, buffer_size=4)
    full = [row["example_index"] for row in stream]
    iterator = iter(stream)
    before = [next(iterator)["example_index"] for _ in range(10)]
    state = stream.state_dict()
    stream.load_state_dict(state)
    after = [row["example_index"] for row in stream]
    assert before == full[:10]
    assert before + after != full  # not the uninterrupted order
    assert len(set(before + after)) < NUM_ROWS or len(before + after) != NUM_ROWS


# ------------------------------------------------------------------------------------------------ two processes


def _init_process(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
    torch.set_num_threads(1)


def _regression_worker(rank, port, folder, output_dir, queue):
    _init_process(rank, port)
    try:
        results = {}
        # Each process: two shards of the four, shuffled in blocks of 3; 8 steps of 3 rows = two epochs of 12 rows.
        results["shards"] = run_regression(folder, 8, 3, shuffle_buffer_size=3, strategy="shards")[1]
        # Same global batch as one process with batch 4: every process keeps one row in two of the same stream.
        results["global_batch"] = run_regression(folder, 8, 2, strategy="examples")
        queue.put((rank, results, None))
    except Exception as error:  # report, so that the test fails with the reason instead of a timeout
        queue.put((rank, None, repr(error)))
        raise


def _regression_resume_worker(rank, port, folder, output_dir, queue):
    _init_process(rank, port)
    try:
        results = {"examples_workers": run_regression(folder, 8, 3, num_workers=2, strategy="examples")[1]}
        full = run_regression(folder, 7, 3, shuffle_buffer_size=4, strategy="shards")
        run_regression(folder, 3, 3, shuffle_buffer_size=4, strategy="shards", output_dir=output_dir,
                       checkpointing_steps=3)
        resumed = run_regression(folder, 7, 3, shuffle_buffer_size=4, strategy="shards", output_dir=output_dir,
                                 resume="latest")
        results["resume"] = (full, resumed)
        queue.put((rank, results, None))
    except Exception as error:
        queue.put((rank, None, repr(error)))
        raise


def _spawn(target, args, timeout: float = 280):
    context = mp.get_context("spawn")
    queue = context.Queue()
    port = free_port()
    processes = [context.Process(target=target, args=(rank, port, *args, queue)) for rank in range(2)]
    for process in processes:
        process.start()
    results = {}
    for _ in processes:
        rank, result, error = queue.get(timeout=timeout)
        assert error is None, f"rank {rank}: {error}"
        results[rank] = result
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return results


def assert_each_example_once_per_epoch(results, name):
    per_process = [keys_by_epoch(results[rank][name]) for rank in range(2)]
    for epoch in (0, 1):
        keys = per_process[0][epoch] + per_process[1][epoch]
        assert sorted(keys) == list(range(NUM_ROWS)), (name, epoch)  # every example once, on one process


def test_two_processes_stream_each_example_once_per_epoch_and_train_like_one(fresh_accelerate_state, tmp_path):
    write_regression_shards(tmp_path / "shards")
    results = _spawn(_regression_worker, (str(tmp_path / "shards"), str(tmp_path / "run")))
    assert_each_example_once_per_epoch(results, "shards")
    # Two processes with 2 rows each train like one process with 4 (the same rows, the same mean loss).
    one_losses, one_seen, one_weights = run_regression(tmp_path / "shards", 8, 4, strategy="examples")
    two_losses, _, two_weights = results[0]["global_batch"]
    merged = [sorted(a + b) for (_, a), (_, b) in zip(results[0]["global_batch"][1], results[1]["global_batch"][1],
                                                      strict=True)]
    assert merged == [sorted(keys) for _, keys in one_seen]
    assert two_losses == pytest.approx(one_losses, rel=1e-5)
    np.testing.assert_allclose(two_weights, one_weights, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_two_processes_with_workers_and_a_resume_inside_a_shuffle_block(fresh_accelerate_state, tmp_path):
    write_regression_shards(tmp_path / "shards")
    results = _spawn(_regression_resume_worker, (str(tmp_path / "shards"), str(tmp_path / "run")))
    assert_each_example_once_per_epoch(results, "examples_workers")
    # Stopped after step 3 (inside a block of 4 rows) and resumed: each process continues its own stream exactly.
    for rank in range(2):
        (full_losses, full_seen, full_weights), (losses, seen, weights) = results[rank]["resume"]
        assert seen == full_seen[3:]
        assert losses == pytest.approx(full_losses, rel=1e-6)
        np.testing.assert_array_equal(weights, full_weights)


# ------------------------------------------------------------------------------------------------ DETR


def detr_processor():
    return DetrImageProcessor(size={"shortest_edge": SIZE, "longest_edge": SIZE}, num_labels=3)


def run_detr(folder, batch_size: int, max_steps: int = 3):
    """Tiny DETR (no dropout, frozen batch norms) on the stream, split one example in N, no augmentation."""
    accelerator = make_accelerator(cpu=True)
    stream = distribute_stream(load_stream(folder), accelerator.process_index, accelerator.num_processes, "examples")
    loader = stream_loader(StreamingDetectionDataset(stream, DetrDetectionTransform(detr_processor())),
                           batch_size=batch_size, collate_fn=DetrDataCollator())
    torch.manual_seed(0)
    model = DetrForObjectDetection(tiny_detr_config(num_labels=3, num_queries=6, dropout=0.0, attention_dropout=0.0,
                                                    activation_dropout=0.0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = next(iter(loader))
    with torch.no_grad():  # the loss terms of the first batch, before any step, for the weighting check
        output = model(**first)
    num_boxes = sum(len(label["class_labels"]) for label in first["labels"])
    first_terms = (float(output.loss_dict["loss_ce"]), num_boxes, len(first["labels"]))
    model, optimizer, loader = prepare_training(accelerator, model, optimizer, loader)
    logs = []
    config = LoopConfig(max_steps=max_steps, max_grad_norm=0.1, logging_steps=1, progress_bar=False)
    losses = train_loop(accelerator, model, optimizer, loader, config, on_log=lambda step, values: logs.append(values))
    return losses, logs, first_terms


def _detr_worker(rank, port, equal, unequal, queue):
    _init_process(rank, port)
    try:
        queue.put((rank, {"equal": run_detr(equal, 2), "unequal": run_detr(unequal, 2, max_steps=1)}, None))
    except Exception as error:
        queue.put((rank, None, repr(error)))
        raise


@pytest.mark.slow
def test_detr_two_processes_stream_like_one_and_the_ce_weighting(fresh_accelerate_state, tmp_path):
    equal, unequal = tmp_path / "equal", tmp_path / "unequal"
    # Two objects in every image: every process's class weights sum to the same number.
    write_parquet_shards(make_shapes_dataset(12, seed=0, image_size=SIZE, min_objects=2, max_objects=2), equal,
                         num_shards=2)
    # One object in the images rank 0 reads first (0, 2), three in rank 1's (1, 3).
    counts = make_shapes_dataset(16, seed=1, image_size=SIZE, min_objects=1, max_objects=3)
    order = sorted(range(16), key=lambda i: len(counts[i]["objects"]["category"]))
    ones = [i for i in order if len(counts[i]["objects"]["category"]) == 1][:2]
    threes = [i for i in order if len(counts[i]["objects"]["category"]) == 3][:2]
    assert len(ones) == 2 and len(threes) == 2
    write_parquet_shards(counts.select([ones[0], threes[0], ones[1], threes[1]]), unequal, num_shards=1)
    results = _spawn(_detr_worker, (str(equal), str(unequal)))
    one_losses, one_logs, _ = run_detr(equal, 4)
    two_losses, two_logs, _ = results[0]["equal"]
    # DETR's L1 and GIoU are normalized by the boxes of all processes; CE's weights sum alike here: one process.
    assert two_losses == pytest.approx(one_losses, rel=1e-4)
    for one, two in zip(one_logs, two_logs, strict=True):
        for key in ("loss_ce", "loss_bbox", "loss_giou"):
            assert two[key] == pytest.approx(one[key], rel=1e-4), key
    # Unequal box counts: L1 and GIoU still match one process; CE is each process's weighted mean (the official
    # code's), so 2 processes log the plain mean of the per-process CEs, while one process weighs them by their
    # class-weight sums w_p = num_queries * B_p * eos_coefficient + boxes_p * (1 - eos_coefficient).
    _, one_logs, one_terms = run_detr(unequal, 4, max_steps=1)
    _, two_logs, _ = results[0]["unequal"]
    for key in ("loss_bbox", "loss_giou"):
        assert two_logs[0][key] == pytest.approx(one_logs[0][key], rel=1e-4), key
    terms = [results[rank]["unequal"][2] for rank in range(2)]
    eos = tiny_detr_config().eos_coefficient
    weights = [6 * batch * eos + boxes * (1 - eos) for _, boxes, batch in terms]
    assert weights[0] != weights[1]
    assert two_logs[0]["loss_ce"] == pytest.approx((terms[0][0] + terms[1][0]) / 2, rel=1e-4)
    weighted = (terms[0][0] * weights[0] + terms[1][0] * weights[1]) / sum(weights)
    assert one_terms[0] == pytest.approx(weighted, rel=1e-4)
    assert one_logs[0]["loss_ce"] == pytest.approx(weighted, rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["detr", "vilt"])
def test_streaming_benchmark_runs(tmp_path, model):
    """`benchmarks/streaming_throughput.py` (the docs' throughput numbers) on a tiny budget."""
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "streaming_throughput.py")
    output = tmp_path / "result.json"
    result = subprocess.run([sys.executable, script, "--model", model, "--num_processes", "2", "--num_images", "16",
                             "--image_size", "48", "--num_shards", "2", "--repeats", "1", "--output_json", str(output)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    medians = json.loads(output.read_text())["median"]
    assert set(medians) == {"map-style", "streaming"} and all(v > 0 for v in medians.values())


def test_streaming_arguments_mix_into_a_models_accelerate_arguments():
    """How the scripts take the `--streaming` options: `StreamingArguments` first, then `LoopArguments`."""
    from dataclasses import dataclass

    from transformers import HfArgumentParser

    from detrvilt.training.arguments import LoopArguments, StreamingArguments

    @dataclass
    class Arguments(StreamingArguments, LoopArguments):
        pass

    (args,) = HfArgumentParser(Arguments).parse_args_into_dataclasses(
        args=["--output_dir", "out", "--streaming", "--stream_source", "shards", "--shuffle_buffer_size", "0"])
    assert args.streaming and args.stream_source == "shards" and args.shuffle_buffer_size == 0
    assert args.loop_config().output_dir == "out"
    with pytest.raises(ValueError, match="--streaming needs --stream_source"):
        Arguments(output_dir="out", streaming=True)
    with pytest.raises(ValueError, match="--max_steps must be a positive integer"):  # LoopArguments' check still runs
        Arguments(output_dir="out", max_steps=0)


def test_stream_batches_count_every_epochs_examples(fresh_accelerate_state, tmp_path):
    """The loop's reader of a stream counts each epoch's examples (what it logs at the epoch's end)."""
    from detrvilt.training.loop import StreamBatches

    write_regression_shards(tmp_path / "shards", num_rows=11, num_shards=3)
    loader = stream_loader(StreamingExamples(load_stream(tmp_path / "shards")), batch_size=4)
    batches = StreamBatches(make_accelerator(cpu=True), loader)
    sizes = [len(next(batches)["_index"]) for _ in range(7)]  # 4 + 4 + 3, 4 + 4 + 3, 4
    assert sizes == [4, 4, 3, 4, 4, 3, 4] and batches.epoch_examples == {0: 11, 1: 11}
    assert batches.position()["epoch"] == 2 and batches.position()["examples"] == 4


# ------------------------------------------------------------------------------------------------ writing the sources


def write_shards_main():
    """`scripts/write_shards.py`'s `main`."""
    scripts = os.path.join(os.path.dirname(__file__), "..", "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    import write_shards

    return write_shards.main


def test_write_shards_writes_the_sources_of_both_models(tmp_path):
    main = write_shards_main()
    # DETR, a COCO folder: the images travel inside the shards, the class names in their schema.
    write_coco_detection(make_shapes_dataset(5, seed=0, image_size=SIZE, max_objects=3), tmp_path / "coco", "train")
    main(["--model", "detr", "--dataset", "coco", "--train_images_dir", str(tmp_path / "coco" / "train"),
          "--train_annotation_file", str(tmp_path / "coco" / "annotations" / "instances_train.json"),
          "--output_dir", str(tmp_path / "detr_coco"), "--num_shards", "2"])
    shutil.rmtree(tmp_path / "coco")
    stream = load_stream(tmp_path / "detr_coco")
    assert stream.num_shards == 2 and stream.features["objects"]["category"].feature.names == [
        "circle", "square", "triangle"]
    assert sorted(row["example_index"] for row in stream) == list(range(5))
    # DETR, the synthetic shapes, both splits, as WebDataset tars.
    written = main(["--model", "detr", "--synthetic_train_size", "6", "--synthetic_eval_size", "3",
                    "--synthetic_image_size", "32", "--output_dir", str(tmp_path / "detr_synthetic"),
                    "--shard_format", "webdataset", "--num_shards", "4", "--splits", "train,validation"])
    assert [len(written["train"]), len(written["validation"])] == [4, 3]
    assert len(list(load_stream(tmp_path / "detr_synthetic", split="validation"))) == 3
    rows = list(load_stream(tmp_path / "detr_synthetic"))
    assert [row["image_id"] for row in rows] == [row["image_id"] for row in make_shapes_dataset(6, seed=0,
                                                                                                image_size=32)]
    # ViLT pretraining from a Karpathy captions file: one caption per row, as the map-style pretraining reads them.
    (tmp_path / "images").mkdir()
    entries = []
    for index in range(3):
        Image.new("RGB", (16, 16), (80 * index, 0, 0)).save(tmp_path / "images" / f"{index}.png")
        entries.append({"filepath": "", "filename": f"{index}.png", "cocoid": index, "split": "train",
                        "sentences": [{"raw": f"picture {index} caption {k}"} for k in range(2)]})
    (tmp_path / "karpathy.json").write_text(json.dumps({"images": entries}))
    main(["--model", "vilt", "--task", "pretrain", "--dataset", "files", "--train_file",
          str(tmp_path / "karpathy.json"), "--train_images_dir", str(tmp_path / "images"),
          "--output_dir", str(tmp_path / "vilt_captions"), "--num_shards", "3"])
    rows = list(load_stream(tmp_path / "vilt_captions"))
    assert sorted(row["text"] for row in rows) == sorted(f"picture {i} caption {k}" for i in range(3) for k in range(2))
    # ViLT's synthetic VQA and NLVR2 sets (NLVR2: two image columns, in tars).
    main(["--model", "vilt", "--task", "vqa", "--synthetic_train_size", "4", "--synthetic_image_size", "32",
          "--output_dir", str(tmp_path / "vilt_vqa")])
    assert {"image", "question", "answers"} <= set(next(iter(load_stream(tmp_path / "vilt_vqa"))))
    main(["--model", "vilt", "--task", "nlvr2", "--synthetic_train_size", "4", "--synthetic_image_size", "32",
          "--output_dir", str(tmp_path / "vilt_nlvr2"), "--shard_format", "webdataset", "--num_shards", "2"])
    rows = list(load_stream(tmp_path / "vilt_nlvr2"))
    assert len(rows) == 4 and all(row["image_0"]["bytes"] and row["image_1"]["bytes"] for row in rows)
    with pytest.raises(ValueError, match="--shard_format must be one of"):
        main(["--output_dir", str(tmp_path / "x"), "--shard_format", "zip"])


def test_write_shards_help_explains_every_argument(capsys, monkeypatch):
    from detrvilt.training.arguments import WriteShardsArguments

    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_info:
        write_shards_main()(["--model", "vilt", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--task" in text and "--train_file" in text  # the model's data arguments
    for f in dataclasses.fields(WriteShardsArguments):
        assert f"--{f.name}" in text and " ".join(f.metadata["help"].split()[:4]) in text, f.name
