"""Datasets named as transformers' example scripts name them (`--dataset_name`, `--dataset_config_name`,
`--train_split_name`, `--eval_split_name`): a Hub dataset id or a local folder, read with `datasets.load_dataset`.

This file holds what both models share: opening the dataset and picking its splits, with errors that name the
missing split and the ones there are. Each model's layout (DETR: the Hub's object-detection columns; ViLT: VQA and
captions columns) is mapped to what its collators take in `data/detr/sources.py` ([`hub_detection_splits`]) and
`data/vilt/hub.py` ([`hub_vilt_splits`]).
"""

from __future__ import annotations

import datasets


def load_named_splits(name: str, config_name: str | None = None, train_split: str = "train",
                      eval_split: str | None = "validation", **load_kwargs
                      ) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    """`(train, eval)` of `datasets.load_dataset(name, config_name)`.

    Args:
        name (`str`): a Hub dataset id (from the network, or the local Hub cache with `HF_DATASETS_OFFLINE=1`) or a
            local folder `datasets` can read (Parquet files under `data/train-*.parquet`, an imagefolder with
            `metadata.jsonl`, ...).
        config_name (`str`, *optional*): the dataset's configuration.
        train_split (`str`): the training split.
        eval_split (`str`, *optional*): the evaluation split; `""` or `None` for none.
        load_kwargs: passed to `datasets.load_dataset` (`revision=`, `cache_dir=`, ...).

    Raises:
        `ValueError` naming a split that is not in the dataset, and the splits that are.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"dataset_name must be a Hub dataset id or a local folder, got {name!r}")
    if not isinstance(train_split, str) or not train_split:
        raise ValueError(f"train_split_name must be a split name, got {train_split!r}")
    loaded = datasets.load_dataset(name, config_name, **load_kwargs)
    if not isinstance(loaded, datasets.DatasetDict):
        loaded = datasets.DatasetDict({train_split: loaded})
    if train_split not in loaded:
        raise ValueError(f"--train_split_name {train_split!r} is not a split of --dataset_name {name!r} "
                         f"(its splits: {list(loaded)})")
    if eval_split and eval_split not in loaded:
        raise ValueError(f"--eval_split_name {eval_split!r} is not a split of --dataset_name {name!r} (its splits: "
                         f"{list(loaded)}): name one of them, or pass --eval_split_name '' to train without "
                         "evaluation")
    return loaded[train_split], loaded[eval_split] if eval_split else None


def with_image_ids(dataset: datasets.Dataset, column: str = "image_id") -> datasets.Dataset:
    """`dataset` with an `image_id` column (the row's position) where it has none: the collators and metrics name
    and group examples by it."""
    if column in dataset.column_names:
        return dataset
    return dataset.add_column(column, list(range(len(dataset))))
