"""Preprocessing throughput of detrvilt's ViLT processor against transformers' `ViltProcessor`, side by side.

Image-text pairs: real photographs from scikit-image (astronaut, coffee, chelsea, rocket, motorcycle_left, ... as PIL
RGB images, cycled to fill each batch) with captions, through the whole processor: the pixelbert resize (shorter side
384, longer <= 639, multiples of 32, bicubic), mean/std 0.5, padding with `pixel_mask`, and the BERT uncased
tokenizer (padded to 40 tokens). Both use the same tokenizer object (the offline bert-base-uncased vocabulary); the
image processors are ours (`detrvilt.ViltImageProcessor`) and transformers' `ViltImageProcessor` (its torchvision
backend, the default in transformers 5). A third column times ours in training mode (RandAugment N=2, M=9), which
transformers does not have.

The script first checks that both give the same `pixel_values` (within 1e-4), `pixel_mask` and `input_ids`. Calls
then alternate between the implementations after a warmup, so drifts of clock or load hit all alike; the table gives
pairs per second from the median call and ours/transformers' time (below 1: ours is faster).
Run: ``python benchmarks/bench_vilt_preprocessing.py --repeats 15 --markdown``.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.append(os.path.dirname(os.path.abspath(__file__)))  # side_by_side, when a test loads this file by path

import torch  # noqa: E402
import transformers  # noqa: E402

import detrvilt  # noqa: E402
from detrvilt.data import default_vilt_tokenizer  # noqa: E402
from side_by_side import (  # noqa: E402
    check_processor_outputs,
    load_photos,
    median_ms,
    preprocessing_header,
    preprocessing_parser,
    throughput_table,
)

CAPTIONS = ("an astronaut in a white space suit holding a helmet", "a cup of coffee on a saucer",
            "a tabby cat looking to the left", "a rocket on the launch pad before lift-off")


def parse_args(argv=None) -> argparse.Namespace:
    parser = preprocessing_parser(__doc__, batch_sizes=[1, 8, 32])
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    photos = load_photos()
    tokenizer = default_vilt_tokenizer()
    ours = detrvilt.ViltProcessor(detrvilt.ViltImageProcessor(), tokenizer)
    ours_train = detrvilt.ViltProcessor(detrvilt.ViltImageProcessor(do_augment=True), tokenizer)
    theirs = transformers.ViltProcessor(transformers.ViltImageProcessor(), tokenizer)
    text_kwargs = dict(padding="max_length", truncation=True, max_length=40)
    implementations = {
        "ours": lambda imgs, txt: ours(images=imgs, text=txt),
        "transformers": lambda imgs, txt: theirs(images=imgs, text=txt, return_tensors="pt", **text_kwargs),
        "ours + RandAugment": lambda imgs, txt: ours_train(images=imgs, text=txt),
    }
    rows = []
    for batch in args.batch_sizes:
        images = [photos[i % len(photos)] for i in range(batch)]
        texts = [CAPTIONS[i % len(CAPTIONS)] for i in range(batch)]
        check_processor_outputs(implementations["ours"](images, texts), implementations["transformers"](images, texts),
                                exact=["pixel_mask", "input_ids"])
        steps = {name: functools.partial(run, images, texts) for name, run in implementations.items()}
        rows.append(([str(batch)], batch, median_ms(steps, args.warmup, args.repeats)))
    print(preprocessing_header(len(photos), "shortest side 384, 40 tokens", args.repeats))
    print(throughput_table(["batch"], rows, "pairs", "transformers", args.markdown))


if __name__ == "__main__":
    main()
