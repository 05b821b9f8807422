"""The pieces of the pretraining study (benchmarks/vilt_pretraining.py): the synthetic captions' groundings and
truth, the token-masking switch, the study's plan, resume and tables, and word-patch pointing on a model whose plan
is known; a tiny end-to-end study in the slow tier."""

import json

import numpy as np
import pytest
import torch

from detrvilt.data import default_vilt_tokenizer
from detrvilt.data.vilt.collators import ViltMLMCollator
from detrvilt.data.vilt.synthetic import (
    SCENE_COLOURS,
    SceneObject,
    caption_groundings,
    caption_holds,
    make_vilt_pointing_examples,
    synthetic_scene,
)
from detrvilt.training.vilt.arguments import ViltDataArguments
from detrvilt.training.vilt.pretraining_study import (
    PretrainingStudyArguments,
    _add_run,
    _merge,
    mean_and_range,
    planned_runs,
    run_study,
    study_tables,
)
from detrvilt.training.vilt.recipes import build_vilt_processor


def processor(size: int, max_text_length: int):
    return build_vilt_processor(ViltDataArguments(shortest_edge=size, max_text_length=max_text_length), patch_size=16)


def test_every_synthetic_caption_is_true_of_its_scene_and_rarely_of_another():
    scenes = [synthetic_scene(0, i, 96) for i in range(300)]
    assert all(caption_holds(c, objects) for objects, captions in scenes for c in captions)
    others = [caption_holds(c, scenes[(i + 1) % 300][0]) for i, (_, captions) in enumerate(scenes) for c in captions]
    assert np.mean(others) < 0.05  # ITM negatives are nearly always false (measured 0.6% on 3,000 scenes)


def test_caption_holds_reads_counts_relations_and_inventories():
    red = SceneObject("circle", "red", "small", (10, 10, 30, 30))
    cyan = SceneObject("square", "cyan", "large", (50, 10, 80, 40))
    scene = [red, cyan]
    assert caption_holds("a red circle left of a cyan square", scene)
    assert not caption_holds("a red circle right of a cyan square", scene)
    assert not caption_holds("two red circles left of a cyan square", scene)
    assert caption_holds("a red circle and a cyan square", scene)
    assert not caption_holds("a red circle", scene)  # an inventory names every group
    with pytest.raises(ValueError, match="not a caption phrase"):
        caption_holds("a purple circle", scene)


def test_groundings_name_single_objects_only():
    red = SceneObject("circle", "red", "small", (10, 10, 30, 30))
    cyans = [SceneObject("square", "cyan", "large", (50, 10, 80, 40)), SceneObject("square", "cyan", "small",
                                                                                      (50, 50, 70, 70))]
    found = caption_groundings("a red circle left of two cyan squares", [red, *cyans])
    assert found == [(1, "red", red.box), (2, "circle", red.box)]
    assert caption_groundings("two cyan squares", [red, *cyans]) == []
    examples = make_vilt_pointing_examples(20, seed=1, image_size=96)
    assert examples and all(e["groundings"] for e in examples)
    for example in examples:
        words = example["text"].split()
        objects, _ = synthetic_scene(1, example["image_id"], 96)
        for position, word, box in example["groundings"]:
            assert words[position] == word
            named = [o for o in objects if o.box == box]
            assert len(named) == 1 and word in (named[0].colour, named[0].shape)


def test_grid_scenes_put_every_object_in_a_patch_of_its_own():
    from detrvilt.data.vilt.synthetic import random_scene, render_scene

    for index in range(50):
        objects = random_scene(np.random.default_rng([5, index]), 96, grid=16)
        cells = set()
        for obj in objects:
            x0, y0, x1, y1 = obj.box
            margin = 1 if obj.size == "large" else 3
            assert (x0 % 16, y0 % 16, x1 - x0, y1 - y0) == (margin, margin, 16 - 2 * margin, 16 - 2 * margin), obj
            assert (y0 // 16, x0 // 16) not in cells  # no two objects share a patch
            cells.add((y0 // 16, x0 // 16))
        image = np.asarray(render_scene(objects, 96))
        outside = np.ones((96, 96), dtype=bool)
        for obj in objects:
            outside[obj.box[1]:obj.box[3], obj.box[0]:obj.box[2]] = False
        assert (image[outside] == 40).all()  # every shape is drawn inside its box
    with pytest.raises(ValueError, match="grid"):
        random_scene(np.random.default_rng(0), 96, grid=64)


def test_two_colour_names_are_split_into_word_pieces():
    tokenizer = default_vilt_tokenizer()
    pieces = {colour: tokenizer.tokenize(colour) for colour in SCENE_COLOURS}
    assert sum(len(p) > 1 for p in pieces.values()) == 2, pieces  # what makes the masking ablation differ


def test_token_masking_masks_pieces_alone_and_whole_word_masking_never_does():
    text_processor = processor(64, 12)
    tokenizer = text_processor.tokenizer
    texts = ["magenta cyan magenta cyan"] * 200
    for whole_word, expect_split in ((True, False), (False, True)):
        collator = ViltMLMCollator(text_processor, mlm_probability=0.3, whole_word_masking=whole_word, seed=0)
        batch = collator.mask_texts(texts)
        encoding = tokenizer(texts, padding="max_length", max_length=12, truncation=True)
        split = 0
        for i, labels in enumerate(batch["labels"]):
            word_ids = encoding.word_ids(i)
            for word in set(word_ids) - {None}:
                targets = [bool(labels[t] != -100) for t, w in enumerate(word_ids) if w == word]
                split += any(targets) and not all(targets)
        assert (split > 0) == expect_split, (whole_word, split)


def _args(tmp_path, **overrides):
    settings = dict(output_dir=str(tmp_path), seeds="0,1", label_budgets="64,32", ablations="no_wpa,randaugment")
    settings.update(overrides)
    return PretrainingStudyArguments(**settings)


def test_study_plan_covers_every_row_once(tmp_path):
    args = _args(tmp_path)
    keys = [key for key, _ in planned_runs(args)]
    assert len(keys) == len(set(keys))
    assert args.budget_list == [32, 64]
    for seed in (0, 1):
        assert f"pretrain/full/seed{seed}" in keys and f"pretrain/no_wpa/seed{seed}" in keys
        assert f"pretrain/token_masking/seed{seed}" not in keys  # not asked for
        for budget in (32, 64):
            assert f"vqa/pretrained/n{budget}/seed{seed}" in keys and f"vqa/scratch/n{budget}/seed{seed}" in keys
        assert f"vqa/ablation_randaugment/n64/seed{seed}" in keys and f"nlvr2/scratch/seed{seed}" in keys
    # every fine-tuning comes after the pretraining it starts from
    for key, spec in planned_runs(args):
        if spec["kind"] != "pretrain" and spec["variant"]:
            assert keys.index(f"pretrain/{spec['variant']}/seed{spec['seed']}") < keys.index(key)
    with pytest.raises(ValueError, match="ablations"):
        _args(tmp_path, ablations="mpp")
    with pytest.raises(ValueError, match="label_budgets"):
        _args(tmp_path, label_budgets="8")
    assert _args(tmp_path, ablation_budget=32).ablation_budget == 32
    with pytest.raises(ValueError, match="ablation_budget"):
        _args(tmp_path, ablation_budget=48)


def test_study_tables_give_mean_and_range_and_flag_overlaps(tmp_path):
    args = _args(tmp_path, seeds="0,1,2", label_budgets="32", ablations="no_wpa", downstream="")
    runs = {}
    for seed, (pre, scratch) in enumerate([(0.60, 0.40), (0.70, 0.45), (0.65, 0.50)]):
        runs[f"vqa/pretrained/n32/seed{seed}"] = {"vqa_score": pre, "wall_seconds": 1.0}
        runs[f"vqa/scratch/n32/seed{seed}"] = {"vqa_score": scratch, "wall_seconds": 1.0}
        runs[f"pretrain/full/seed{seed}"] = {"itm_accuracy_matched": 0.9, "pointing_accuracy": 0.5,
                                             "train_seconds": 10.0}
    tables = study_tables({"runs": runs}, args)
    assert f"| 32 | {args.finetune_steps} | 65.0 (60.0-70.0) | 45.0 (40.0-50.0) | +20.0 | no |" in tables
    assert "| without WPA | - |" in tables  # rows not run yet show as '-'
    assert mean_and_range([0.5]) == "50.0" and mean_and_range([]) == "-"
    runs["vqa/scratch/n32/seed1"]["vqa_score"] = 0.61
    assert "| yes |" in study_tables({"runs": runs}, args)


def test_processes_sharing_an_output_folder_merge_their_runs(tmp_path):
    path = str(tmp_path / "results.json")
    _merge(path, lambda results: _add_run(results, "pretrain/full/seed0", {"seed": 0}))
    # another process (seed 1) writes its run in between: a merge re-reads the file instead of overwriting it
    other = json.loads((tmp_path / "results.json").read_text())
    other["runs"]["pretrain/full/seed1"] = {"seed": 1}
    (tmp_path / "results.json").write_text(json.dumps(other))
    merged = _merge(path, lambda results: _add_run(results, "vqa/scratch/n32/seed0", {"seed": 0}))
    assert sorted(merged["runs"]) == ["pretrain/full/seed0", "pretrain/full/seed1", "vqa/scratch/n32/seed0"]
    assert json.loads((tmp_path / "results.json").read_text()) == merged


def test_pointing_scores_of_a_real_model_are_in_range():
    from detrvilt import ViltConfig, ViltForPreTraining
    from detrvilt.training.vilt.metrics import wpa_pointing_scores

    torch.manual_seed(0)
    model = ViltForPreTraining(ViltConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=64, patch_size=16, image_size=96,
                                          max_position_embeddings=24))
    pair_processor = processor(96, 24)
    examples = make_vilt_pointing_examples(6, seed=1, image_size=96)
    result = wpa_pointing_scores(model, pair_processor, examples, batch_size=4,
                                 word_kinds={"colour": tuple(SCENE_COLOURS)})
    assert result["num_words"] == sum(len(e["groundings"]) for e in examples)
    assert 0 <= result["pointing_accuracy"] <= 1 and 0 < result["chance"] < 0.5
    assert 0 <= result["colour_pointing_accuracy"] <= 1
    for source in ("similarity", "attention"):  # the diagnostics point from the same words at the same boxes
        other = wpa_pointing_scores(model, pair_processor, examples, batch_size=4, source=source)
        assert other["num_words"] == result["num_words"] and other["chance"] == result["chance"]
        assert 0 <= other["pointing_accuracy"] <= 1
    with pytest.raises(ValueError, match="source"):
        wpa_pointing_scores(model, pair_processor, examples, source="gradient")
    punctuated = [{**examples[0], "text": examples[0]["text"] + "."}]  # "square." is two words to the tokenizer
    with pytest.raises(ValueError, match="do not match"):
        wpa_pointing_scores(model, pair_processor, punctuated)
    with pytest.raises(ValueError, match="empty"):
        wpa_pointing_scores(model, pair_processor, [])


@pytest.mark.slow
def test_a_tiny_study_runs_resumes_and_writes_its_tables(tmp_path):
    args = PretrainingStudyArguments(
        output_dir=str(tmp_path), seeds="0", label_budgets="32", ablations="no_wpa", pretrain_steps=4,
        caption_images=32, finetune_steps=3, nlvr2_train_pairs=32, nlvr2_steps=2, vqa_eval_questions=20,
        nlvr2_eval_pairs=10, pretrain_eval_images=10, pointing_images=10, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, image_size=64, batch_size=32)
    results = run_study(args)
    keys = [key for key, _ in planned_runs(args)]
    assert sorted(results["runs"]) == sorted(keys)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["runs"]["pretrain/full/seed0"]["steps"] == 4
    assert 0 <= saved["runs"]["vqa/pretrained/n32/seed0"]["vqa_score"] <= 1
    assert "by_question_type" in saved["runs"]["vqa/scratch/n32/seed0"]
    assert (tmp_path / "tables.md").read_text().startswith("Seeds 0;")
    assert not (tmp_path / "models" / "vqa-scratch-n32-seed0").exists()  # fine-tuned folders are not kept
    assert 0 <= saved["runs"]["pretrain/full/seed0"]["attention_pointing_accuracy"] <= 1
    saved["runs"]["vqa/scratch/n32/seed0"]["vqa_score"] = 0.123  # a finished run is not repeated
    del saved["runs"]["pretrain/no_wpa/seed0"]["similarity_pointing_accuracy"]  # as made before the diagnostics
    del saved["runs"]["pretrain/no_wpa/seed0"]["attention_pointing_accuracy"]
    (tmp_path / "results.json").write_text(json.dumps(saved))
    again = run_study(args)
    assert again["runs"]["vqa/scratch/n32/seed0"]["vqa_score"] == 0.123
    completed = again["runs"]["pretrain/no_wpa/seed0"]  # its diagnostics added from the kept model folder
    assert completed["steps"] == 4 and 0 <= completed["attention_pointing_accuracy"] <= 1
    assert "similarity_pointing_accuracy" in completed
