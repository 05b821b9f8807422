"""Preprocessing throughput of detrvilt's DETR image processor against transformers' `DetrImageProcessor`, side by side.

Real photographs from scikit-image (astronaut 512x512, coffee 400x600, chelsea 300x451, rocket 427x640,
immunohistochemistry 512x512, motorcycle_left 370x500 ... as PIL RGB images, cycled to fill each batch), resized to
shortest side 800 (longest <= 1333), normalized and padded into one batch; optionally with COCO annotations (five
boxes per image). Implementations: ours, transformers' torchvision backend (`DetrImageProcessor`, the default in
transformers 5) and, when the installed transformers has it, its PIL backend (`DetrImageProcessorPil`).

The script first checks that ours and transformers' torchvision backend give the same `pixel_values` (within 1e-4)
and `pixel_mask`. Calls then alternate between the implementations after a warmup, so drifts of clock or load hit
all alike; the table gives images per second from the median call and ours/transformers' time (below 1: ours is
faster). Run: ``python benchmarks/bench_detr_preprocessing.py --repeats 15 --markdown``.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.append(os.path.dirname(os.path.abspath(__file__)))  # side_by_side, when a test loads this file by path

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402

import detrvilt  # noqa: E402
from side_by_side import (  # noqa: E402
    check_processor_outputs,
    load_photos,
    median_ms,
    preprocessing_header,
    preprocessing_parser,
    throughput_table,
)


def annotation_for(image_id: int, image: Image.Image) -> dict:
    w, h = image.size
    rng = np.random.default_rng(image_id)
    boxes = [[float(rng.uniform(0, 0.7 * w)), float(rng.uniform(0, 0.7 * h)), float(rng.uniform(5, 0.3 * w)),
              float(rng.uniform(5, 0.3 * h))] for _ in range(5)]
    return {"image_id": image_id, "annotations": [
        {"bbox": b, "category_id": int(rng.integers(1, 91)), "area": b[2] * b[3], "iscrowd": 0} for b in boxes]}


def parse_args(argv=None) -> argparse.Namespace:
    parser = preprocessing_parser(__doc__, batch_sizes=[1, 8])
    parser.add_argument("--no-pil", action="store_true", help="skip transformers' PIL backend")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    photos = load_photos()
    ours = detrvilt.DetrImageProcessor()
    implementations = {"ours": lambda imgs, anns: ours(imgs, annotations=anns)}
    theirs_tv = transformers.DetrImageProcessor()
    if getattr(theirs_tv, "backend", None) != "torchvision":  # before transformers' backends refactor
        theirs_tv = transformers.DetrImageProcessorFast()
    implementations["transformers torchvision"] = (
        lambda imgs, anns: theirs_tv(imgs, annotations=anns, return_tensors="pt"))
    pil_backend = getattr(transformers, "DetrImageProcessorPil", None)
    if pil_backend is not None and not args.no_pil:
        theirs_pil = pil_backend()
        implementations["transformers PIL"] = (
            lambda imgs, anns: theirs_pil(imgs, annotations=anns, return_tensors="pt"))

    rows = []
    for batch in args.batch_sizes:
        images = [photos[i % len(photos)] for i in range(batch)]
        annotations = [annotation_for(i, image) for i, image in enumerate(images)]
        check_processor_outputs(implementations["ours"](images, annotations),
                                implementations["transformers torchvision"](images, annotations), exact=["pixel_mask"])
        for with_labels in (False, True):
            anns = annotations if with_labels else None
            steps = {name: functools.partial(run, images, anns) for name, run in implementations.items()}
            medians = median_ms(steps, args.warmup, args.repeats)
            rows.append(([str(batch), "yes" if with_labels else "no"], batch, medians))
    print(preprocessing_header(len(photos), "shortest side 800", args.repeats))
    # "annotations" is left-aligned in Markdown only, as this table always was.
    print(throughput_table(["batch", "annotations"], rows, "img", "transformers torchvision", args.markdown,
                           markdown_left=(1,)))


if __name__ == "__main__":
    main()
