"""Peak memory and step time of a training step, plain against gradient checkpointing, for DETR-R50 and ViLT-B/32.

`model.gradient_checkpointing_enable()` recomputes DETR's encoder and decoder layers (not the CNN backbone) and
ViLT's blocks in the backward instead of keeping their activations. Each case is one training step of our model with
random weights (forward with labels, so the model's own loss; backward; AdamW): DETR-R50 (91 classes, auxiliary
losses, dropout 0.1) on a padded batch of images, ViLT-B/32 VQA (3,129 answers) on images with 40-token questions.

What is measured:

- step time: the median of `--repeats` calls after `--warmup`, plain and checkpointed calls alternating on one model
  (so drifts of clock or load hit both alike); wall clock (`side_by_side.alternate`).
- peak memory, CUDA: the largest `torch.cuda.max_memory_allocated` of a call above what was allocated when the call
  began (weights, gradients and the optimizer's state resident before it are not counted).
- peak memory, CPU: in a fresh process per case and mode, the increase of the process's peak resident set
  (``VmHWM``, reset through ``/proc/self/clear_refs`` after `malloc_trim`) during one step after a warm-up step: what
  the step's activations, gradients and temporary buffers add to the resident memory. `tracemalloc` does not see
  torch's allocations, and `ru_maxrss` cannot be reset, so it would count the model's construction too.

The header gives the machine's load average before and after (other jobs slow the step times down, not the memory).
Run: ``python benchmarks/gradient_checkpointing.py --markdown`` (CPU: DETR 384x512 batch 4, ViLT 384x640 batch 8,
3 repeats; a few minutes on 2 cores); on a GPU the defaults are DETR 800x1066 batch 8, 10 repeats.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights only: nothing needs the network

import torch  # noqa: E402
from run_all import rss_kib  # noqa: E402

import detrvilt  # noqa: E402
from bench_detr import random_labels  # noqa: E402
from bench_vilt import soft_scores, vqa_batch  # noqa: E402
from side_by_side import alternate, autocast_for, format_lines, model_header, padded_images, training_step  # noqa: E402

MODES = ("plain", "checkpointed")
NUM_ANSWERS = 3129


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", nargs="+", choices=["detr", "vilt"], default=["detr", "vilt"])
    parser.add_argument("--detr-size", nargs=2, type=int, metavar=("H", "W"),
                        help="DETR's padded input size (default 800 1066 on cuda, 384 512 on cpu)")
    parser.add_argument("--detr-batch", type=int, help="DETR's batch size (default 8 on cuda, 4 on cpu)")
    parser.add_argument("--vilt-size", nargs=2, type=int, metavar=("H", "W"), default=(384, 640),
                        help="ViLT's padded input size, multiples of 32")
    parser.add_argument("--vilt-batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, help="timed calls per mode (default 10 on cuda, 3 on cpu)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per mode")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16: torch.autocast")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: leave as is)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--memory-worker", metavar="MODEL:MODE", help=argparse.SUPPRESS)  # one CPU memory case
    args = parser.parse_args(argv)
    gpu = args.device == "cuda"
    args.detr_size = tuple(args.detr_size or ((800, 1066) if gpu else (384, 512)))
    args.detr_batch = args.detr_batch or (8 if gpu else 4)
    args.repeats = args.repeats or (10 if gpu else 3)
    if any(side % 32 for side in args.vilt_size):
        parser.error(f"--vilt-size must be multiples of the patch size 32, got {args.vilt_size}")
    return args


def build_case(name: str, args, device: torch.device) -> tuple[torch.nn.Module, dict, str]:
    """A model with random weights in training mode, its inputs with labels, and a description of the input."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    if name == "detr":
        config = detrvilt.DetrConfig(backbone="resnet50", num_labels=91, auxiliary_loss=True)
        model = detrvilt.DetrForObjectDetection(config)
        inputs = padded_images(args.detr_batch, args.detr_size, device, generator)
        inputs["labels"] = random_labels(args.detr_batch, device, generator)
        return model.to(device).train(), inputs, "{}x{}".format(*args.detr_size)
    model = detrvilt.ViltForQuestionAnswering(detrvilt.ViltConfig(num_labels=NUM_ANSWERS))  # ViLT-B/32 defaults
    inputs = vqa_batch(args.vilt_batch, tuple(args.vilt_size), device, generator)
    inputs["labels"] = soft_scores(args.vilt_batch, device, generator)
    return model.to(device).train(), inputs, "{}x{} + 40 tokens".format(*args.vilt_size)


def enable_checkpointing(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Switch checkpointing on through transformers' API (`activation_checkpointing_enable` from 5.24, before it
    `gradient_checkpointing_enable`); returns the layers it flagged."""
    (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    return [module for module in model.modules() if getattr(module, "gradient_checkpointing", False)]


def mode_step(model: torch.nn.Module, inputs: dict, mode: str, autocast):
    """`side_by_side.training_step` with the layers' checkpointing flags set to `mode` before every call (one model,
    both modes; toggling the flags rather than calling enable/disable again, which would add an input hook to ViLT's
    word embeddings every time)."""
    step = training_step(model, inputs, autocast)
    layers = enable_checkpointing(model)

    def run() -> None:
        for layer in layers:
            layer.gradient_checkpointing = mode == "checkpointed"
        step()
    return run


def memory_worker(spec: str, args) -> None:
    """In a fresh process: the peak-RSS increase of one CPU training step of `spec` = "model:mode" (JSON)."""
    name, mode = spec.split(":")
    model, inputs, _ = build_case(name, args, torch.device("cpu"))
    step = mode_step(model, inputs, mode, autocast_for(torch.device("cpu"), args.dtype))
    step()  # warm-up: the optimizer's state, lazy buffers
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap back, so that the measured step's pages count
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM to the current resident set
    before = rss_kib("VmRSS")
    step()
    print(json.dumps({"peak_increase_mib": (rss_kib("VmHWM") - before) / 1024}))


def cpu_peak_mib(name: str, mode: str, argv: list[str]) -> float:
    command = [sys.executable, __file__, *argv, "--device", "cpu", "--memory-worker", f"{name}:{mode}"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_increase_mib"]


def run_case(name: str, args, device: torch.device, argv: list[str]) -> list[str]:
    model, inputs, setting = build_case(name, args, device)
    autocast = autocast_for(device, args.dtype)
    steps = {mode: mode_step(model, inputs, mode, autocast) for mode in MODES}
    calls = alternate(steps, args.warmup, args.repeats, device)
    ms = {mode: statistics.median(c[0] for c in calls[mode]) for mode in MODES}
    if device.type == "cuda":
        mib = {mode: max(c[1] for c in calls[mode]) for mode in MODES}
    else:
        del model, inputs, steps
        gc.collect()
        mib = {mode: cpu_peak_mib(name, mode, argv) for mode in MODES}
    batch = args.detr_batch if name == "detr" else args.vilt_batch
    return ["DETR-R50" if name == "detr" else "ViLT-B/32 VQA", str(batch), setting,
            f"{ms['plain']:.0f}", f"{ms['checkpointed']:.0f}", f"{ms['checkpointed'] / ms['plain']:.2f}",
            f"{mib['plain']:.0f}", f"{mib['checkpointed']:.0f}", f"{mib['checkpointed'] / mib['plain']:.2f}"]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_worker:
        memory_worker(args.memory_worker, args)
        return
    device = torch.device(args.device)
    memory = "CUDA max_memory_allocated above the call's start" if device.type == "cuda" else (
        "CPU peak RSS increase of one step, fresh process per mode")
    print(model_header(args, device, f"train step (forward + backward + AdamW); memory: {memory}"))
    print("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    header = ["model", "batch", "input", "plain ms", "checkpointed ms", "time ratio", "plain peak MiB",
              "checkpointed peak MiB", "memory ratio"]
    lines = [run_case(name, args, device, argv) for name in args.only]
    print("load average (1, 5, 15 min) after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(format_lines(header, lines, args.markdown, left=(0, 2)))


if __name__ == "__main__":
    main()
