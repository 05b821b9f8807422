"""What the side-by-side benchmarks share: their options, inputs, timed steps, alternating comparison and tables.

Each benchmark builds "ours" and "transformers" on the same weights (or the same processor settings) and times one
zero-argument step per implementation; calls alternate (ours, theirs, ours, ...) after a warmup, so drifts of clock
or load hit all alike, and the tables report medians and ours/transformers (below 1: ours is faster).
`bench_detr.py` / `bench_vilt.py` (models), `bench_detr_preprocessing.py` / `bench_vilt_preprocessing.py`
(processors) and `run_all.py` import from here; what differs between the models stays in their own files.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import timm
import torch
import torchvision
import transformers

Step = Callable[[], None]
Autocast = Callable[[], AbstractContextManager]
# "thread": CPU time of the calling thread, for single-threaded CPU runs on a shared machine: time spent waiting
# for the other jobs' processes is not billed (it is with "wall", which a GPU run must use).
CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}
# scikit-image sample photographs the preprocessing benchmarks cycle through (those missing in a version are skipped).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "motorcycle_left", "hubble_deep_field",
          "cat")
# Image i of a padded batch keeps these fractions (height, width) of the padded size, cycling full, 3/4 width,
# 3/4 height, both: any batch > 1 exercises the masking.
SHRINK = ((1.0, 1.0), (1.0, 0.75), (0.75, 1.0), (0.75, 0.75))


@dataclass
class Row:
    case: str
    batch: int
    ours_ms: float
    theirs_ms: float
    ours_mib: float | None = None
    theirs_mib: float | None = None


# --- command line ----------------------------------------------------------------------------------------------


def model_parser(description: str) -> argparse.ArgumentParser:
    """The parser of a model benchmark with its first option, ``--device``; the model's own options come next."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    return parser


def parse_model_args(parser: argparse.ArgumentParser, argv: list[str] | None, cases: tuple[str, ...],
                     cpu_repeats: int) -> argparse.Namespace:
    """Adds the options every model benchmark has (after the model's own), parses `argv` and fills the
    device-dependent defaults: 20 repeats and 3 warmup calls on cuda, `cpu_repeats` and 1 on cpu."""
    parser.add_argument("--repeats", type=int,
                        help=f"timed calls per implementation (default 20 on cuda, {cpu_repeats} on cpu)")
    parser.add_argument("--warmup", type=int, help="untimed calls per implementation (default 3 on cuda, 1 on cpu)")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16: torch.autocast for both")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: leave as is)")
    parser.add_argument("--only", nargs="+", choices=cases, default=list(cases), help="run only these cases")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args(argv)
    gpu = args.device == "cuda"
    args.repeats = args.repeats or (20 if gpu else cpu_repeats)
    args.warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    return args


def preprocessing_parser(description: str, batch_sizes: list[int]) -> argparse.ArgumentParser:
    """The parser of a preprocessing benchmark with the options both have; the script adds its own, then
    ``--markdown``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=batch_sizes)
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per implementation and case")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: leave as is)")
    return parser


# --- inputs and steps ------------------------------------------------------------------------------------------


def padded_images(batch: int, size: tuple[int, int], device: torch.device, generator: torch.Generator,
                  after_each: Callable[[int], None] | None = None) -> dict[str, torch.Tensor]:
    """Random images padded bottom/right to `size` = (H, W): `pixel_values`, float32 of shape (B, 3, H, W), zero in
    the padding, and `pixel_mask`, int64 of shape (B, H, W), 1 on the image. Image i is cut to `SHRINK[i % 4]`.

    `after_each(i)` runs right after image i is drawn, so that a benchmark drawing more per example from the same
    generator (ViLT's question) keeps one order of draws: image 0, its question, image 1, ...
    """
    height, width = size
    pixel_values = torch.zeros(batch, 3, height, width)
    pixel_mask = torch.zeros(batch, height, width, dtype=torch.long)
    for i in range(batch):
        h, w = int(height * SHRINK[i % 4][0]), int(width * SHRINK[i % 4][1])
        pixel_values[i, :, :h, :w] = torch.randn(3, h, w, generator=generator)
        pixel_mask[i, :h, :w] = 1
        if after_each is not None:
            after_each(i)
    return {"pixel_values": pixel_values.to(device), "pixel_mask": pixel_mask.to(device)}


def load_photos() -> list:
    """scikit-image's sample photographs of `PHOTOS` that this version has, as PIL RGB images. Raises ImportError
    without scikit-image."""
    import skimage.data
    from PIL import Image

    photos = []
    for name in PHOTOS:
        try:
            array = getattr(skimage.data, name)()
        except (AttributeError, OSError, ValueError):  # some need a download or are missing in this version
            continue
        if array.ndim == 3 and array.shape[-1] == 3:
            photos.append(Image.fromarray(array))
    return photos


def autocast_for(device: torch.device, precision: str) -> Autocast:
    """bf16: `torch.autocast` to bfloat16 on `device`; fp32: no autocast."""
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext


def inference_step(model: torch.nn.Module, inputs: dict, autocast: Autocast) -> Step:
    """One eval-mode forward without gradients on the keyword `inputs`."""
    def step() -> None:
        with torch.no_grad(), autocast():
            model(**inputs)
    return step


def training_step(model: torch.nn.Module, inputs: dict, autocast: Autocast, fused: bool = False) -> Step:
    """Forward on `inputs` (with their `labels`, so the model's own loss), backward and an AdamW step over the
    trainable parameters; `fused`: AdamW's fused CUDA kernels."""
    params = [p for p in model.parameters() if p.requires_grad]
    # None rather than False: an explicit False would also turn off the multi-tensor (foreach) default on CUDA.
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True if fused else None)

    def step() -> None:
        with autocast():
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # after the step, so that gradients count in this call's peak
    return step


def logit_difference(ours: torch.nn.Module, theirs: torch.nn.Module, inputs: dict) -> float:
    """Max abs difference of the two models' `logits` on the keyword `inputs`, without gradients."""
    with torch.no_grad():
        return (ours(**inputs).logits - theirs(**inputs).logits).abs().max().item()


def report_same_weights(difference: float) -> None:
    print(f"same weights: max |logits ours - transformers| = {difference:.2e} (fp32) "
          f"{'OK' if difference <= 1e-4 else 'MISMATCH, above 1e-4'}")


def check_processor_outputs(ours: Mapping, theirs: Mapping, exact: Collection[str]) -> None:
    """Raises SystemExit unless both processors' `pixel_values` have one shape and agree within 1e-4 and the
    `exact` keys (masks, token ids) are equal."""
    a, b = ours["pixel_values"], theirs["pixel_values"]
    if a.shape != b.shape:
        raise SystemExit(f"pixel_values differ in shape: ours {tuple(a.shape)}, transformers {tuple(b.shape)}")
    difference = (a - b).abs().max().item()
    if difference > 1e-4:
        raise SystemExit(f"pixel_values differ: max |ours - transformers| {difference:.2e}, above 1e-4")
    differing = [key for key in exact if not torch.equal(ours[key], theirs[key])]
    if differing:
        raise SystemExit(f"{', '.join(differing)} differ between ours and transformers")


# --- timing ----------------------------------------------------------------------------------------------------


def timed_call(step: Step, device: torch.device, clock: str = "wall") -> tuple[float, float | None]:
    """Milliseconds of one call and, on CUDA, its peak allocation in MiB above what was allocated at its start.
    `clock` is a key of `CLOCKS`."""
    cuda = device.type == "cuda"
    now = CLOCKS[clock]
    if cuda:
        torch.cuda.synchronize()  # kernels of the previous call must not be billed to this one
        torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated()
    start = now()
    step()
    if cuda:
        torch.cuda.synchronize()
    elapsed = (now() - start) * 1e3
    return elapsed, (torch.cuda.max_memory_allocated() - resident) / 2**20 if cuda else None


def alternate(steps: Mapping[str, Step], warmup: int, repeats: int, device: torch.device,
              clock: str = "wall") -> dict[str, list[tuple[float, float | None]]]:
    """`warmup` untimed rounds, then `repeats` timed rounds, each round one call of every step in order; per step
    the (ms, MiB or None) of its timed calls (see `timed_call`)."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    calls = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            calls[name].append(timed_call(step, device, clock))
    return calls


def compare(case: str, batch: int, ours: Step, theirs: Step, args, device: torch.device) -> Row:
    """Warm up both, then alternate timed calls; medians (and max peak memory) per implementation. `args` gives
    `warmup`, `repeats` and optionally `clock`."""
    calls = alternate({"ours": ours, "theirs": theirs}, args.warmup, args.repeats, device,
                      getattr(args, "clock", "wall"))
    ours_calls, theirs_calls = calls["ours"], calls["theirs"]
    row = Row(case, batch, statistics.median(c[0] for c in ours_calls), statistics.median(c[0] for c in theirs_calls))
    if device.type == "cuda":
        row.ours_mib, row.theirs_mib = max(c[1] for c in ours_calls), max(c[1] for c in theirs_calls)
    return row


def compare_models(case: str, batches: Iterable[tuple[int, dict]], ours: torch.nn.Module, theirs: torch.nn.Module,
                   autocast: Autocast, args, device: torch.device, train: bool = False,
                   fused: bool = False) -> list[Row]:
    """`compare` per (batch size, keyword inputs) of `batches`: `inference_step`s or, with `train`,
    `training_step`s (the inputs carry `labels`; `fused` AdamW)."""
    def step(model: torch.nn.Module, inputs: dict) -> Step:
        return training_step(model, inputs, autocast, fused) if train else inference_step(model, inputs, autocast)
    return [compare(case, batch, step(ours, inputs), step(theirs, inputs), args, device) for batch, inputs in batches]


def median_ms(steps: Mapping[str, Step], warmup: int, repeats: int) -> dict[str, float]:
    """Median wall-clock milliseconds per step on the CPU, the calls alternating as in `alternate`."""
    calls = alternate(steps, warmup, repeats, torch.device("cpu"))
    return {name: statistics.median(ms for ms, _ in values) for name, values in calls.items()}


# --- headers and tables ----------------------------------------------------------------------------------------


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


def model_header(args, device: torch.device, setting: str) -> str:
    """One line: library versions, device, threads, the benchmark's `setting`, dtype, warmup and repeats, time."""
    return (f"torch {torch.__version__}, transformers {transformers.__version__}, timm {timm.__version__} | "
            f"{device_name(device)} | {torch.get_num_threads()} threads | {setting} | {args.dtype} | "
            f"{args.warmup} warmup + {args.repeats} repeats | {datetime.datetime.now():%Y-%m-%d %H:%M}")


def preprocessing_header(num_photos: int, setting: str, repeats: int) -> str:
    """One line, starting with "#": date, machine, threads, library versions, photos, the `setting`, repeats."""
    import skimage

    return (f"# {datetime.date.today()} {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
            f"threads, torch {torch.__version__}, torchvision {torchvision.__version__}, transformers "
            f"{transformers.__version__}, scikit-image {skimage.__version__}; {num_photos} photos cycled, {setting}, "
            f"{repeats} repeats (median)")


def format_lines(header: list[str], lines: list[list[str]], markdown: bool, left: Collection[int] = (),
                 markdown_left: Collection[int] | None = None) -> str:
    """A table of strings: Markdown, or columns padded to their width and joined by two spaces. Columns in `left`
    are left-aligned, the others right-aligned; `markdown_left`, when given, replaces `left` in Markdown."""
    lines = [header] + lines
    if markdown:
        left = left if markdown_left is None else markdown_left
        lines.insert(1, ["---" if i in left else "---:" for i in range(len(header))])
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)
    widths = [max(map(len, column)) for column in zip(*lines, strict=True)]
    return "\n".join("  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in
                               enumerate(zip(line, widths, strict=True))) for line in lines)


def throughput_table(leading: list[str], rows: list[tuple[list[str], int, dict[str, float]]], unit: str,
                     reference: str, markdown: bool, markdown_left: Collection[int] | None = None) -> str:
    """A preprocessing table: per row its `leading` cells, then `unit`s per second of every implementation from its
    median milliseconds, then ours / `reference` time. `rows`: (leading cells, batch size, {name: median ms})."""
    names = list(rows[0][2])
    header = leading + [f"{name} {unit}/s" for name in names] + [f"ours / {reference} (time)"]
    lines = [cells + [f"{1e3 * batch / medians[name]:.1f}" for name in names]
             + [f"{medians['ours'] / medians[reference]:.2f}"] for cells, batch, medians in rows]
    return format_lines(header, lines, markdown, markdown_left=markdown_left)


def format_table(rows: list[Row], markdown: bool) -> str:
    memory = any(row.ours_mib is not None for row in rows)
    columns = ["case", "batch", "ours ms", "transformers ms", "ours/transformers"]
    columns += ["ours peak MiB", "transformers peak MiB"] if memory else []
    lines = [
        [r.case, str(r.batch), f"{r.ours_ms:.1f}", f"{r.theirs_ms:.1f}", f"{r.ours_ms / r.theirs_ms:.2f}"]
        + ([f"{r.ours_mib:.0f}", f"{r.theirs_mib:.0f}"] if memory else []) for r in rows
    ]
    return format_lines(columns, lines, markdown, left=(0,))


def run_model_benchmark(args, run_cases: Callable[[argparse.Namespace, torch.device], list[Row]],
                        setting: str) -> None:
    """A model benchmark's main: threads, the header line, `run_cases(args, device)`, the table."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(model_header(args, device, setting))
    print(format_table(run_cases(args, device), args.markdown))
