"""Every speed and memory number of the project in one run: detrvilt against transformers on the same weights.

Cases (each model built by `bench_detr.build_models` / `bench_vilt.build_models`: random transformers weights,
converted to ours, logits checked equal first):

- DETR-R50: inference at batch 1 and 8 (CPU: 1 and 2), a training step (forward with labels, backward, AdamW;
  batch 8, CPU 2), matcher+loss forward+backward (6 layers x 8 images x 100 queries). Images 800x1066 (CPU 384x512).
- ViLT-B/32 VQA: inference at batch 1 and 32 (CPU: 1 and 4), a training step (batch 8, CPU 4); 384x640, 40 tokens.
- preprocessing: the image processors at batch 8 (DETR, shortest side 800) and the ViLT processor (images + text).
- peak memory, CPU: the increase of the process's peak resident set (``VmHWM`` after resetting it through
  ``/proc/self/clear_refs``) during one call, after one warm-up call, in a fresh process per implementation and case
  (`tracemalloc` does not see torch's allocations); GPU: `torch.cuda.max_memory_allocated` above what was allocated
  when the call began.
- multiply-adds per image: `torch.utils.flop_counter.FlopCounterMode` on our batch-1 inference (flops / 2), and on
  GPUs the fraction of the device's dense peak the measured throughput implies.

CPU mode (the default without CUDA) gives ratios: each case alternates ours/theirs calls after a warmup and reports
medians; by default with one thread and the calling thread's CPU time as the clock, so that the other jobs of a
shared machine do not distort the ratio (``--threads 2 --clock wall`` for elapsed time). GPU mode gives absolute
numbers and ratios in fp32 and bf16 autocast, and ours under ``torch.compile`` (``--compile``) and replayed from
CUDA graphs (`detrvilt.fast_inference.CudaGraphInference`, ``--cuda-graphs``); training uses fused AdamW there.

Run: ``python benchmarks/run_all.py`` (CPU, about 10 minutes on 2 cores) or, on a GPU,
``python benchmarks/run_all.py --compile --cuda-graphs``. Writes ``--output`` (JSON) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import timm  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import bench_detr  # noqa: E402
import bench_vilt  # noqa: E402
import detrvilt  # noqa: E402
from detrvilt.fast_inference import CudaGraphInference  # noqa: E402
from detrvilt.modeling.detr import onednn_detr  # noqa: E402
from detrvilt.modeling.vilt import modeling_vilt  # noqa: E402
from side_by_side import (  # noqa: E402
    CLOCKS,
    autocast_for,
    compare,
    compare_models,
    device_name,
    inference_step,
    load_photos,
    padded_images,
    training_step,
)

GROUPS = ("detr", "vilt", "preprocessing", "memory", "flops")
# Dense datasheet peaks (FLOP/s) of the SXM cards: bf16 tensor cores, plain fp32 (TF32 is off in these runs).
PEAK_FLOPS = {"H100": {"bf16": 989e12, "fp32": 67e12}, "H200": {"bf16": 989e12, "fp32": 67e12}}


@dataclass
class Result:
    """One line of the table. Times are medians in ms; `ratio` = ours / transformers (None without theirs)."""

    model: str
    case: str
    batch: int
    precision: str
    variant: str = "eager"
    ours_ms: float | None = None
    theirs_ms: float | None = None
    ratio: float | None = None
    ours_per_s: float | None = None
    ours_mib: float | None = None
    theirs_mib: float | None = None
    extra: dict = field(default_factory=dict)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", nargs="+", choices=GROUPS, default=list(GROUPS), help="run only these groups")
    parser.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"], help="default fp32 (CPU), fp32 bf16 (GPU)")
    parser.add_argument("--repeats", type=int, help="timed calls per implementation (default 20 GPU, 5 CPU)")
    parser.add_argument("--warmup", type=int, help="untimed calls per implementation (default 3 GPU, 1 CPU)")
    parser.add_argument("--threads", type=int, help="torch threads (default 1 on CPU, so that --clock thread holds)")
    parser.add_argument("--clock", choices=list(CLOCKS), help="default thread on CPU, wall on GPU (forced)")
    parser.add_argument("--compile", action="store_true", help="GPU: add ours under torch.compile (bf16)")
    parser.add_argument("--cuda-graphs", action="store_true", help="GPU: add ours replayed from CUDA graphs (bf16)")
    parser.add_argument("--output", default="outputs/benchmarks/run_all.json", help="JSON file to write")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)  # internal: "model:case:impl"
    args = parser.parse_args(argv)
    gpu = args.device == "cuda"
    args.dtypes = args.dtypes or (["fp32", "bf16"] if gpu else ["fp32"])
    args.repeats = args.repeats or (20 if gpu else 5)
    args.warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    args.threads = args.threads or (None if gpu else 1)
    args.clock = "wall" if gpu else (args.clock or "thread")
    args.detr_size = (800, 1066) if gpu else (384, 512)
    args.detr_batches, args.detr_train_batch = ((1, 8), 8) if gpu else ((1, 2), 2)
    args.vilt_batches, args.vilt_train_batch = ((1, 32), 8) if gpu else ((1, 4), 4)
    return args


def result_from_row(model: str, precision: str, row, variant: str = "eager") -> Result:
    return Result(model, row.case, row.batch, precision, variant, row.ours_ms, row.theirs_ms,
                  row.ours_ms / row.theirs_ms, 1e3 * row.batch / row.ours_ms, row.ours_mib, row.theirs_mib)


def ours_only(model: str, case: str, batch: int, precision: str, variant: str, step, args, device) -> Result:
    """Time a variant of ours alone (compiled, CUDA graphs): its own median; the ratio is filled in later."""
    row = compare(case, batch, step, lambda: None, args, device)
    return Result(model, case, batch, precision, variant, row.ours_ms, None, None, 1e3 * batch / row.ours_ms,
                  row.ours_mib)


def gpu_variants(name: str, ours, case: str, batches: dict, args, device) -> list[Result]:
    """ours under torch.compile (largest batch) and from CUDA graphs (batch 1), both in bf16 autocast."""
    results, bf16 = [], autocast_for(device, "bf16")
    variants = []
    if args.compile:
        batch = max(batches)
        variants.append(("torch.compile", batch, lambda: inference_step(torch.compile(ours), batches[batch], bf16)))
    if args.cuda_graphs:
        def graph_step():
            runner = CudaGraphInference(ours, autocast_dtype=torch.bfloat16, clone_outputs=False)
            return lambda: runner(**batches[1])
        variants.append(("CUDA graph", 1, graph_step))
    for variant, batch, make_step in variants:
        try:
            results.append(ours_only(name, case, batch, "bf16 autocast", variant, make_step(), args, device))
        except Exception as error:  # one failing variant must not cost the rest of a device session
            print(f"{name} {variant} failed: {type(error).__name__}: {error}", flush=True)
            results.append(Result(name, case, batch, "bf16 autocast", variant, extra={"error": str(error)[:300]}))
    return results


def precisions(args, device):
    """(table label, autocast factory) per requested precision."""
    return [("fp32" if p == "fp32" else "bf16 autocast", autocast_for(device, p)) for p in args.dtypes]


def side_by_side(name: str, ours, theirs, inference_batches: dict, train_inputs: dict, case: str, args,
                 device) -> list[Result]:
    """Inference rows per precision and batch (plus the GPU variants of ours), then training-step rows (the models
    are left in train mode, their weights changed)."""
    results = []
    for label, autocast in precisions(args, device):
        rows = compare_models(f"{case}inference", inference_batches.items(), ours, theirs, autocast, args, device)
        results += [result_from_row(name, label, row) for row in rows]
    if device.type == "cuda":
        results += gpu_variants(name, ours, f"{case}inference", inference_batches, args, device)
    ours.train(), theirs.train()
    train_batches = [(next(iter(train_inputs.values())).shape[0], train_inputs)]
    for label, autocast in precisions(args, device):
        rows = compare_models(f"{case}train step", train_batches, ours, theirs, autocast, args, device, train=True,
                              fused=device.type == "cuda")
        results += [result_from_row(name, label, row) for row in rows]
    return results


def run_detr(args, device) -> list[Result]:
    torch.manual_seed(0)
    ours, theirs = bench_detr.build_models("resnet50", device)
    difference = bench_detr.max_logit_difference(ours, theirs, device)
    if difference > 1e-4:
        raise SystemExit(f"DETR conversion mismatch: max |logits difference| {difference:.2e}")
    generator = torch.Generator().manual_seed(0)
    batches = {batch: padded_images(batch, args.detr_size, device, generator) for batch in args.detr_batches}
    train_inputs = padded_images(args.detr_train_batch, args.detr_size, device, generator)
    train_inputs["labels"] = bench_detr.random_labels(args.detr_train_batch, device, generator)
    results = side_by_side("DETR-R50", ours, theirs, batches, train_inputs, "", args, device)
    for label, autocast in precisions(args, device):
        ours_step, theirs_step, _ = bench_detr.loss_steps(ours, theirs, device, autocast)
        results.append(result_from_row("DETR-R50", label,
                                       compare("matcher+loss fwd+bwd", 8, ours_step, theirs_step, args, device)))
    return results


def run_vilt(args, device) -> list[Result]:
    ours, theirs = bench_vilt.build_models(device)
    difference = bench_vilt.max_logit_difference(ours, theirs, device)
    if difference > 1e-4:
        raise SystemExit(f"ViLT conversion mismatch: max |logits difference| {difference:.2e}")
    generator = torch.Generator().manual_seed(0)
    batches = {batch: bench_vilt.vqa_batch(batch, (384, 640), device, generator) for batch in args.vilt_batches}
    train_inputs = bench_vilt.vqa_batch(args.vilt_train_batch, (384, 640), device, generator)
    train_inputs["labels"] = bench_vilt.soft_scores(args.vilt_train_batch, device, generator)
    results = side_by_side("ViLT-B/32", ours, theirs, batches, train_inputs, "VQA ", args, device)
    # A typical question: VQAv2's average about 6 words, here 12 word pieces with [CLS] and [SEP], padded to 40 as
    # ViLT's processor does. On the CPU ours runs its per-token layers on the valid tokens only.
    short = bench_vilt.vqa_batch(1, (384, 640), device, generator, first_length=12)
    ours.eval(), theirs.eval()
    row = compare("VQA inference, 12-token question padded to 40", 1, inference_step(ours, short, nullcontext),
                  inference_step(theirs, short, nullcontext), args, device)
    return results + [result_from_row("ViLT-B/32", "fp32", row)]


def photos(count: int = 8) -> list[Image.Image]:
    """scikit-image's sample photographs when installed (as the preprocessing benchmarks use), else random images
    of the same sizes."""
    try:
        images = load_photos()
    except ImportError:
        generator = torch.Generator().manual_seed(0)
        sizes = [(512, 512), (400, 600), (300, 451), (427, 640), (370, 500)]
        images = [Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=generator, dtype=torch.uint8).numpy())
                  for h, w in sizes]
    return [images[i % len(images)] for i in range(count)]


def run_preprocessing(args, device) -> list[Result]:
    images, cpu = photos(8), torch.device("cpu")
    ours_detr, theirs_detr = detrvilt.DetrImageProcessor(), transformers.DetrImageProcessor()
    row = compare("DETR image processor", 8, lambda: ours_detr(images),
                  lambda: theirs_detr(images, return_tensors="pt"), args, cpu)
    results = [result_from_row("preprocessing", "fp32", row)]
    try:
        from detrvilt.data import default_vilt_tokenizer

        tokenizer = default_vilt_tokenizer()
    except ImportError as error:
        print(f"skipping the ViLT processor: {error}")
        return results
    texts = ["how many cats are sitting on the red sofa next to the window?"] * len(images)
    ours = detrvilt.ViltProcessor(detrvilt.ViltImageProcessor(), tokenizer)
    theirs = transformers.ViltProcessor(transformers.ViltImageProcessor(), tokenizer)
    row = compare("ViLT processor (image + text)", 8, lambda: ours(images=images, text=texts),
                  lambda: theirs(images=images, text=texts, return_tensors="pt", padding="max_length",
                                 truncation=True, max_length=40), args, cpu)
    return results + [result_from_row("preprocessing", "fp32", row)]


def multiply_adds(args, device) -> list[Result]:
    """MACs per image of our batch-1 fp32 inference at the paper sizes, and the implied fraction of peak later."""
    results = []
    torch.manual_seed(0)
    detr = bench_detr.build_models("resnet50", device)[0]
    inputs = padded_images(1, (800, 1066), device, torch.Generator().manual_seed(0))
    vilt = bench_vilt.build_models(device)[0]
    vilt_inputs = bench_vilt.vqa_batch(1, (384, 640), device, torch.Generator().manual_seed(0))
    for name, model, batch in (("DETR-R50", detr, inputs), ("ViLT-B/32", vilt, vilt_inputs)):
        counter = FlopCounterMode(display=False)
        model.requires_grad_(False)  # the counter's module hooks trip over no_grad views of trainable parameters
        # The counter does not know the oneDNN kernels of the CPU paths: count the plain path.
        switches = (modeling_vilt.ONEDNN_CPU_INFERENCE, onednn_detr.ONEDNN_CPU)
        modeling_vilt.ONEDNN_CPU_INFERENCE = onednn_detr.ONEDNN_CPU = False
        try:
            with torch.no_grad(), counter:
                model(**batch)
        finally:
            modeling_vilt.ONEDNN_CPU_INFERENCE, onednn_detr.ONEDNN_CPU = switches
        results.append(Result(name, "multiply-adds per image (G)", 1, "fp32", "flop counter",
                              extra={"gmacs": counter.get_total_flops() / 2e9}))
    del detr, vilt
    return results


def rss_kib(field_name: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field_name + ":"))


def memory_worker(spec: str, args) -> None:
    """In a fresh process: the peak-RSS increase of one call of `spec` = "model:case:impl" (printed as JSON)."""
    model_name, case, impl = spec.split(":")
    device, generator = torch.device("cpu"), torch.Generator().manual_seed(0)
    if model_name == "detr":
        models = bench_detr.build_models("resnet50", device)
        inputs = padded_images(args.detr_batches[-1] if case == "infer" else args.detr_train_batch, args.detr_size,
                               device, generator)
        if case == "train":
            inputs["labels"] = bench_detr.random_labels(args.detr_train_batch, device, generator)
    else:
        models = bench_vilt.build_models(device)
        batch = args.vilt_batches[-1] if case == "infer" else args.vilt_train_batch
        inputs = bench_vilt.vqa_batch(batch, (384, 640), device, generator)
        if case == "train":
            inputs["labels"] = bench_vilt.soft_scores(batch, device, generator)
    model = models[0 if impl == "ours" else 1]
    del models
    if case == "train":
        step = training_step(model.train(), inputs, nullcontext)
    else:
        step = inference_step(model, inputs, nullcontext)
    step()  # warm-up: lazy buffers, the optimizer's state
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap back, so the next call's pages are counted
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM to the current resident set
    before = rss_kib("VmRSS")
    step()
    print(json.dumps({"peak_increase_mib": (rss_kib("VmHWM") - before) / 1024, "resident_mib": before / 1024}))


def run_memory(args) -> list[Result]:
    results = []
    for model_name, case in (("detr", "infer"), ("detr", "train"), ("vilt", "infer"), ("vilt", "train")):
        values = {}
        for impl in ("ours", "theirs"):
            command = [sys.executable, __file__, "--device", "cpu", "--memory-worker", f"{model_name}:{case}:{impl}"]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            values[impl] = json.loads(done.stdout.strip().splitlines()[-1])
        batch = {("detr", "infer"): args.detr_batches[-1], ("detr", "train"): args.detr_train_batch,
                 ("vilt", "infer"): args.vilt_batches[-1], ("vilt", "train"): args.vilt_train_batch}[model_name, case]
        ours, theirs = values["ours"]["peak_increase_mib"], values["theirs"]["peak_increase_mib"]
        results.append(Result("DETR-R50" if model_name == "detr" else "ViLT-B/32",
                              f"peak RSS increase, {'inference' if case == 'infer' else 'train step'}", batch, "fp32",
                              "CPU RSS", ours_mib=ours, theirs_mib=theirs, ratio=ours / theirs,
                              extra={"resident_mib": {k: v["resident_mib"] for k, v in values.items()}}))
    return results


def add_peak_fractions(results: list[Result], device: torch.device) -> None:
    """`extra["fraction_of_peak"]` for timed inference rows, from the flop counter's multiply-adds."""
    macs = {r.model: r.extra["gmacs"] * 1e9 for r in results if "gmacs" in r.extra}
    peaks = next((v for k, v in PEAK_FLOPS.items() if k in device_name(device)), None)
    if device.type != "cuda" or peaks is None:
        return
    for r in results:
        if r.model in macs and r.ours_per_s and "inference" in r.case:
            peak = peaks["bf16" if "bf16" in r.precision else "fp32"]
            r.extra["fraction_of_peak"] = 2 * macs[r.model] * r.ours_per_s / peak


def markdown(results: list[Result]) -> str:
    lines = ["| model | case | batch | precision | variant | ours ms | transformers ms | ours/transformers | "
             "ours items/s | ours MiB | transformers MiB | notes |", "| --- | --- | ---: | --- | --- | ---: | ---: | "
             "---: | ---: | ---: | ---: | --- |"]

    def number(value, digits=1):
        return "" if value is None else f"{value:.{digits}f}"
    for r in results:
        notes = "; ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k}: {v}" for k, v in r.extra.items())
        lines.append(f"| {r.model} | {r.case} | {r.batch} | {r.precision} | {r.variant} | {number(r.ours_ms)} | "
                     f"{number(r.theirs_ms)} | {number(r.ratio, 2)} | {number(r.ours_per_s)} | {number(r.ours_mib, 0)} "
                     f"| {number(r.theirs_mib, 0)} | {notes} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_worker:
        memory_worker(args.memory_worker, args)
        return
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32
    header = {"date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
              "device": device_name(device), "threads": torch.get_num_threads(), "clock": args.clock,
              "torch": torch.__version__, "transformers": transformers.__version__, "timm": timm.__version__,
              "python": platform.python_version(), "repeats": args.repeats, "warmup": args.warmup}
    print(" | ".join(f"{k} {v}" for k, v in header.items()), flush=True)
    results: list[Result] = []
    steps = {"detr": lambda: run_detr(args, device), "vilt": lambda: run_vilt(args, device),
             "preprocessing": lambda: run_preprocessing(args, device),
             "memory": lambda: run_memory(args) if device.type == "cpu" else [],
             "flops": lambda: multiply_adds(args, device)}
    for group in args.only:
        new = steps[group]()
        print(markdown(new), flush=True)
        results += new
        gc.collect()
    add_peak_fractions(results, device)
    table = markdown(results)
    print(table)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"header": header, "results": [asdict(r) for r in results], "markdown": table}, f, indent=2)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
