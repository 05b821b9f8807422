"""transformers pipelines on detrvilt models: ViLT's `visual-question-answering` and `image-text-matching` (custom
pipelines saved with the model), and transformers' own `object-detection` and `image-segmentation` (panoptic) on
DETR. Each gives what the model and the processor's post-processing give by hand; batched calls give the same answers
as one at a time; saved folders run the pipelines in a process that cannot import detrvilt."""

import json

import numpy as np
import pytest
import torch
from clean_process import run_without_detrvilt
from conftest import detection_labels, padded_pair, tiny_detr_config
from PIL import Image
from transformers import pipeline
from vilt_testing import randomize_, tiny_vilt_config

import detrvilt
from detrvilt.data import default_vilt_processor
from detrvilt.hub import save_for_hub
from detrvilt.modeling.vilt.pipeline_vilt import ViltImageTextMatchingPipeline, ViltVisualQuestionAnsweringPipeline

ANSWERS = ["yes", "no", "red", "blue", "two"]
QUESTIONS = ["what colour is the square?", "is there a circle?", "how many shapes?"]
# Three sizes, so that batched calls pad images of different shapes.
IMAGE_SIZES = ((50, 70), (90, 40), (64, 64))
SEGMENTATION_TINY = dict(d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=8,
                         decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=8)

# Runs every pipeline from the saved folders, with trust_remote_code only.
CLEAN_SCRIPT = """
    from transformers import pipeline
    root = sys.argv[1]
    images = [root + f"/image{i}.png" for i in range(3)]
    questions = json.load(open(root + "/questions.json"))
    vqa = pipeline("visual-question-answering", model=root + "/vqa", trust_remote_code=True)
    report["vqa"] = vqa(images, questions, top_k=3, batch_size=2)
    report["itm"] = pipeline("image-text-matching", model=root + "/itm", trust_remote_code=True)(images[0], questions)
    report["retrieval"] = pipeline("image-text-matching", model=root + "/retrieval",
                                   trust_remote_code=True)(images[0], questions)
    detector = pipeline("object-detection", model=root + "/detr", trust_remote_code=True)
    report["detections"] = detector(images[2], threshold=0.0)
    report["classes"] = {name: type(p).__module__ + "." + type(p).__name__ for name, p in
                         (("vqa", vqa), ("vqa_model", vqa.model), ("detector_model", detector.model))}
"""
SEGMENTATION_SCRIPT = """
    import numpy
    from transformers import pipeline
    root = sys.argv[1]
    segmenter = pipeline("image-segmentation", model=root + "/panoptic", trust_remote_code=True)
    report["class"] = type(segmenter.model).__module__ + "." + type(segmenter.model).__name__
    report["segments"] = [{"label": s["label"], "area": int((numpy.array(s["mask"]) > 0).sum())}
                          for s in segmenter(root + "/image2.png", threshold=0.0, overlap_mask_area_threshold=0.1)]
"""


def _images(root=None):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)) for size in IMAGE_SIZES]
    if root is not None:
        for i, image in enumerate(images):
            image.save(root / f"image{i}.png")
    return images


def _vilt_config(**overrides):
    return tiny_vilt_config(vocab_size=30522, max_position_embeddings=40, id2label=dict(enumerate(ANSWERS)),
                            label2id={a: i for i, a in enumerate(ANSWERS)}, **overrides)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    processor = default_vilt_processor(shortest_edge=64)
    models = {
        "vqa": detrvilt.ViltForQuestionAnswering(_vilt_config()),
        "itm": detrvilt.ViltForPreTraining(_vilt_config(pretraining_objectives=["itm"])),
        "retrieval": detrvilt.ViltForImageAndTextRetrieval(_vilt_config()),
    }
    for seed, (name, model) in enumerate(models.items()):
        randomize_(model, seed=seed).eval()  # scores spread out, so the top-k order means something
        save_for_hub(model, processor, root / name)
    torch.manual_seed(0)
    detr_processor = detrvilt.DetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})
    # With auxiliary losses (the default): in evaluation without labels the models leave the per-layer outputs out.
    models["detr"] = detrvilt.DetrForObjectDetection(tiny_detr_config(auxiliary_loss=True)).eval()
    models["panoptic"] = detrvilt.DetrForSegmentation(detrvilt.DetrSegmentationConfig(
        backbone="resnet18", num_labels=5, auxiliary_loss=True, **SEGMENTATION_TINY)).eval()
    with torch.no_grad():  # real classes rather than "no object", so that segments come out of random weights
        models["panoptic"].detr.class_labels_classifier.bias[-1] = -4.0
    save_for_hub(models["detr"], detr_processor, root / "detr")
    save_for_hub(models["panoptic"], detr_processor, root / "panoptic")
    (root / "questions.json").write_text(json.dumps(QUESTIONS))
    return root, models, processor, detr_processor, _images(root)


def _vqa_by_hand(model, processor, image, question, top_k):
    with torch.no_grad():
        logits = model(**processor(images=image, text=question, return_tensors="pt")).logits[0]
    scores, indices = logits.sigmoid().topk(top_k)
    return [(ANSWERS[i], s) for s, i in zip(scores.tolist(), indices.tolist(), strict=True)]


def _same_answers(actual, expected, atol=1e-5):
    assert [a["answer"] for a in actual] == [e[0] for e in expected]
    np.testing.assert_allclose([a["score"] for a in actual], [e[1] for e in expected], atol=atol, rtol=0)


def test_vqa_pipeline_answers_as_the_model_does_one_at_a_time_and_batched(folders):
    root, models, processor, _, images = folders
    vqa = pipeline("visual-question-answering", model=str(root / "vqa"), trust_remote_code=True)
    assert type(vqa).__name__ == "ViltVisualQuestionAnsweringPipeline"
    for image, question in zip(images, QUESTIONS, strict=True):
        _same_answers(vqa(image, question, top_k=3), _vqa_by_hand(models["vqa"], processor, image, question, 3))
    one_at_a_time = [vqa(image, question, top_k=4) for image, question in zip(images, QUESTIONS, strict=True)]
    for batch_size in (2, 3):
        batched = vqa(images, QUESTIONS, top_k=4, batch_size=batch_size)
        for got, expected in zip(batched, one_at_a_time, strict=True):
            _same_answers(got, [(e["answer"], e["score"]) for e in expected])
    # Other input forms: dicts, one image for several questions; the default top_k is 5 (all answers here).
    as_dicts = vqa([{"image": images[0], "question": q} for q in QUESTIONS])
    one_image = vqa(images[0], QUESTIONS)
    assert len(as_dicts) == 3 and all(len(answers) == 5 for answers in as_dicts)
    for got, expected in zip(one_image, as_dicts, strict=True):
        _same_answers(got, [(e["answer"], e["score"]) for e in expected])


def test_vqa_pipeline_rejects_bad_arguments(folders):
    _, models, processor, _, images = folders
    vqa = ViltVisualQuestionAnsweringPipeline(model=models["vqa"], processor=processor, device=-1)
    with pytest.raises(ValueError, match="top_k must be a positive integer, got 0"):
        vqa(images[0], "what?", top_k=0)
    with pytest.raises(ValueError, match="question is missing"):
        vqa(images[0])
    with pytest.raises(ValueError, match="got 3 images and 2 values of question"):
        vqa(images, QUESTIONS[:2])
    with pytest.raises(ValueError, match="question must be a non-empty string"):
        vqa(images[0], "  ")
    with pytest.raises(TypeError, match="unexpected arguments \\['topk'\\]; this pipeline takes top_k, timeout"):
        vqa(images[0], "what?", topk=2)
    with pytest.raises(ValueError, match="needs a ViLT processor"):
        ViltVisualQuestionAnsweringPipeline(model=models["vqa"], device=-1)(images[0], "what?")


def test_image_text_matching_scores_pairs_with_the_itm_and_the_retrieval_heads(folders):
    root, models, processor, _, images = folders
    for name in ("itm", "retrieval"):
        matcher = pipeline("image-text-matching", model=str(root / name), trust_remote_code=True)
        assert type(matcher.model).__name__ == type(models[name]).__name__
        scores = matcher(images[1], QUESTIONS)
        assert [s["text"] for s in scores] == QUESTIONS
        with torch.no_grad():
            encoding = processor(images=[images[1]] * 3, text=QUESTIONS, return_tensors="pt")
            if name == "itm":
                expected = models[name](**encoding).itm_logits.softmax(-1)[:, 1]
            else:
                expected = models[name](**encoding).logits[:, 0]
        np.testing.assert_allclose([s["score"] for s in scores], expected.tolist(), atol=1e-5, rtol=0)
        pairs = list(zip(images, QUESTIONS, strict=True))
        one_at_a_time = [matcher(image, text) for image, text in pairs]
        batched = matcher([image for image, _ in pairs], QUESTIONS, batch_size=3)
        assert [b["text"] for b in batched] == QUESTIONS
        np.testing.assert_allclose([b["score"] for b in batched], [o["score"] for o in one_at_a_time], atol=1e-5)
    with pytest.raises(TypeError, match="needs a ViltForPreTraining .* got ViltForQuestionAnswering"):
        ViltImageTextMatchingPipeline(model=models["vqa"], processor=processor, device=-1)(images[0], "a square")


def test_pipeline_save_pretrained_carries_the_pipeline_and_the_processor(folders, tmp_path):
    _, models, processor, _, images = folders
    vqa = ViltVisualQuestionAnsweringPipeline(model=models["vqa"], processor=processor, device=-1)
    vqa.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["custom_pipelines"]["visual-question-answering"]["impl"] == (
        "pipeline_vilt.ViltVisualQuestionAnsweringPipeline")
    assert {"pipeline_vilt.py", "heads_vilt.py", "processor_config.json"} <= {p.name for p in tmp_path.iterdir()}
    reloaded = pipeline("visual-question-answering", model=str(tmp_path), trust_remote_code=True)
    _same_answers(reloaded(images[0], QUESTIONS[0], top_k=2),
                  [(a["answer"], a["score"]) for a in vqa(images[0], QUESTIONS[0], top_k=2)])


def test_object_detection_pipeline_on_detr(folders):
    root, models, _, detr_processor, images = folders
    # With detrvilt installed, trust_remote_code=False runs the installed classes. (Given no value, transformers'
    # AutoVideoProcessor, which every pipeline tries, asks whether to trust the image processor's remote code.)
    detector = pipeline("object-detection", model=str(root / "detr"), trust_remote_code=False)
    assert type(detector.model) is detrvilt.DetrForObjectDetection
    assert type(detector.image_processor) is detrvilt.DetrImageProcessor
    image = images[0]
    found = detector(image, threshold=0.0)
    with torch.no_grad():
        encoding = detr_processor(image, return_tensors="pt")
        outputs = models["detr"](encoding["pixel_values"], pixel_mask=encoding["pixel_mask"])
    expected = detr_processor.post_process_object_detection(outputs, 0.0, [(image.height, image.width)])[0]
    assert len(found) == len(expected["scores"]) == models["detr"].config.num_queries
    np.testing.assert_allclose([d["score"] for d in found], expected["scores"].tolist(), atol=1e-6)
    assert [d["label"] for d in found] == [models["detr"].config.id2label[i] for i in expected["labels"].tolist()]
    # transformers' box dict holds integer pixels
    assert [d["box"]["xmin"] for d in found] == [int(b[0]) for b in expected["boxes"].tolist()]
    # transformers' collation concatenates images, so batches need images of one size (here: three crops)
    crops = [image.crop((0, 0, 64, 48)), image.crop((6, 2, 70, 50)), image.crop((3, 1, 67, 49))]
    one_at_a_time = [detector(crop, threshold=0.0) for crop in crops]
    batched = detector(crops, threshold=0.0, batch_size=3)
    for got, expected in zip(batched, one_at_a_time, strict=True):
        assert [d["label"] for d in got] == [d["label"] for d in expected]
        np.testing.assert_allclose([d["score"] for d in got], [d["score"] for d in expected], atol=1e-5)


def test_image_segmentation_pipeline_runs_panoptic_detr(folders):
    root, models, _, detr_processor, images = folders
    segmenter = pipeline("image-segmentation", model=str(root / "panoptic"), trust_remote_code=False)
    assert type(segmenter.model) is detrvilt.DetrForSegmentation
    image = images[2]
    # The pipeline passes threshold, mask_threshold and overlap_mask_area_threshold to the post-processing. (Its
    # default overlap of 0.5 leaves no segment of this random model: every query's own mask covers most pixels.)
    options = dict(threshold=0.0, mask_threshold=0.5, overlap_mask_area_threshold=0.1)
    segments = segmenter(image, **options)
    with torch.no_grad():
        encoding = detr_processor(image, return_tensors="pt")
        outputs = models["panoptic"](encoding["pixel_values"], pixel_mask=encoding["pixel_mask"])
    expected = detr_processor.post_process_panoptic_segmentation(outputs, target_sizes=[(image.height, image.width)],
                                                                 **options)[0]
    official = detr_processor.post_process_panoptic_segmentation(outputs, threshold=0.0,
                                                                 target_sizes=[(image.height, image.width)])[0]
    assert [s["area"] for s in expected["segments_info"]] != [s["area"] for s in official["segments_info"]]
    assert len(segments) == len(expected["segments_info"]) > 0
    for segment, info in zip(segments, expected["segments_info"], strict=True):
        assert segment["label"] == models["panoptic"].config.id2label[info["label_id"]]
        assert segment["score"] == pytest.approx(info["score"], abs=1e-6)
        mask = np.array(segment["mask"]) > 0
        assert mask.shape == (image.height, image.width)
        assert (mask == (expected["segmentation"] == info["id"]).numpy()).all()
    crops = [image.crop((0, 0, 60, 60)), image.crop((4, 4, 64, 64))]
    one_at_a_time = [segmenter(crop, **options) for crop in crops]
    batched = segmenter(crops, batch_size=2, **options)
    for got, expected in zip(batched, one_at_a_time, strict=True):
        assert [(s["label"], round(s["score"], 5)) for s in got] == [(s["label"], round(s["score"], 5))
                                                                     for s in expected]
        assert all((np.array(g["mask"]) == np.array(e["mask"])).all() for g, e in zip(got, expected, strict=True))


def test_batched_detr_pipelines_with_auxiliary_outputs(folders):
    """A pipeline splits every list of a batched output by image: a list per decoder layer (`auxiliary_outputs`)
    broke it. The model returns them only with labels, in training or when asked (transformers' DETR: with labels)."""
    root, models, _, _, images = folders
    assert models["detr"].config.auxiliary_loss
    model = detrvilt.DetrForObjectDetection(tiny_detr_config(auxiliary_loss=True)).eval()
    pixel_values, pixel_mask = padded_pair()
    with torch.no_grad():
        assert model(pixel_values, pixel_mask).auxiliary_outputs is None
        assert len(model(pixel_values, pixel_mask, output_auxiliary_outputs=True).auxiliary_outputs) == 2
        with_labels = model(pixel_values, pixel_mask, labels=detection_labels())
        assert len(with_labels.auxiliary_outputs) == 2 and "loss_ce_1" in with_labels.loss_dict
        # Training: Trainer's compute_loss_func=DetrLoss calls the model without labels and needs them.
        model.train()
        assert len(model(pixel_values, pixel_mask).auxiliary_outputs) == 2
        assert model(pixel_values, pixel_mask, output_auxiliary_outputs=False).auxiliary_outputs is None
    detector = pipeline("object-detection", model=str(root / "detr"), trust_remote_code=False)
    crops = [images[0].crop((0, 0, 64, 48)), images[1].crop((0, 0, 64, 48)), images[2].crop((0, 0, 64, 48))]
    batched = detector(crops, threshold=0.0, batch_size=3)
    for got, expected in zip(batched, [detector(crop, threshold=0.0) for crop in crops], strict=True):
        assert len(got) == models["detr"].config.num_queries
        assert [d["label"] for d in got] == [d["label"] for d in expected]
        np.testing.assert_allclose([d["score"] for d in got], [d["score"] for d in expected], atol=1e-5)


def _panoptic_outputs(mask_logits, class_logits):
    q = len(class_logits)
    return {"logits": torch.as_tensor(class_logits, dtype=torch.float32)[None],
            "pred_masks": torch.as_tensor(mask_logits, dtype=torch.float32)[None],
            "pred_boxes": torch.tensor([0.5, 0.5, 1.0, 1.0]).expand(1, q, 4)}


def test_panoptic_overlap_threshold_drops_segments_mostly_covered_by_others():
    # Query 0 owns the left half. Query 1's own mask is the whole 8x8 image, but query 0 wins the left half and
    # query 2 (stronger logits) wins columns 4-6: query 1 keeps only column 7, 8 of its 64 own pixels (1/8).
    masks = torch.full((3, 8, 8), -5.0)
    masks[0, :, :4] = 9
    masks[1] = 2
    masks[2, :, 4:7] = 8
    sure = [10.0, 0.0, 0.0]
    outputs = _panoptic_outputs(masks, [sure, [0.0, 10.0, 0.0], sure])
    processor = detrvilt.DetrImageProcessor()
    official = processor.post_process_panoptic_segmentation(outputs)[0]
    assert [(s["label_id"], s["area"]) for s in official["segments_info"]] == [(0, 32), (1, 8), (0, 24)]
    strict = processor.post_process_panoptic_segmentation(outputs, mask_threshold=0.5,
                                                          overlap_mask_area_threshold=0.5)[0]
    # Query 1 goes (8 / 64 <= 0.5); its column goes to the next-highest mask logit (a tie at -5 between queries 0
    # and 2: the first wins). Query 0 then wins 40 pixels for 32 own ones; query 2 wins its 24 of 24.
    assert [(s["label_id"], s["area"]) for s in strict["segments_info"]] == [(0, 40), (0, 24)]
    loose = processor.post_process_panoptic_segmentation(outputs, overlap_mask_area_threshold=0.1)[0]
    assert [s["area"] for s in loose["segments_info"]] == [32, 8, 24]  # 8 / 64 > 0.1 keeps query 1
    # mask_threshold changes what counts as a query's own mask: above sigmoid(2), query 1's own mask is empty.
    empty = processor.post_process_panoptic_segmentation(outputs, mask_threshold=0.95,
                                                         overlap_mask_area_threshold=0.1)[0]
    assert [s["area"] for s in empty["segments_info"]] == [40, 24]
    for name, value in (("mask_threshold", 1.5), ("overlap_mask_area_threshold", -0.1)):
        with pytest.raises(ValueError, match=f"{name} must be a number in \\[0, 1\\], got {value}"):
            processor.post_process_panoptic_segmentation(outputs, **{name: value})


def test_pipelines_run_from_the_folders_without_detrvilt(folders):
    root, models, processor, _, images = folders
    report = run_without_detrvilt(CLEAN_SCRIPT, [root], cwd=root)
    assert all(cls.startswith("transformers_modules.") for cls in report["classes"].values()), report["classes"]
    vqa = ViltVisualQuestionAnsweringPipeline(model=models["vqa"], processor=processor, device=-1)
    for got, image, question in zip(report["vqa"], images, QUESTIONS, strict=True):
        _same_answers(got, [(a["answer"], a["score"]) for a in vqa(image, question, top_k=3)])
    for name in ("itm", "retrieval"):
        local = ViltImageTextMatchingPipeline(model=models[name], processor=processor, device=-1)(images[0], QUESTIONS)
        np.testing.assert_allclose([s["score"] for s in report[name]], [s["score"] for s in local], atol=1e-5)
    local_detections = pipeline("object-detection", model=str(root / "detr"), trust_remote_code=False)(
        images[2], threshold=0.0)
    assert [d["label"] for d in report["detections"]] == [d["label"] for d in local_detections]


def test_panoptic_pipeline_runs_from_the_folder_without_detrvilt(folders):
    root, _, _, _, _ = folders
    report = run_without_detrvilt(SEGMENTATION_SCRIPT, [root], cwd=root)
    assert report["class"].startswith("transformers_modules.")
    local_segments = pipeline("image-segmentation", model=str(root / "panoptic"), trust_remote_code=False)(
        str(root / "image2.png"), threshold=0.0, overlap_mask_area_threshold=0.1)
    assert len(report["segments"]) > 0
    assert report["segments"] == [{"label": s["label"], "area": int((np.array(s["mask"]) > 0).sum())}
                                  for s in local_segments]
