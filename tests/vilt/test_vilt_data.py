"""ViLT data: whole-word masking, collators, VQA targets, real-format loaders, bad input and synthetic sets."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import detrvilt
from detrvilt.data import (
    VQA_ANSWERS,
    ViltITMCollator,
    ViltMLMCollator,
    ViltNLVR2Collator,
    ViltRetrievalCollator,
    ViltVQACollator,
    build_answer_vocabulary,
    default_vilt_processor,
    default_vilt_tokenizer,
    label2id_from,
    load_karpathy_captions,
    load_nlvr2,
    load_vilt_dataset_from_disk,
    load_vqav2,
    make_vilt_captions_dataset,
    make_vilt_nlvr2_dataset,
    make_vilt_vqa_dataset,
    normalize_answer,
    retrieval_evaluation_batch,
    retrieval_evaluation_pairs,
    vqa_score,
    vqa_targets,
    whole_word_mask,
)

SENTENCES = [
    "the photographer captured unbelievable scenery near the waterfall",
    "a skateboarder performs extraordinary tricks",
    "two giraffes eating leaves from an acacia tree",
    "an unaccompanied child walks through the marketplace",
    "hello",
]


@pytest.fixture(scope="module")
def tokenizer():
    return default_vilt_tokenizer()


@pytest.fixture(scope="module")
def processor():
    return default_vilt_processor(size=64)  # small images keep the collator tests fast


def test_whole_word_masking_statistics(tokenizer):
    """Done means 2: 15% +- 2% of words, whole words, no special/padding, 80/10/10."""
    encoding = tokenizer(SENTENCES * 40, padding="max_length", max_length=40, truncation=True, return_tensors="pt")
    word_ids = [encoding.word_ids(i) for i in range(len(encoding["input_ids"]))]
    multi_piece = sum(1 for row in word_ids for w in set(row) - {None} if row.count(w) > 1)
    assert multi_piece > 0  # the sentences have words of several pieces
    generator = torch.Generator().manual_seed(0)
    words_total = words_masked = 0
    mask = rand = keep = 0
    special = torch.tensor(tokenizer.all_special_ids)
    for _ in range(25):
        masked, labels = whole_word_mask(encoding["input_ids"], word_ids, tokenizer, generator=generator)
        targets = labels != -100
        assert not torch.isin(encoding["input_ids"][targets], special).any()  # no special token or padding
        assert (encoding["attention_mask"][targets] == 1).all()
        assert torch.equal(labels[targets], encoding["input_ids"][targets])
        for i, row in enumerate(word_ids):
            for w in set(row) - {None}:
                positions = [t for t, x in enumerate(row) if x == w]
                flags = targets[i, positions]
                assert flags.all() or not flags.any(), "a word is masked in only some of its pieces"
                words_total += 1
                words_masked += int(flags.all())
        mask += int((masked[targets] == tokenizer.mask_token_id).sum())
        keep += int((masked[targets] == encoding["input_ids"][targets]).sum())
        rand += int(targets.sum()) - int((masked[targets] == tokenizer.mask_token_id).sum()) - int(
            (masked[targets] == encoding["input_ids"][targets]).sum())
        assert not torch.isin(masked[targets & (masked != tokenizer.mask_token_id) &
                                     (masked != encoding["input_ids"])], special).any()
    assert abs(words_masked / words_total - 0.15) < 0.02
    total = mask + rand + keep
    assert abs(mask / total - 0.8) < 0.03 and abs(rand / total - 0.1) < 0.03 and abs(keep / total - 0.1) < 0.03


def test_mlm_and_itm_collators(processor):
    data = make_vilt_captions_dataset(6, seed=1, image_size=64)
    examples = [data[i] for i in range(6)]
    batch = ViltMLMCollator(processor, seed=0)(examples)
    assert batch["labels"].shape == batch["input_ids"].shape == (6, 40)
    assert (batch["labels"] != -100).any()
    itm = ViltITMCollator(processor, seed=0)(examples)
    assert itm["itm_labels"].sum() == 3  # half of the pairs are negatives
    own = batch["pixel_values"]  # every example with its own image (no augmentation)
    for i in range(6):  # positives keep their own image, negatives get another one
        assert torch.equal(itm["pixel_values"][i], own[i]) == bool(itm["itm_labels"][i])
    assert torch.equal(itm["input_ids"], ViltITMCollator(processor, seed=0)(examples)["input_ids"])
    # nothing to swap with (one example, or one image's captions only): the pairs stay matched
    assert ViltITMCollator(processor)(examples[:1])["itm_labels"].tolist() == [1]
    same_image = [{**examples[0], "text": text} for text in ("a red circle", "two blue squares", "a circle")]
    assert ViltITMCollator(processor)(same_image)["itm_labels"].tolist() == [1, 1, 1]


def test_pretraining_collator_masks_only_matched_pairs_and_batches_are_seeded_by_content(processor):
    from detrvilt.data.vilt.collators import BatchSeededCollator, IndexedExamples, ViltPretrainingCollator

    data = IndexedExamples(make_vilt_captions_dataset(8, seed=2, image_size=64))
    collator = BatchSeededCollator(ViltPretrainingCollator(processor, mlm_probability=0.5), seed=3,
                                   return_indices=True)
    examples = [data[i] for i in (5, 1, 7, 2, 0, 3)]
    batch = collator(examples)
    assert batch["itm_labels"].sum() == 3 and batch["example_index"].tolist() == [5, 1, 7, 2, 0, 3]
    replaced = batch["itm_labels"] == 0
    assert (batch["labels"][replaced] == -100).all()  # MLM reads only texts paired with their own image
    assert (batch["labels"][~replaced] != -100).any()
    collator([data[i] for i in (4, 6)])  # another batch in between changes nothing for this one
    again = collator(examples)
    for key in ("input_ids", "labels", "itm_labels", "pixel_values"):
        assert torch.equal(again[key], batch[key]), key
    data.set_epoch(1)  # the next epoch masks differently
    assert not torch.equal(collator([data[i] for i in (5, 1, 7, 2, 0, 3)])["input_ids"], batch["input_ids"])
    with pytest.raises(ValueError, match="IndexedExamples"):
        collator([make_vilt_captions_dataset(2, image_size=64)[0]])


def test_collators_feed_the_models(processor):
    config = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                  max_image_length=-1, patch_size=32, image_size=64)
    captions = [make_vilt_captions_dataset(4, image_size=64)[i] for i in range(4)]
    model = detrvilt.ViltForPreTraining(detrvilt.ViltConfig(**config))
    assert torch.isfinite(model(**ViltMLMCollator(processor, seed=0)(captions)).loss)
    assert torch.isfinite(model(**ViltITMCollator(processor, seed=0)(captions)).loss)
    vqa = make_vilt_vqa_dataset(4, image_size=64)
    id2label = dict(enumerate(VQA_ANSWERS))
    vqa_model = detrvilt.ViltForQuestionAnswering(detrvilt.ViltConfig(**config, id2label=id2label))
    batch = ViltVQACollator(processor, label2id_from(id2label))([vqa[i] for i in range(4)])
    assert batch["labels"].shape == (4, len(VQA_ANSWERS)) and (batch["labels"].sum(1) == 1).all()
    assert torch.isfinite(vqa_model(**batch).loss)
    nlvr2 = make_vilt_nlvr2_dataset(2, image_size=64)
    nlvr2_batch = ViltNLVR2Collator(processor)([nlvr2[i] for i in range(2)])
    assert nlvr2_batch["pixel_values"].shape[:2] == (2, 2) and nlvr2_batch["labels"].tolist() == [1, 0]
    nlvr2_config = detrvilt.ViltConfig(**config, num_images=2, modality_type_vocab_size=3, num_labels=2)
    nlvr2_model = detrvilt.ViltForImagesAndTextClassification(nlvr2_config)
    assert torch.isfinite(nlvr2_model(**nlvr2_batch).loss)
    retrieval = ViltRetrievalCollator(processor, num_negatives=3, seed=0)(captions)
    assert retrieval["input_ids"].shape == (4, 4, 40) and retrieval["labels"].tolist() == [0, 0, 0, 0]
    assert torch.isfinite(detrvilt.ViltForImageAndTextRetrieval(detrvilt.ViltConfig(**config))(**retrieval).loss)
    retrieval_model = detrvilt.ViltForImageAndTextRetrieval(detrvilt.ViltConfig(**config)).eval()
    texts = [c["text"] for c in captions]
    evaluation = retrieval_evaluation_batch(processor, captions[0]["image"], texts)
    assert evaluation["input_ids"].shape == (1, 4, 40)
    with torch.no_grad():
        scores = retrieval_model(**evaluation).logits
        one = retrieval_model(**retrieval_evaluation_batch(processor, captions[0]["image"], texts[2:3])).logits
    assert scores.shape == (1, 4) and torch.allclose(scores[0, 2], one[0, 0], atol=1e-5)
    pairs = list(retrieval_evaluation_pairs(3, 5, chunk_size=2))
    expected = [(i, t) for i in range(3) for t in range(5)]
    assert len(pairs) == 9 and sorted((i, t) for i, ts in pairs for t in ts) == expected


def test_vqa_soft_scores_and_answer_vocabulary(tmp_path):
    """Done means 4: the official table, and id2label round-trips through a saved model."""
    assert [vqa_score(n) for n in range(7)] == [0.0, 0.3, 0.6, 0.9, 1.0, 1.0, 1.0]
    assert normalize_answer("Two ") == "2" and normalize_answer("a dog.") == "dog"
    assert normalize_answer("Yes!") == "yes"
    label2id = {"2": 0, "dog": 1, "yes": 2, "cat": 3}
    target = vqa_targets(["two", "2", "2", "dog", "yes", "yes", "yes", "yes", "yes", "bird"], label2id)
    assert torch.allclose(target, torch.tensor([0.9, 0.3, 1.0, 0.0]))
    id2label = build_answer_vocabulary([["yes"] * 3, ["no", "yes"], ["blue"]], min_count=2)
    assert id2label == {0: "yes"}
    id2label = build_answer_vocabulary([["yes"] * 3, ["no", "No"], ["blue"]], min_count=1)
    assert id2label == {0: "yes", 1: "no", 2: "blue"}
    config = detrvilt.ViltConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                 id2label=id2label)
    detrvilt.ViltForQuestionAnswering(config).save_pretrained(tmp_path)
    loaded = detrvilt.ViltForQuestionAnswering.from_pretrained(tmp_path)
    assert loaded.config.id2label == id2label
    assert label2id_from(loaded.config.id2label) == {"yes": 0, "no": 1, "blue": 2}


def _save_image(path, colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (48, 32), colour).save(path)


def test_karpathy_loader_round_trip_and_bad_input(tmp_path):
    _save_image(tmp_path / "val2014" / "a.jpg")
    _save_image(tmp_path / "val2014" / "b.jpg")
    images = [
        {"filepath": "val2014", "filename": "a.jpg", "split": "test", "cocoid": 1,
         "sentences": [{"raw": "A red square."}, {"raw": "red block"}]},
        {"filepath": "val2014", "filename": "b.jpg", "split": "train", "cocoid": 2, "sentences": [{"raw": "red"}]},
        {"filepath": "val2014", "filename": "missing.jpg", "split": "train", "cocoid": 3,
         "sentences": [{"raw": "x"}]},
        {"filepath": "val2014", "filename": "b.jpg", "split": "val", "cocoid": 4, "sentences": [{"raw": " "}]},
    ]
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    with pytest.raises(ValueError, match="missing.jpg"):
        load_karpathy_captions(path, tmp_path)
    with pytest.warns(UserWarning, match="skipped 2"):
        data, skipped = load_karpathy_captions(path, tmp_path, on_error="skip", return_skipped=True)
    assert skipped == {"missing_image": ["image 'missing.jpg' (id 3)"], "empty_caption": ["image 'b.jpg' (id 4)"]}
    assert data["image_id"] == [1, 2] and data["captions"][0] == ["A red square.", "red block"]
    assert data["split"] == ["test", "train"]
    with pytest.raises(ValueError, match="empty"):
        load_karpathy_captions(path, tmp_path, splits=["val"])
    data.save_to_disk(tmp_path / "hub")
    again = load_vilt_dataset_from_disk(tmp_path / "hub", "captions")
    assert again["captions"] == data["captions"]
    with pytest.raises(ValueError, match="question"):
        load_vilt_dataset_from_disk(tmp_path / "hub", "vqa")


def test_vqav2_loader_round_trip_and_bad_input(tmp_path, processor):
    for image_id in (9, 10):
        _save_image(tmp_path / "val2014" / f"COCO_val2014_{image_id:012d}.jpg")
    questions = {"data_subtype": "val2014", "questions": [
        {"image_id": 9, "question": "What colour is it?", "question_id": 90},
        {"image_id": 10, "question": "Is it red?", "question_id": 100},
        {"image_id": 10, "question": "How many?", "question_id": 101},
        {"image_id": 11, "question": "Where?", "question_id": 110},
    ]}
    annotations = {"annotations": [
        {"question_id": 90, "image_id": 9, "answers": [{"answer": "red", "answer_id": k} for k in range(10)]},
        {"question_id": 100, "image_id": 10, "answers": [{"answer": "yes"}] * 7 + [{"answer": "no"}] * 3},
        {"question_id": 101, "image_id": 10, "answers": []},
        {"question_id": 110, "image_id": 11, "answers": [{"answer": "here"}]},
    ]}
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "a.json").write_text(json.dumps(annotations))
    with pytest.raises(ValueError, match="question_id 101.*no answers"):
        load_vqav2(tmp_path / "q.json", tmp_path / "val2014", tmp_path / "a.json")
    with pytest.warns(UserWarning):
        data, skipped = load_vqav2(tmp_path / "q.json", tmp_path / "val2014", tmp_path / "a.json", on_error="skip",
                                   return_skipped=True)
    assert skipped == {"no_answers": ["question_id 101"], "missing_image": ["question_id 110"]}
    assert data["question_id"] == [90, 100] and data["answers"][1].count("yes") == 7
    id2label = build_answer_vocabulary(data["answers"], min_count=3)
    batch = ViltVQACollator(processor, label2id_from(id2label))([data[0], data[1]])
    assert batch["labels"][1, label2id_from(id2label)["no"]] == pytest.approx(0.9)
    with pytest.warns(UserWarning, match="missing_image"):  # test split: no annotations, so no answers needed
        assert len(load_vqav2(tmp_path / "q.json", tmp_path / "val2014", on_error="skip")) == 3
    with pytest.raises(ValueError, match="no answers"):
        ViltVQACollator(processor, {"yes": 0})([{"image": data[0]["image"], "question": "q?", "answers": []}])


def test_nlvr2_loader_round_trip_and_bad_input(tmp_path, processor):
    for name in ("dev-1-0-img0.png", "dev-1-0-img1.png", "dev-2-0-img0.png"):
        _save_image(tmp_path / "dev" / name)
    lines = [{"identifier": "dev-1-0-0", "sentence": "Both images are red.", "label": "True"},
             {"identifier": "dev-1-0-1", "sentence": "One image is blue.", "label": "False"},
             {"identifier": "dev-2-0-0", "sentence": "Only one image.", "label": "True"}]
    (tmp_path / "dev.json").write_text("\n".join(json.dumps(line) for line in lines))
    with pytest.raises(ValueError, match="dev-2-0-0.*two images"):
        load_nlvr2(tmp_path / "dev.json", tmp_path / "dev")
    with pytest.warns(UserWarning, match="skipped 1"):
        data = load_nlvr2(tmp_path / "dev.json", tmp_path / "dev", on_error="skip")
    assert data["label"] == [1, 0] and data["identifier"] == ["dev-1-0-0", "dev-1-0-1"]
    batch = ViltNLVR2Collator(processor)([data[0], data[1]])
    assert batch["pixel_values"].shape[:2] == (2, 2)
    with pytest.raises(ValueError, match="identifier='x'.*two images"):
        ViltNLVR2Collator(processor)([{"identifier": "x", "image_0": data[0]["image_0"], "text": "t", "label": 1}])
    data.save_to_disk(tmp_path / "hub")
    assert load_vilt_dataset_from_disk(tmp_path / "hub", "nlvr2")["text"] == data["text"]


def test_missing_image_and_empty_caption_in_collators(tmp_path, processor):
    with pytest.raises(ValueError, match="image_id=7.*nothing.png"):
        ViltMLMCollator(processor)([{"image": {"path": str(tmp_path / "nothing.png"), "bytes": None},
                                     "text": "a caption", "image_id": 7}])
    with pytest.raises(ValueError, match="image_id=8.*non-empty"):
        ViltMLMCollator(processor)([{"image": np.zeros((8, 8, 3), np.uint8), "text": "  ", "image_id": 8}])


def test_synthetic_sets_deterministic_and_consistent():
    a, b = make_vilt_vqa_dataset(12, seed=3, image_size=64), make_vilt_vqa_dataset(12, seed=3, image_size=64)
    assert a["question"] == b["question"] and np.array_equal(np.asarray(a[5]["image"]), np.asarray(b[5]["image"]))
    assert make_vilt_vqa_dataset(12, seed=4, image_size=64)["question"] != a["question"]
    assert make_vilt_vqa_dataset(5, seed=3, image_size=64)["question"] == a["question"][:5]
    assert all(answers[0] in VQA_ANSWERS for answers in make_vilt_vqa_dataset(60, image_size=64)["answers"])
    kinds = set(make_vilt_vqa_dataset(60, image_size=64)["question_type"])
    assert kinds == {"count", "existence", "colour", "shape", "position"}
    captions = make_vilt_captions_dataset(8, seed=0, image_size=64)
    assert all(text and text == caps[0] for text, caps in zip(captions["text"], captions["captions"], strict=True))
    nlvr2 = make_vilt_nlvr2_dataset(8, image_size=64)
    assert sum(nlvr2["label"]) == 4
