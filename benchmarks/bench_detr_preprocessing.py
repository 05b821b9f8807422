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
import datetime
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import skimage  # noqa: E402
import skimage.data  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402

import detrvilt  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "motorcycle_left", "hubble_deep_field",
          "cat")


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


def annotation_for(image_id: int, image: Image.Image) -> dict:
    w, h = image.size
    rng = np.random.default_rng(image_id)
    boxes = [[float(rng.uniform(0, 0.7 * w)), float(rng.uniform(0, 0.7 * h)), float(rng.uniform(5, 0.3 * w)),
              float(rng.uniform(5, 0.3 * h))] for _ in range(5)]
    return {"image_id": image_id, "annotations": [
        {"bbox": b, "category_id": int(rng.integers(1, 91)), "area": b[2] * b[3], "iscrowd": 0} for b in boxes]}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per implementation and case")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: leave as is)")
    parser.add_argument("--no-pil", action="store_true", help="skip transformers' PIL backend")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    return parser.parse_args(argv)


def check_parity(ours, theirs, images, annotations) -> None:
    a = ours(images, annotations=annotations)
    b = theirs(images, annotations=annotations, return_tensors="pt")
    difference = (a["pixel_values"] - b["pixel_values"]).abs().max().item()
    if a["pixel_values"].shape != b["pixel_values"].shape or difference > 1e-4:
        raise SystemExit(f"outputs differ: shapes {tuple(a['pixel_values'].shape)} / "
                         f"{tuple(b['pixel_values'].shape)}, max |difference| {difference}")
    if not torch.equal(a["pixel_mask"], b["pixel_mask"]):
        raise SystemExit("pixel masks differ")


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
        check_parity(ours, theirs_tv, images, annotations)
        for with_labels in (False, True):
            anns = annotations if with_labels else None
            times = {name: [] for name in implementations}
            for step in range(args.warmup + args.repeats):
                for name, run in implementations.items():
                    start = time.perf_counter()
                    run(images, anns)
                    if step >= args.warmup:
                        times[name].append(time.perf_counter() - start)
            medians = {name: statistics.median(values) for name, values in times.items()}
            rows.append((batch, with_labels, medians))

    names = list(implementations)
    header = ["batch", "annotations"] + [f"{n} img/s" for n in names] + ["ours / transformers torchvision (time)"]
    lines = [[str(batch), "yes" if labels else "no"] + [f"{batch / medians[n]:.1f}" for n in names]
             + [f"{medians['ours'] / medians['transformers torchvision']:.2f}"] for batch, labels, medians in rows]
    print(f"# {datetime.date.today()} {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, torchvision {torchvision.__version__}, transformers {transformers.__version__}, "
          f"scikit-image {skimage.__version__}; {len(photos)} photos cycled, shortest side 800, "
          f"{args.repeats} repeats (median)")
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("| " + " | ".join("---:" if i != 1 else "---" for i in range(len(header))) + " |")
        for line in lines:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
        print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
        for line in lines:
            print("  ".join(v.rjust(w) for v, w in zip(line, widths)))


if __name__ == "__main__":
    main()
