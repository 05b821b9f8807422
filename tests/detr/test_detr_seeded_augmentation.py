"""DETR's training augmentation as a function of (seed, epoch, example index): what exact resume needs."""

import pytest
import torch
from torch.utils.data import DataLoader

from detrvilt import DetrImageProcessor
from detrvilt.data import (
    DetrDataCollator,
    DetrDetectionTransform,
    DetrTrainAugmentation,
    SeededDetectionDataset,
    example_generator,
    make_shapes_dataset,
)


def seeded_set(seed=0, size=6):
    processor = DetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 107})
    transform = DetrDetectionTransform(processor, DetrTrainAugmentation.scaled(64, 107))
    return SeededDetectionDataset(make_shapes_dataset(size, seed=0, image_size=64, max_objects=3), transform, seed)


def same_example(a, b):
    return a["pixel_values"].shape == b["pixel_values"].shape and torch.equal(a["pixel_values"], b["pixel_values"]) \
        and torch.equal(a["labels"]["boxes"], b["labels"]["boxes"])


def test_an_example_is_augmented_the_same_whatever_was_drawn_before():
    dataset = seeded_set()
    forward = [dataset[i] for i in range(len(dataset))]
    torch.manual_seed(123)  # the global generator plays no part
    backward = [dataset[i] for i in reversed(range(len(dataset)))][::-1]
    assert all(same_example(a, b) for a, b in zip(forward, backward, strict=True))


def test_epoch_and_seed_change_the_draws():
    dataset = seeded_set()
    first = [dataset[i] for i in range(len(dataset))]
    dataset.set_epoch(1)
    second = [dataset[i] for i in range(len(dataset))]
    other_seed = seeded_set(seed=1)
    third = [other_seed[i] for i in range(len(other_seed))]
    assert not all(same_example(a, b) for a, b in zip(first, second, strict=True))
    assert not all(same_example(a, b) for a, b in zip(first, third, strict=True))


def test_dataloader_workers_give_the_same_batches_as_the_main_process():
    dataset = seeded_set(size=8)
    dataset.set_epoch(3)

    def batches(workers):
        loader = DataLoader(dataset, batch_size=4, collate_fn=DetrDataCollator(), num_workers=workers)
        return [batch["pixel_values"] for batch in loader]

    for a, b in zip(batches(0), batches(2), strict=True):
        assert torch.equal(a, b)


def test_example_generator_is_a_function_of_its_key():
    draw = [float(torch.rand((), generator=example_generator(0, 1, 2))) for _ in range(2)]
    assert draw[0] == draw[1]
    assert float(torch.rand((), generator=example_generator(0, 1, 3))) != draw[0]


def test_seeded_dataset_checks_its_arguments():
    dataset = make_shapes_dataset(2, seed=0, image_size=64)
    with pytest.raises(TypeError, match="transform must be a DetrDetectionTransform"):
        SeededDetectionDataset(dataset, lambda rows: rows)
    with pytest.raises(KeyError, match="no column 'boxes'"):
        processor = DetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 107})
        SeededDetectionDataset(dataset, DetrDetectionTransform(processor, objects_column="boxes"))
