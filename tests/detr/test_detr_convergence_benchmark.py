"""`benchmarks/detr_convergence.py` on a tiny budget: runs write their evaluations as they go, resume exactly from a
checkpoint, are skipped when finished, and the report reads them into tables and pictures."""

import json
import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "detr_convergence.py"
TINY = ["--max_steps", "6", "--eval_every", "2", "--checkpoint_every", "2", "--train_images", "16",
        "--eval_images", "6", "--seeds", "0"]


@pytest.fixture(scope="module")
def benchmark():
    return runpy.run_path(str(SCRIPT), run_name="detr_convergence")


def test_runs_report_and_resume(tmp_path, benchmark, fresh_accelerate_state):
    main = benchmark["main"]
    main(["--output_dir", str(tmp_path), "--arms", "plain,group", *TINY])
    records = {arm: json.loads((tmp_path / "runs" / f"{arm}_seed0.json").read_text()) for arm in ("plain", "group")}
    for arm, record in records.items():
        assert record["done"] and record["model_args"]["num_query_groups"] == (11 if arm == "group" else 1)
        assert [e["step"] for e in record["evals"]] == [2, 4, 6]
        final = record["evals"][-1]
        assert 0.0 <= final["map"] <= final["map_50"] <= 1.0
        assert len(final["layers"]["map"]) == 6 and final["layers"]["map"][-1] == pytest.approx(final["map"])
    assert not (tmp_path / "checkpoints" / "plain_seed0").exists()  # removed once the run is finished

    # A run that dies at its last evaluation (after the checkpoint of step 4) continues from that checkpoint when
    # started again, and ends with the numbers of the uninterrupted run.
    module_globals = benchmark["run_arm"].__globals__  # runpy returns a copy of the module's namespace
    evaluate = module_globals["evaluate"]
    calls = []

    def dying_evaluate(model, eval_set, processor, batch_size=50):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("stopped")
        return evaluate(model, eval_set, processor, batch_size)

    stopped_dir = tmp_path / "stopped"
    module_globals["evaluate"] = dying_evaluate
    try:
        with pytest.raises(KeyboardInterrupt):
            main(["--output_dir", str(stopped_dir), "--arms", "plain", *TINY])
    finally:
        module_globals["evaluate"] = evaluate
    partial = json.loads((stopped_dir / "runs" / "plain_seed0.json").read_text())
    assert not partial["done"] and [e["step"] for e in partial["evals"]] == [2, 4]
    assert (stopped_dir / "checkpoints" / "plain_seed0" / "checkpoint-4").is_dir()
    (stopped_dir / "runs" / "plain_seed0.lock").unlink()  # left by the "killed" process, which is still alive here
    main(["--output_dir", str(stopped_dir), "--arms", "plain", *TINY])
    resumed = json.loads((stopped_dir / "runs" / "plain_seed0.json").read_text())
    assert resumed["done"] and resumed["resumed_at"] == [4]
    assert [e["step"] for e in resumed["evals"]] == [2, 4, 6]
    for key in ("map", "map_50", "mar_100"):
        assert resumed["evals"][-1][key] == pytest.approx(records["plain"]["evals"][-1][key], abs=1e-9)
    assert [e["loss"] for e in resumed["log"]] == pytest.approx([e["loss"] for e in records["plain"]["log"]])

    main(["--output_dir", str(tmp_path), "--arms", "plain", *TINY])  # finished: skipped, the file stays
    assert json.loads((tmp_path / "runs" / "plain_seed0.json").read_text()) == records["plain"]
    main(["--output_dir", str(tmp_path), "--report"])
    text = (tmp_path / "tables.md").read_text()
    assert "| plain |" in text and "| group |" in text
    for name in ("detr_convergence.png", "detr_convergence_ablations.png", "detr_convergence_layers.png"):
        assert (tmp_path / name).is_file(), name


def test_unknown_arm_is_named():
    namespace = runpy.run_path(str(SCRIPT), run_name="detr_convergence")
    with pytest.raises(ValueError, match="no_such_arm"):
        namespace["ConvergenceArguments"](arms="plain,no_such_arm")


def test_short_schedule_continues_the_full_runs_checkpoint(tmp_path, benchmark, fresh_accelerate_state):
    main, short = benchmark["main"], benchmark["SHORT"]
    saved = dict(short)
    short.update(max_steps=6, lr_drop_step=4)  # the arms hold this dict: a 6-step schedule dropping after step 4
    try:
        main(["--output_dir", str(tmp_path), "--arms", "plain", "--max_steps", "8", *TINY[2:]])
        assert (tmp_path / "branches" / "plain_seed0" / "checkpoint-4").is_dir()  # kept for the short twin
        main(["--output_dir", str(tmp_path), "--arms", "plain_short", *TINY[2:]])
    finally:
        short.clear()
        short.update(saved)
    full = json.loads((tmp_path / "runs" / "plain_seed0.json").read_text())
    branched = json.loads((tmp_path / "runs" / "plain_short_seed0.json").read_text())
    assert branched["done"] and branched["branched_from"] == "plain" and branched["resumed_at"] == [4]
    assert [e["step"] for e in branched["evals"]] == [2, 4, 6] and branched["max_steps"] == 6
    assert branched["evals"][:2] == full["evals"][:2]


def test_backbone_diagnostic_starts_from_the_full_runs_backbone_only(tmp_path, benchmark, fresh_accelerate_state):
    import torch
    from safetensors.torch import load_file

    from detrvilt.training.detr.demo import DemoArguments, demo_configuration
    from detrvilt.training.detr.recipes import build_model

    main, load_backbone = benchmark["main"], benchmark["load_backbone"]
    with pytest.raises(FileNotFoundError, match="plain_seed0"):  # the full run must come first
        main(["--output_dir", str(tmp_path), "--arms", "backbone_short", *TINY])
    main(["--output_dir", str(tmp_path), "--arms", "plain", *TINY])
    saved = load_file(str(tmp_path / "final" / "plain_seed0.safetensors"))

    model_args, _, _ = demo_configuration(DemoArguments(vilt=False))
    torch.manual_seed(1)
    model = build_model(model_args, {0: "circle", 1: "square", 2: "triangle"})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copied = load_backbone(model, tmp_path / "final" / "plain_seed0.safetensors")
    after = model.state_dict()
    backbone = [k for k in after if k.startswith("model.backbone.")]
    assert copied == len(backbone) > 40  # parameters and batch-norm statistics
    assert all(torch.equal(after[k], saved[k]) for k in backbone)
    assert all(torch.equal(after[k], before[k]) for k in after if k not in backbone)  # the transformer stays new
    assert not torch.equal(after["model.input_projection.weight"], saved["model.input_projection.weight"])

    small = build_model(demo_configuration(DemoArguments(vilt=False, backbone="resnet18"))[0], {0: "a"})
    with pytest.raises(ValueError, match="backbone tensors do not match"):
        load_backbone(small, tmp_path / "final" / "plain_seed0.safetensors")

    main(["--output_dir", str(tmp_path), "--arms", "backbone_short", *TINY])
    record = json.loads((tmp_path / "runs" / "backbone_short_seed0.json").read_text())
    assert record["done"] and "branched_from" not in record and [e["step"] for e in record["evals"]] == [2, 4, 6]
