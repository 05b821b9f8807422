"""Streaming, sharded data for both models: shards written from any `datasets.Dataset`, read back as a stream split
across processes, and the torch datasets that give streamed examples the map-style path's per-example randomness.

- **Writing.** [`write_parquet_shards`] writes a dataset (the synthetic sets, `load_coco_detection`'s COCO folders,
  the ViLT loaders' outputs, anything in the Hub's layouts) as ``<split>-00000-of-0000N.parquet`` files with every
  image's bytes inside (no path outside the shards is needed), the layout the Hub's own Parquet exports use;
  [`write_webdataset_shards`] writes WebDataset tars (``<key>.<column>.<ext>`` images, ``<key>.json`` the rest). Both
  add a column `example_index` (the row's position in the written dataset): the stable key of a streamed example.
  `scripts/write_shards.py` writes the scripts' sources (DETR: synthetic, COCO folders, `save_to_disk` folders, Hub
  ids; ViLT: synthetic, Karpathy captions, VQAv2, NLVR2, `save_to_disk` folders, Hub ids) through [`write_shards`].
- **Reading.** [`load_stream`] opens a folder of such shards, any folder `datasets` can stream, or a Hub dataset id,
  as a `datasets.IterableDataset` (`datasets.load_dataset(..., streaming=True)`); [`distribute_stream`] splits it
  across processes with `datasets.distributed.split_dataset_by_node`: by whole shards when their number is a multiple
  of the number of processes, else every process reads all and keeps one example in N.
- **Examples.** [`StreamingExamples`] (ViLT's counterpart of `IndexedExamples`) gives every row its key as `_index`
  and the epoch as `_epoch`, which `BatchSeededCollator` seeds from; [`StreamingDetectionDataset`] (DETR's counterpart
  of `SeededDetectionDataset`) augments each image with `example_generator(seed, epoch, key)`. A streamed example
  with key `i` is therefore transformed exactly as the map-style example at index `i` of the same epoch.
- **Shuffling.** `datasets` reads the shards in a new order each epoch (a function of the epoch). With
  `shuffle_buffer_size=N`, the examples also come out of blocks of N consecutive rows, each block in an order drawn
  from (seed, epoch, the rows' keys): a block shuffle, not `datasets`' rolling buffer, because a rolling buffer cannot
  be resumed (`datasets` does not save its content: after a resume it refills it, and in a test here an example was
  seen twice and three never in the interrupted epoch). A block is re-read from its first row on resume (at most N
  raw rows, not transformed) and continues at the same example.
- **Loader.** [`stream_loader`] is a `torchdata` `StatefulDataLoader`: its `state_dict()` holds the stream position
  of the process and of each of its workers (shard, row, place in the block), which the training loop saves in
  checkpoints. A resume then continues exactly as the uninterrupted run, with or without shuffling.

Other rules of a stream: each DataLoader worker reads its own shards (a process's batch order depends on
`num_workers`; resume with the same number), and processes reach the end of their share at different steps (shards
differ in size): each process starts its next epoch on its own, so an epoch is "every example once" per process's
epoch, not per step. Nothing is dropped at the end of a share: with the `"examples"` split the shares differ by at
most one example, with the `"shards"` split by what their shards hold, and the last batch of a worker's epoch is
smaller (unless `drop_last=True`, which warns with the number it may drop). The training loop counts the examples of
every process's epochs (`StreamBatches.epoch_examples`, logged at each epoch's end).
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import tarfile
import warnings
from collections.abc import Callable, Mapping
from itertools import islice

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from datasets.distributed import split_dataset_by_node
from datasets.table import embed_table_storage

from .detr.detection import DetrDetectionTransform, example_generator

KEY_COLUMN = "example_index"
SPLIT_STRATEGIES = ("auto", "shards", "examples")
_WEBDATASET_JSON = "json"


# ----------------------------------------------------------------------------------------------------------------
# Writing


def _shard_name(split: str, index: int, total: int, extension: str) -> str:
    return f"{split}-{index:05d}-of-{total:05d}.{extension}"


def _arrow_batches(dataset: datasets.Dataset, key_column: str, batch_size: int):
    """`(first row, pyarrow.Table)` batches of `dataset` with external files embedded and the key column added."""
    add_key = key_column not in dataset.column_names
    table_view = dataset.with_format("arrow")
    start = 0
    for table in table_view.iter(batch_size=batch_size):
        table = embed_table_storage(table)
        if add_key:
            table = table.append_column(key_column, pa.array(range(start, start + table.num_rows), pa.int64()))
        yield start, table
        start += table.num_rows


def _written_features(dataset: datasets.Dataset, key_column: str) -> datasets.Features:
    features = dataset.features.copy()
    if key_column not in features:
        features[key_column] = datasets.Value("int64")
    return features


def _check_writable(dataset, output_dir, num_shards, key_column) -> None:
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(f"dataset must be a datasets.Dataset, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError("dataset is empty: there is nothing to write")
    if num_shards is not None and (not isinstance(num_shards, int) or not 1 <= num_shards <= len(dataset)):
        raise ValueError(f"num_shards must be an integer in [1, {len(dataset)}] (the number of rows), got "
                         f"{num_shards!r}")
    if key_column in dataset.column_names and dataset.features[key_column] not in (
            datasets.Value("int64"), datasets.Value("int32")):
        raise ValueError(f"the dataset's column {key_column!r} must hold integer keys, got "
                         f"{dataset.features[key_column]}")
    os.makedirs(output_dir, exist_ok=True)


def write_parquet_shards(
    dataset: datasets.Dataset,
    output_dir: str | os.PathLike,
    split: str = "train",
    num_shards: int | None = None,
    max_shard_bytes: int = 512 * 2**20,
    key_column: str = KEY_COLUMN,
    batch_size: int = 64,
) -> list[str]:
    """Write `dataset` as self-contained Parquet shards ``output_dir/<split>-0000i-of-0000N.parquet``.

    Every image (any `datasets.Image` column: `image`, NLVR2's `image_0`/`image_1`) is stored with its bytes, so the
    shards need none of the files the dataset pointed at (a COCO folder can be removed). The features (class names
    too) travel in the Parquet schema, so `datasets` reads them back as they were.

    Args:
        dataset (`datasets.Dataset`): any dataset; its transform, if one is set, is ignored (raw rows are written).
        output_dir: the folder (created if missing). Existing shards of `split` are replaced.
        split (`str`): the name in the file names (`datasets` finds the split by it).
        num_shards (`int`, *optional*): cut the rows into this many shards of consecutive rows (equal counts up to
            one). Choose a multiple of (processes x DataLoader workers) so every reader gets whole shards. Without
            it, a shard is closed once it holds `max_shard_bytes`.
        key_column (`str`): the column holding each row's key, added as the row's position when absent.
        batch_size (`int`): rows per write (a Parquet row group).

    Returns:
        The written file paths, in order.
    """
    _check_writable(dataset, output_dir, num_shards, key_column)
    if max_shard_bytes < 1:
        raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes!r}")
    for stale in glob.glob(os.path.join(output_dir, f"{split}-*-of-*.parquet")):
        os.remove(stale)
    schema = _written_features(dataset, key_column).arrow_schema
    bounds = None
    if num_shards is not None:
        bounds = [len(dataset) * i // num_shards for i in range(num_shards + 1)]
    temporary, writer, written, shard = [], None, 0, 0

    def open_shard():
        path = os.path.join(output_dir, f".{split}-{len(temporary):05d}.parquet.tmp")
        temporary.append(path)
        return pq.ParquetWriter(path, schema)

    for start, table in _arrow_batches(dataset, key_column, batch_size):
        table = table.cast(schema)
        offset = 0
        while offset < table.num_rows:
            if writer is None:
                writer, written = open_shard(), 0
            # rows of this batch that belong to the current shard
            end = table.num_rows if bounds is None else min(table.num_rows, bounds[shard + 1] - start)
            piece = table.slice(offset, end - offset)
            writer.write_table(piece)
            written += piece.nbytes
            offset = end
            full = (start + offset == bounds[shard + 1]) if bounds is not None else written >= max_shard_bytes
            if full:
                writer.close()
                writer, shard = None, shard + 1
    if writer is not None:
        writer.close()
    paths = []
    for index, path in enumerate(temporary):
        final = os.path.join(output_dir, _shard_name(split, index, len(temporary), "parquet"))
        os.replace(path, final)
        paths.append(final)
    return paths


def _image_extension(value: Mapping) -> str:
    path = value.get("path")
    if path and os.path.splitext(path)[1]:
        return os.path.splitext(path)[1].lstrip(".").lower()
    from PIL import Image

    with Image.open(io.BytesIO(value["bytes"])) as image:
        return (image.format or "png").lower()


def features_file(output_dir: str | os.PathLike, split: str = "train") -> str:
    """Where [`write_webdataset_shards`] keeps the dataset's features next to the tars (``<split>.features.json``)."""
    return os.path.join(output_dir, f"{split}.features.json")


def write_webdataset_shards(
    dataset: datasets.Dataset,
    output_dir: str | os.PathLike,
    split: str = "train",
    num_shards: int = 1,
    key_column: str = KEY_COLUMN,
) -> list[str]:
    """Write `dataset` as WebDataset tar shards ``output_dir/<split>-0000i-of-0000N.tar``.

    Each row becomes ``<key>.<column>.<ext>`` for every image column (the image's own bytes) and ``<key>.json`` for
    all other columns (`key_column` included); `datasets` streams such tars (`load_stream` reads them back into the
    dataset's columns). One extension per image column, the first row's: `datasets` makes a column of every
    extension it meets, and the images are decoded from their bytes (PIL reads the format from them), never from the
    name. JSON loses the features (class names, float widths), so they are written next to the tars
    ([`features_file`]), from which `load_stream` restores them.

    Returns:
        The written tar paths, in order.
    """
    _check_writable(dataset, output_dir, num_shards, key_column)
    for stale in glob.glob(os.path.join(output_dir, f"{split}-*-of-*.tar")):
        os.remove(stale)
    with open(features_file(output_dir, split), "w") as handle:
        json.dump(_written_features(dataset, key_column).to_dict(), handle)
    image_columns = [name for name, feature in dataset.features.items() if isinstance(feature, datasets.Image)]
    extensions = {}
    bounds = [len(dataset) * i // num_shards for i in range(num_shards + 1)]
    paths = [os.path.join(output_dir, _shard_name(split, i, num_shards, "tar")) for i in range(num_shards)]
    archives = [tarfile.open(path, "w") for path in paths]
    try:
        shard = 0
        for start, table in _arrow_batches(dataset, key_column, batch_size=64):
            for offset, row in enumerate(table.to_pylist()):
                position = start + offset
                while position >= bounds[shard + 1]:
                    shard += 1
                key = f"{int(row[key_column]):09d}"
                members = {}
                for column in image_columns:
                    value = row.pop(column)
                    if value is None or value.get("bytes") is None:
                        raise ValueError(f"row {position}: the image column {column!r} is empty")
                    extension = extensions.setdefault(column, _image_extension(value))
                    members[f"{key}.{column}.{extension}"] = value["bytes"]
                members[f"{key}.{_WEBDATASET_JSON}"] = json.dumps(row).encode()
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    archives[shard].addfile(info, io.BytesIO(data))
    finally:
        for archive in archives:
            archive.close()
    return paths


SHARD_FORMATS = ("parquet", "webdataset")


def write_shards(dataset: datasets.Dataset, output_dir: str | os.PathLike, shard_format: str = "parquet",
                 split: str = "train", num_shards: int | None = None, max_shard_bytes: int = 512 * 2**20
                 ) -> list[str]:
    """[`write_parquet_shards`] or [`write_webdataset_shards`] by name (`shard_format`, one of `SHARD_FORMATS`);
    WebDataset needs `num_shards` (default 1 there). What `scripts/write_shards.py` calls for every source."""
    if shard_format not in SHARD_FORMATS:
        raise ValueError(f"shard_format must be one of {SHARD_FORMATS}, got {shard_format!r}")
    if shard_format == "webdataset":
        return write_webdataset_shards(dataset, output_dir, split=split, num_shards=num_shards or 1)
    return write_parquet_shards(dataset, output_dir, split=split, num_shards=num_shards,
                                max_shard_bytes=max_shard_bytes)


# ----------------------------------------------------------------------------------------------------------------
# Reading


def _local_shards(folder: str, split: str) -> tuple[str, list[str]] | None:
    for builder, extension in (("parquet", "parquet"), ("webdataset", "tar")):
        files = sorted(glob.glob(os.path.join(folder, f"{split}-*.{extension}")))
        files = files or sorted(glob.glob(os.path.join(folder, "data", f"{split}-*.{extension}")))
        if files:
            return builder, files
    return None


def stable_key(text: str) -> int:
    """A 63-bit integer key from a string, the same in every process and Python run (unlike `hash` of a string)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def _webdataset_rows(dataset: datasets.IterableDataset, key_column: str,
                     written: datasets.Features | None = None) -> datasets.IterableDataset:
    """WebDataset rows (`<column>.<ext>` images, a `json` dict, `__key__`, `__url__`) as the dataset's columns, cast
    to `written` (the features [`write_webdataset_shards`] saved) when given."""
    features = dataset.features
    image_fields = {name: name.split(".", 1)[0] for name, feature in (features or {}).items()
                    if isinstance(feature, datasets.Image)}
    if features is not None:
        for name in image_fields:
            dataset = dataset.cast_column(name, datasets.Image(decode=False))

    def to_columns(row):
        out = {}
        for name, column in image_fields.items():  # tars from elsewhere may mix extensions: one column each
            if out.get(column) is None:
                out[column] = row[name]
        extra = row.get(_WEBDATASET_JSON)
        if isinstance(extra, Mapping):
            out.update(extra)
        if out.get(key_column) is None:
            out[key_column] = stable_key(f"{os.path.basename(str(row['__url__']))}/{row['__key__']}")
        return out

    new_features = None
    if features is not None:
        new_features = datasets.Features({column: datasets.Image(decode=False) for column in image_fields.values()})
        extra = features.get(_WEBDATASET_JSON)
        if isinstance(extra, Mapping):
            new_features.update(extra)
        new_features.setdefault(key_column, datasets.Value("int64"))
    rows = dataset.map(to_columns, remove_columns=list(features) if features else None, features=new_features)
    if written is not None:
        written = written.copy()
        for name, feature in written.items():
            if isinstance(feature, datasets.Image):
                written[name] = datasets.Image(decode=False)
        rows = rows.cast(written)
    return rows


def load_stream(source: str | os.PathLike, split: str = "train", key_column: str = KEY_COLUMN,
                **load_kwargs) -> datasets.IterableDataset:
    """A dataset as a `datasets.IterableDataset` read shard by shard (`datasets.load_dataset(..., streaming=True)`).

    Args:
        source: a folder holding ``<split>-*.parquet`` or ``<split>-*.tar`` shards (also under ``data/``), as
            [`write_parquet_shards`] / [`write_webdataset_shards`] write them; any other folder or Hub dataset id
            that `datasets` can stream (a Hub id needs the network, or the Hub cache with `HF_HUB_OFFLINE=1`).
        split (`str`): the split to read.
        key_column (`str`): WebDataset rows without this column get a stable key from their tar file name and
            `__key__` (see [`stable_key`]).
        load_kwargs: passed to `datasets.load_dataset` (`revision=`, `data_dir=`, ...).

    WebDataset folders written by [`write_webdataset_shards`] get their features back (class names, dtypes) from the
    file it writes next to the tars.

    Image columns are left undecoded (`{"bytes", "path"}`): the transforms decode them and name the example in their
    errors, as on the map-style path.
    """
    source = os.fspath(source)
    local = _local_shards(source, split) if os.path.isdir(source) else None
    if local is not None:
        builder, files = local
        dataset = datasets.load_dataset(builder, data_files={split: files}, split=split, streaming=True,
                                        **load_kwargs)
    else:
        if os.path.exists(source) and not os.path.isdir(source):
            raise ValueError(f"source must be a folder of shards or a Hub dataset id, got the file {source!r}")
        dataset = datasets.load_dataset(source, split=split, streaming=True, **load_kwargs)
        builder = getattr(getattr(dataset, "info", None), "builder_name", None)
    if builder == "webdataset":
        written = None
        if local is not None and os.path.isfile(features_file(source, split)):
            with open(features_file(source, split)) as handle:
                written = datasets.Features.from_dict(json.load(handle))
        return _webdataset_rows(dataset, key_column, written)
    for name, feature in (dataset.features or {}).items():
        if isinstance(feature, datasets.Image) and feature.decode:
            dataset = dataset.cast_column(name, datasets.Image(decode=False))
    return dataset


def distribute_stream(dataset: datasets.IterableDataset, rank: int, world_size: int,
                      strategy: str = "auto") -> datasets.IterableDataset:
    """This process's share of a stream.

    Args:
        dataset (`datasets.IterableDataset`): e.g. from [`load_stream`].
        rank, world_size (`int`): this process and the number of processes (`accelerator.process_index`,
            `accelerator.num_processes`). The stream must not be split again (do not pass its DataLoader through
            `accelerator.prepare`, which would keep one batch in `world_size` of what is left).
        strategy (`str`): `split_dataset_by_node`'s: `"shards"` (whole shards per process: needs as many shards as
            processes, and reads each byte once), `"examples"` (every process reads everything and keeps one
            example in `world_size`: process `r` gets examples `r, r + N, ...` of the stream), or `"auto"` (shards
            when their number is a multiple of `world_size`).
    """
    if not isinstance(dataset, datasets.IterableDataset):
        raise TypeError(f"dataset must be a datasets.IterableDataset (see load_stream), got {type(dataset).__name__}")
    if strategy not in SPLIT_STRATEGIES:
        raise ValueError(f"strategy must be one of {SPLIT_STRATEGIES}, got {strategy!r}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank!r}")
    if strategy == "shards" and dataset.num_shards < world_size:
        raise ValueError(f"strategy='shards' needs at least world_size={world_size} shards, the stream has "
                         f"{dataset.num_shards}: write more shards or use strategy='examples'")
    if world_size > 1:
        dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size, strategy=strategy)
    return dataset


# ----------------------------------------------------------------------------------------------------------------
# Examples


def example_key(row: Mapping, key_column: str = KEY_COLUMN) -> int:
    """The integer key of a streamed row (its `key_column`)."""
    value = row.get(key_column)
    if value is None:
        raise KeyError(f"the streamed row has no key column {key_column!r} (columns: {sorted(row)}): write the "
                       "shards with write_parquet_shards / write_webdataset_shards, or name a column of unique "
                       "integers (e.g. key_column='image_id')")
    return int(value)


class StreamingExamples(torch.utils.data.IterableDataset):
    """The rows of a `datasets.IterableDataset` with their key as `_index` and the epoch as `_epoch`: the streaming
    counterpart of `IndexedExamples`, for ViLT's `BatchSeededCollator` (randomness from (seed, epoch, keys)).

    `set_epoch(epoch)` before each epoch (the training loop does it); `state_dict` / `load_state_dict` are the
    position in the stream (what a `StatefulDataLoader` saves, per worker): the `datasets` stream's position at the
    start of the current shuffle block and the examples of the block already given out.

    Args:
        dataset (`datasets.IterableDataset`): this process's share ([`distribute_stream`]).
        key_column (`str`): the column of unique integer keys ([`write_parquet_shards`] adds `example_index`, the
            row's position in the written dataset, so a key equals the map-style index of the same row).
        shuffle_buffer_size (`int`): 0 gives the rows in stream order; N > 0 gives each block of N consecutive rows
            in an order drawn from (`seed`, epoch, keys) (see the module's docstring for why a block shuffle).
        seed (`int`): the run's seed.
    """

    def __init__(self, dataset: datasets.IterableDataset, key_column: str = KEY_COLUMN, shuffle_buffer_size: int = 0,
                 seed: int = 0):
        if not isinstance(dataset, datasets.IterableDataset):
            raise TypeError(f"dataset must be a datasets.IterableDataset, got {type(dataset).__name__}")
        if not isinstance(shuffle_buffer_size, int) or shuffle_buffer_size < 0:
            raise ValueError(f"shuffle_buffer_size must be a non-negative integer, got {shuffle_buffer_size!r}")
        self.dataset = dataset
        self.key_column = key_column
        self.shuffle_buffer_size = shuffle_buffer_size
        self.seed = int(seed)
        self._resume = None  # a loaded position, used by the next iteration of its epoch
        self._position = {"epoch": 0, "source": None, "given": 0}

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    def set_epoch(self, epoch: int) -> None:
        """The epoch's shard order, block orders and per-example draws."""
        self.dataset.set_epoch(int(epoch))

    def state_dict(self) -> dict:
        """`{"epoch", "source": the datasets stream's state where the current block starts (None: the epoch's
        start), "given": examples of the block given out}`."""
        return dict(self._position)

    def load_state_dict(self, state_dict: dict) -> None:
        self._resume = dict(state_dict)

    def encode(self, row: dict, key: int, epoch: int):
        """One example from a row (override for a model's transform)."""
        return {**row, "_index": key, "_epoch": epoch}

    def _block_order(self, key: int, epoch: int) -> int:
        return stable_key(f"{self.seed}/{epoch}/{key}")

    def __iter__(self):
        epoch = self.epoch
        resume, self._resume = self._resume, None
        if resume is not None and resume["epoch"] != epoch:
            resume = None
        source, skip = (resume["source"], resume["given"]) if resume is not None else (None, 0)
        # `datasets` applies a loaded state when the stream's epoch matches it; None clears an earlier one.
        self.dataset.load_state_dict(source)
        rows = iter(self.dataset)
        block = self.shuffle_buffer_size or 1
        while True:
            self._position = {"epoch": epoch, "source": source, "given": skip}
            rows_of_block = list(islice(rows, block))
            if not rows_of_block:
                return
            keyed = [(example_key(row, self.key_column), row) for row in rows_of_block]
            if self.shuffle_buffer_size:
                keyed.sort(key=lambda pair: self._block_order(pair[0], epoch))
            for given, (key, row) in enumerate(keyed[skip:], start=skip + 1):
                self._position["given"] = given
                yield self.encode(row, key, epoch)
            # the stream's position after this block: where the next one starts
            source, skip = self.dataset.state_dict(), 0


class StreamingDetectionDataset(StreamingExamples):
    """DETR's streamed training examples: the streaming counterpart of `SeededDetectionDataset`.

    Each row is decoded, augmented with `example_generator(seed, epoch, key)` and normalized by a
    `DetrDetectionTransform`, so an example's augmentation depends on (seed, epoch, key) alone: the same in any
    process or worker, after a resume, and equal to the map-style `SeededDetectionDataset`'s at index `key`.

    Args:
        dataset (`datasets.IterableDataset`): this process's share of a detection stream (Hub layout: `image`,
            `image_id`, `objects`).
        transform ([`DetrDetectionTransform`]): its augmentation must accept `generator=`.
        seed (`int`): the run's seed.
        key_column (`str`): the column of unique integer keys (`example_index`; `image_id` works where unique).
        shuffle_buffer_size (`int`): see [`StreamingExamples`].

    Returns (from iterating): `{"pixel_values": (3, h, w) FloatTensor, "labels": dict}`, for `DetrDataCollator`.
    """

    def __init__(self, dataset: datasets.IterableDataset, transform: DetrDetectionTransform, seed: int = 0,
                 key_column: str = KEY_COLUMN, shuffle_buffer_size: int = 0):
        if not isinstance(transform, DetrDetectionTransform):
            raise TypeError(f"transform must be a DetrDetectionTransform, got {type(transform).__name__}")
        super().__init__(dataset, key_column, shuffle_buffer_size, seed)
        features = dataset.features
        if features is not None:
            for column in (transform.image_column, transform.objects_column):
                if column not in features:
                    raise KeyError(f"the stream has no column {column!r} (columns: {sorted(features)})")
        self.transform = transform

    def encode(self, row: dict, key: int, epoch: int) -> dict:
        transform = self.transform
        image_id = row.get(transform.image_id_column)
        description = f"image_id {image_id}" if image_id is not None else f"example {key}"
        generator = example_generator(self.seed, epoch, key) if transform.augmentation is not None else None
        pixel_values, labels = transform.encode_example(row[transform.image_column], row[transform.objects_column],
                                                        image_id, description, generator)
        return {"pixel_values": pixel_values, "labels": labels}


# ----------------------------------------------------------------------------------------------------------------
# Loader


def stream_loader(dataset: torch.utils.data.IterableDataset, batch_size: int, collate_fn: Callable | None = None,
                  num_workers: int = 0, drop_last: bool = False, seed: int = 0, **kwargs):
    """A `torchdata.stateful_dataloader.StatefulDataLoader` over a stream: `state_dict()` is the position of the
    process and of each worker, what [`train_loop`] saves in a checkpoint and restores on resume.

    Args:
        dataset: a [`StreamingExamples`] (or any iterable dataset with `state_dict` / `load_state_dict`).
        batch_size (`int`): examples per batch and process.
        collate_fn (`Callable`): the map-style path's collator (`DetrDataCollator`, a `BatchSeededCollator`, ...).
        num_workers (`int`): worker processes; each reads its own shards (have at least this many shards per
            process), so the batch order depends on it: resume with the same number.
        drop_last (`bool`): drop each worker's last incomplete batch of an epoch (those examples are then not seen
            in the epoch, and a warning says how many at most); the default keeps every example: the last batch of a
            worker's epoch is smaller instead.
        seed (`int`): seeds the loader's own generator (worker seeds), so that it never draws from torch's global
            one (which would shift the dropout stream of a resumed run).
        kwargs: other `StatefulDataLoader` options (`pin_memory`, `prefetch_factor`, ...).
    """
    from torchdata.stateful_dataloader import StatefulDataLoader

    if not isinstance(dataset, torch.utils.data.IterableDataset):
        raise TypeError(f"dataset must be an iterable dataset (a stream), got {type(dataset).__name__}")
    if drop_last and batch_size > 1:
        readers = max(1, num_workers)
        warnings.warn(f"drop_last=True: each of the {readers} reader(s) of this process (DataLoader workers, or the "
                      f"process itself) drops its last incomplete batch of every epoch, up to {batch_size - 1} "
                      f"examples each: up to {readers * (batch_size - 1)} examples per process and epoch are not "
                      "seen in that epoch", stacklevel=2)
    with warnings.catch_warnings():
        # torchdata 0.11 calls torch.set_vital, which torch 2.14 marks deprecated; nothing we can change here.
        warnings.filterwarnings("ignore", message=".*set_vital.*")
        return StatefulDataLoader(dataset, batch_size=batch_size, collate_fn=collate_fn, num_workers=num_workers,
                                  drop_last=drop_last, generator=torch.Generator().manual_seed(seed), **kwargs)

