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
import datetime
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import skimage  # noqa: E402
import skimage.data  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402

import detrvilt  # noqa: E402
from detrvilt.data import default_vilt_tokenizer  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "motorcycle_left", "hubble_deep_field",
          "cat")
CAPTIONS = ("an astronaut in a white space suit holding a helmet", "a cup of coffee on a saucer",
            "a tabby cat looking to the left", "a rocket on the launch pad before lift-off")


def load_photos() -> list[Image.Image]:
    photos = []
    for name in PHOTOS:
        try:
            array = getattr(skimage.data, name)()
        except (AttributeError, OSError, ValueError):  # some need a download or are missing in this version
            continue
        if array.ndim == 3 and array.shape[-1] == 3:
            photos.append(Image.fromarray(array))
    return photos


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per implementation and case")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: leave as is)")
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
        a, b = implementations["ours"](images, texts), implementations["transformers"](images, texts)
        difference = (a["pixel_values"] - b["pixel_values"]).abs().max().item()
        if a["pixel_values"].shape != b["pixel_values"].shape or difference > 1e-4:
            raise SystemExit(f"pixel_values differ: {tuple(a['pixel_values'].shape)} / "
                             f"{tuple(b['pixel_values'].shape)}, max |difference| {difference}")
        if not (torch.equal(a["pixel_mask"], b["pixel_mask"]) and torch.equal(a["input_ids"], b["input_ids"])):
            raise SystemExit("pixel_mask or input_ids differ")
        times = {name: [] for name in implementations}
        for step in range(args.warmup + args.repeats):
            for name, run in implementations.items():
                start = time.perf_counter()
                run(images, texts)
                if step >= args.warmup:
                    times[name].append(time.perf_counter() - start)
        rows.append((batch, {name: statistics.median(values) for name, values in times.items()}))

    names = list(implementations)
    header = ["batch"] + [f"{n} pairs/s" for n in names] + ["ours / transformers (time)"]
    lines = [[str(batch)] + [f"{batch / medians[n]:.1f}" for n in names]
             + [f"{medians['ours'] / medians['transformers']:.2f}"] for batch, medians in rows]
    print(f"# {datetime.date.today()} {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, torchvision {torchvision.__version__}, transformers {transformers.__version__}, "
          f"scikit-image {skimage.__version__}; {len(photos)} photos cycled, shortest side 384, 40 tokens, "
          f"{args.repeats} repeats (median)")
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("| " + " | ".join("---:" for _ in header) + " |")
        for line in lines:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
        print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
        for line in lines:
            print("  ".join(v.rjust(w) for v, w in zip(line, widths)))


if __name__ == "__main__":
    main()
