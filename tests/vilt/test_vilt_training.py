"""ViLT training: the official optimizer groups and schedule, Trainer runs for every task with their metrics,
fine-tuning from a pretraining checkpoint, retrieval training that improves recall, exact resume of the Accelerate
loop, and the scripts' --help."""

import json
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch.utils.data import DataLoader

from detrvilt.data.vilt.collators import IndexedExamples
from detrvilt.data.vilt.synthetic import make_vilt_captions_dataset
from detrvilt.modeling.vilt import ViltConfig
from detrvilt.modeling.vilt.heads_vilt import (
    ViltForImageAndTextRetrieval,
    ViltForImagesAndTextClassification,
    ViltForPreTraining,
    ViltForQuestionAnswering,
)
from detrvilt.training.loop import EpochShuffleSampler, LoopConfig, train_loop
from detrvilt.training.vilt.arguments import ViltDataArguments, ViltModelArguments, ViltTrainingArguments
from detrvilt.training.vilt.optimization import create_vilt_optimizer, create_vilt_scheduler, vilt_parameter_groups
from detrvilt.training.vilt.recipes import (
    build_vilt_model,
    build_vilt_processor,
    run_vilt_trainer_training,
    task_collator,
    vilt_loss_step,
)
from detrvilt.training.vilt.trainer import retrieval_recall

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
SIZE = 64
TINY_MODEL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, patch_size=16,
                  image_size=SIZE)


def model_args(**overrides):
    return ViltModelArguments(**{**TINY_MODEL, "pretraining_objectives": "mlm,itm", **overrides})


def data_args(task, **overrides):
    kwargs = dict(task=task, synthetic_train_size=12, synthetic_eval_size=5, synthetic_image_size=SIZE,
                  shortest_edge=SIZE, max_text_length=20, num_negatives=3)
    return ViltDataArguments(**{**kwargs, **overrides})


def trainer_args(tmp_path, **overrides):
    kwargs = dict(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4,
                  per_device_eval_batch_size=3, report_to=[], use_cpu=True, save_strategy="no",
                  logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0)
    return ViltTrainingArguments(**{**kwargs, **overrides})


@pytest.fixture
def fresh_accelerate_state():
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_optimizer_groups_and_schedule_follow_the_official_code():
    config = ViltConfig(**{k: v for k, v in TINY_MODEL.items()}, num_labels=7, max_position_embeddings=20)
    model = ViltForQuestionAnswering(config)
    groups = {g["name"]: g for g in vilt_parameter_groups(model)}
    assert set(groups) == {"decay", "no_decay", "head_decay", "head_no_decay"}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in groups.values():
        for parameter in group["params"]:
            name = names[id(parameter)]
            is_norm = any(isinstance(m, torch.nn.LayerNorm) and any(p is parameter for p in m.parameters())
                          for m in model.modules())
            assert (group["weight_decay"] == 0.0) == (name.endswith("bias") or is_norm), name
            assert group["name"].startswith("head_") == name.startswith("classifier."), name
    assert groups["decay"]["lr"] == 1e-4 and groups["head_decay"]["lr"] == pytest.approx(1e-3)
    assert groups["decay"]["weight_decay"] == 0.01
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))
    optimizer = create_vilt_optimizer(model)
    assert optimizer.defaults["betas"] == (0.9, 0.98) and optimizer.defaults["eps"] == 1e-8
    scheduler = create_vilt_scheduler(optimizer, num_training_steps=20)  # 2 warmup steps, decay to 0 at 20
    rates = []
    for _ in range(20):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == 0.0 and rates[2] == pytest.approx(1e-4) and rates[1] == pytest.approx(5e-5)
    assert rates[11] == pytest.approx(1e-4 * 9 / 18) and optimizer.param_groups[0]["lr"] == 0.0
    assert optimizer.param_groups[2]["lr"] == 0.0  # the head's group decays alike


def test_mlm_on_masked_tokens_only_gives_the_same_loss():
    processor = build_vilt_processor(data_args("pretrain"), patch_size=16)
    batch = task_collator("pretrain", processor)(
        [{**row, "_index": i} for i, row in enumerate(make_vilt_captions_dataset(4, image_size=SIZE))])
    batch.pop("example_index")
    model = ViltForPreTraining(ViltConfig(**TINY_MODEL, max_position_embeddings=20,
                                          pretraining_objectives=["mlm", "itm"])).eval()
    with torch.no_grad():
        full = model(**batch)
        cheap = model(**batch, mlm_masked_only=True)
    assert full.logits.shape[:2] == batch["input_ids"].shape
    assert cheap.logits.shape[0] == int((batch["labels"] != -100).sum()) > 0
    torch.testing.assert_close(cheap.loss_dict["mlm_loss"], full.loss_dict["mlm_loss"])
    torch.testing.assert_close(cheap.loss, full.loss)


def test_trainer_vqa_reports_the_official_score_and_saves_a_hub_folder(tmp_path):
    result = run_vilt_trainer_training(model_args(), data_args("vqa"), trainer_args(tmp_path))
    scores = result["eval"]
    assert scores["eval_num_examples"] == 5 and 0.0 <= scores["eval_vqa_score"] <= 1.0
    assert "eval_loss" in scores
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["id2label"]["5"] == "yes" and saved["architectures"] == ["ViltForQuestionAnswering"]
    reloaded = ViltForQuestionAnswering.from_pretrained(tmp_path / "out")
    assert reloaded.config.num_labels == len(saved["id2label"])
    from detrvilt.modeling.vilt.processing_vilt import DetrviltViltProcessor

    processor = DetrviltViltProcessor.from_pretrained(tmp_path / "out")
    assert processor.max_length == 20 and processor.image_processor.size["shortest_edge"] == SIZE


@pytest.mark.parametrize("task", ["pretrain", "nlvr2"])
def test_trainer_pretraining_and_nlvr2_report_their_metrics(tmp_path, task):
    result = run_vilt_trainer_training(model_args(), data_args(task), trainer_args(tmp_path))
    scores = result["eval"]
    if task == "pretrain":
        assert 0.0 <= scores["eval_itm_accuracy"] <= 1.0 and scores["eval_num_masked_tokens"] > 0
        assert 0.0 <= scores["eval_mlm_accuracy"] <= 1.0
    else:
        assert scores["eval_num_examples"] == 5 and 0.0 <= scores["eval_accuracy"] <= 1.0
    assert result["train"]["train_loss"] > 0


def test_finetuning_starts_from_a_pretraining_checkpoint(tmp_path):
    pretrained = ViltForPreTraining(ViltConfig(**TINY_MODEL, max_position_embeddings=20,
                                               pretraining_objectives=["mlm", "itm"]))
    pretrained.save_pretrained(tmp_path / "pretrain")
    source = pretrained.vilt.state_dict()
    for task, cls in (("vqa", ViltForQuestionAnswering), ("nlvr2", ViltForImagesAndTextClassification),
                      ("retrieval", ViltForImageAndTextRetrieval)):
        model = build_vilt_model(model_args(model_name_or_path=str(tmp_path / "pretrain")), data_args(task),
                                 {0: "yes", 1: "no"} if task == "vqa" else None)
        assert type(model) is cls
        assert not hasattr(model, "mlm_score") and not hasattr(model, "itm_score")
        state = model.vilt.state_dict()
        table = "embeddings.modality_type_embeddings.weight"
        for key, value in source.items():
            if key != table:
                torch.testing.assert_close(state[key], value, msg=key)
        torch.testing.assert_close(state[table][:2], source[table])
        if task == "nlvr2":
            torch.testing.assert_close(state[table][2], source[table][1])  # second image starts as the first
        if task == "retrieval":
            torch.testing.assert_close(model.rank_output.weight, pretrained.itm_score.weight[1:])
        if task == "vqa":
            assert model.config.id2label == {0: "yes", 1: "no"} and model.config.max_image_length == -1


def test_retrieval_trainer_scores_the_full_matrix_in_batches_like_pair_by_pair(tmp_path):
    """One default run of the retrieval path: Trainer on 1 positive + K negatives, then recall from the full
    image x caption matrix scored in batches, which must equal scoring every pair on its own."""
    from detrvilt.training.vilt.metrics import caption_table, score_images_against_texts, tokenize_texts

    result = run_vilt_trainer_training(model_args(), data_args("retrieval"), trainer_args(tmp_path))
    assert result["trainer"].state.global_step == 2 and result["train"]["train_loss"] > 0
    assert result["eval"]["eval_num_images"] == 5 and 0 <= result["eval"]["eval_ir_r1"] <= 1
    model = result["trainer"].model.eval()
    processor = result["processor"]
    evaluation = make_vilt_captions_dataset(5, seed=1, image_size=SIZE)
    texts, _ = caption_table(evaluation)
    text_inputs = tokenize_texts(processor, texts)
    images = processor.image_processor(list(evaluation["image"]))
    batched = score_images_against_texts(model, images["pixel_values"], images["pixel_mask"], text_inputs,
                                         text_batch_size=4)
    assert batched.shape == (5, len(texts))
    with torch.no_grad():
        for i in range(5):
            for j in range(len(texts)):
                pair = model(pixel_values=images["pixel_values"][i:i + 1], pixel_mask=images["pixel_mask"][i:i + 1],
                             **{k: v[j:j + 1] for k, v in text_inputs.items()}).logits
                assert batched[i, j].item() == pytest.approx(pair.item(), abs=1e-5), (i, j)


@pytest.mark.slow
def test_retrieval_training_with_negatives_improves_recall(tmp_path):
    """300 steps (about 30 s on one core) of 1 positive + 7 negatives on one-object scenes: recall on held-out
    scenes rises well above the untrained model's (rsum 3.5-3.9 against 2.0 with 1 or 2 threads; at lr 3e-3 the
    scenes on the dark canvas do not train)."""
    from detrvilt.data.vilt.collators import IndexedExamples
    from detrvilt.training.vilt.trainer import ViltTrainer

    torch.manual_seed(0)
    data = data_args("retrieval", num_negatives=7)
    model = build_vilt_model(model_args(hidden_dropout_prob=0.0), data)
    processor = build_vilt_processor(data, patch_size=16)
    train = make_vilt_captions_dataset(64, seed=0, image_size=SIZE, max_objects=1)
    evaluation = make_vilt_captions_dataset(16, seed=1, image_size=SIZE, max_objects=1)
    before = retrieval_recall(model, processor, evaluation, batch_size=8)
    trainer = ViltTrainer(
        model=model, args=trainer_args(tmp_path, max_steps=300, per_device_train_batch_size=16, learning_rate=1e-3),
        train_dataset=IndexedExamples(train), data_collator=task_collator("retrieval", processor, num_negatives=7),
        task="retrieval", retrieval_eval_dataset=evaluation, processor=processor)
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_num_images"] == 16
    assert after["eval_rsum"] > before["rsum"] + 0.75, (before, after)


def _pretraining_run(tmp_path, max_steps, checkpointing_steps=None, resume_from=None):
    torch.manual_seed(0)
    data = data_args("pretrain")
    processor = build_vilt_processor(data, patch_size=16)
    dataset = IndexedExamples(make_vilt_captions_dataset(8, image_size=SIZE))
    model = ViltForPreTraining(ViltConfig(**TINY_MODEL, max_position_embeddings=20, max_image_length=10,
                                          hidden_dropout_prob=0.1, pretraining_objectives=["mlm", "itm", "wpa"]))
    optimizer = create_vilt_optimizer(model, learning_rate=1e-3)
    scheduler = create_vilt_scheduler(optimizer, 6)
    sampler = EpochShuffleSampler(len(dataset), seed=0)
    loader = DataLoader(dataset, batch_size=3, sampler=sampler, drop_last=True,
                        collate_fn=task_collator("pretrain", processor, seed=0),
                        generator=torch.Generator().manual_seed(0))
    accelerator = Accelerator(cpu=True)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    config = LoopConfig(max_steps=max_steps, max_grad_norm=1.0, checkpointing_steps=checkpointing_steps,
                        output_dir=str(tmp_path), resume_from_checkpoint=resume_from, progress_bar=False)
    return train_loop(accelerator, model, optimizer, loader, config, scheduler=scheduler, sampler=sampler,
                      loss_step=vilt_loss_step)


def test_accelerate_resume_gives_the_same_losses(tmp_path, fresh_accelerate_state):
    # 8 captions in batches of 3: an epoch ends after 2 steps, so the resumed run also crosses an epoch boundary.
    uninterrupted = _pretraining_run(tmp_path / "a", max_steps=5)
    AcceleratorState._reset_state(reset_partial_state=True)
    first = _pretraining_run(tmp_path / "b", max_steps=3, checkpointing_steps=3)
    AcceleratorState._reset_state(reset_partial_state=True)
    resumed = _pretraining_run(tmp_path / "b", max_steps=5, resume_from=str(tmp_path / "b" / "checkpoint-3"))
    assert len(uninterrupted) == 5 and first == uninterrupted[:3]
    assert resumed == pytest.approx(uninterrupted, rel=1e-6, abs=1e-7)
    assert len(set(round(v, 4) for v in uninterrupted)) > 1  # the losses move


def _help_text(capsys, main) -> str:
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def _load_script(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), SCRIPTS / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script, expected", [
    ("train_vilt.py", ["--task", "'pretrain', 'vqa', 'nlvr2', 'retrieval'", "--train_annotations_file",
                       "--head_lr_multiplier", "--model_name_or_path", "the pretraining heads are dropped",
                       "official 0.98"]),
    ("train_vilt_accelerate.py", ["--task", "--resume_from_checkpoint", "--mixed_precision", "--num_negatives",
                                  "--vit_checkpoint", "Karpathy"]),
])
def test_scripts_help_explains_every_argument(capsys, script, expected):
    text = _help_text(capsys, _load_script(script).main)
    for needle in expected:
        assert needle in text, needle
    # every option of ours has its own text: an option without help would show only "(default: ...)"
    assert "--max-text-length MAX_TEXT_LENGTH Text length" in text


def test_demo_help_explains_every_argument(capsys):
    from dataclasses import fields

    from detrvilt.training.vilt.demo import ViltDemoArguments, main

    for item in fields(ViltDemoArguments):
        assert len(item.metadata.get("help", "")) > 10, item.name
    text = _help_text(capsys, main)
    assert "--compare_from_scratch" in text and "same fine-tuning steps" in " ".join(text.split())
    assert "--pretrain_steps" in text and "--vqa_train_questions" in text


def test_every_vilt_argument_has_help():
    from dataclasses import fields

    from detrvilt.training.vilt.arguments import (
        ViltAccelerateArguments,
        ViltDataArguments,
        ViltModelArguments,
        ViltTrainingArguments,
    )

    for cls in (ViltModelArguments, ViltDataArguments, ViltAccelerateArguments):
        for item in fields(cls):
            assert len(item.metadata.get("help", "")) > 10, f"{cls.__name__}.{item.name}"
    defaults = {"head_lr_multiplier": 10.0, "learning_rate": 1e-4, "weight_decay": 0.01, "adam_beta2": 0.98,
                "adam_epsilon": 1e-8, "warmup_steps": 0.1}
    for item in fields(ViltTrainingArguments):
        if item.name in defaults:  # the official values, said in the help
            assert item.default == defaults[item.name] and "official" in item.metadata["help"], item.name


def test_vilt_demo_runs_end_to_end_on_a_tiny_budget(tmp_path):
    from detrvilt.training.vilt.demo import ViltDemoArguments, run_vilt_demo

    args = ViltDemoArguments(output_dir=str(tmp_path / "demo"), pretrain_steps=2, finetune_steps=3,
                             hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=64,
                             batch_size=4, caption_images=8, vqa_train_questions=16, vqa_eval_questions=6,
                             pointing_images=4, num_threads=1, compare_from_scratch=True)
    result = run_vilt_demo(args)
    assert result["pretrain"]["steps"] == 2 and result["vqa"]["steps"] == 3 and result["vqa"]["pretrained"]
    assert result["vqa_from_scratch"]["steps"] == 3  # the same fine-tuning budget
    assert result["pretraining_gain_points"] == pytest.approx(
        100 * (result["vqa"]["vqa_score"] - result["vqa_from_scratch"]["vqa_score"]))
    assert 0 <= result["pretrain"]["pointing_accuracy"] <= 1 and result["pretrain"]["pointing_words"] > 0
    assert 0 <= result["vqa"]["vqa_score"] <= 1 and 0 <= result["majority_baseline"]["vqa_score"] <= 1
    assert len(result["questions"]) == 5 and all(len(q["top_answers"]) == 3 for q in result["questions"])
    assert Path(result["picture"]).stat().st_size > 1000
    assert Path(result["alignment_picture"]).stat().st_size > 1000  # drawn from the pretrained model
    assert isinstance(result["pretrained_model"], ViltForPreTraining)
    saved = json.loads((tmp_path / "demo" / "vilt_demo_results.json").read_text())
    assert saved["margin_points"] == pytest.approx(result["margin_points"])
    assert isinstance(result["model"], ViltForQuestionAnswering) and result["processor"].max_length == 24


def test_a_new_model_starts_from_a_local_timm_vit_checkpoint(tmp_path):
    from safetensors.torch import save_file
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(img_size=SIZE, patch_size=16, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0,
                            num_classes=0)
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(tmp_path / "vit.safetensors"))
    model = build_vilt_model(model_args(vit_checkpoint=str(tmp_path / "vit.safetensors")), data_args("pretrain"))
    embeddings = model.vilt.embeddings
    torch.testing.assert_close(embeddings.patch_projection.weight, vit.patch_embed.proj.weight)
    torch.testing.assert_close(model.vilt.encoder.layers[1].mlp.fc2.weight, vit.blocks[1].mlp.fc2.weight)
    with pytest.raises(ValueError, match="not a file"):
        build_vilt_model(model_args(vit_checkpoint=str(tmp_path / "missing.pth")), data_args("pretrain"))
