"""The pictures (`detrvilt.viz`) on tiny random models: attention maps come from the models' own outputs, sum to 1
over the valid region, leave padding at exactly zero, land on the right cells, and every picture kind writes a PNG of
the size its layout promises; `scripts/visualize.py` on saved folders and its `--help`."""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_detr_config
from PIL import Image
from vilt_testing import tiny_vilt_config

from detrvilt import DetrForObjectDetection, DetrImageProcessor, ViltForPreTraining, ViltForQuestionAnswering
from detrvilt.data.vilt.tokenizer import default_vilt_processor
from detrvilt.viz.cli import VisualizeArguments
from detrvilt.viz.common import DEFAULT_PANEL_INCHES
from detrvilt.viz.detr.demo import detr_demo_pictures
from detrvilt.viz.detr.pictures import (
    decoder_attention_grid,
    detect,
    draw_decoder_attention,
    draw_detections,
    draw_encoder_attention,
    encoder_attention_grid,
    run_detr,
)
from detrvilt.viz.detr.query_boxes import box_colours, draw_query_box_distribution
from detrvilt.viz.vilt.alignment import draw_word_patch_alignment, word_patch_alignment

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import visualize  # noqa: E402

# A wide and a tall image: padded together, each leaves padding cells in the other's direction.
SIZES = ((60, 100), (110, 50))
DPI = 40


def random_images(sizes=SIZES, seed=0):
    generator = np.random.default_rng(seed)
    return [Image.fromarray(generator.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


@pytest.fixture(scope="module")
def detr():
    torch.manual_seed(0)
    model = DetrForObjectDetection(tiny_detr_config(num_queries=6)).eval()
    processor = DetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 128})
    return model, processor


@pytest.fixture(scope="module")
def detr_inference(detr):
    model, processor = detr
    return run_detr(model, processor, random_images())


@pytest.fixture(scope="module")
def vilt():
    torch.manual_seed(0)
    config = tiny_vilt_config(vocab_size=30522, max_position_embeddings=40, num_hidden_layers=2)
    model = ViltForPreTraining(config).eval()
    processor = default_vilt_processor(size={"shortest_edge": 64})
    return model, processor


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def assert_png_matches_figure(figure, path, columns: int):
    """The PNG is exactly the figure's size times the dpi, and as wide as `columns` panels; a palette image."""
    width, height = figure.get_size_inches()
    assert png_size(path) == (round(width * DPI), round(height * DPI))
    with Image.open(path) as image:
        assert image.mode == "P"  # quantized to keep committed pictures small
    assert png_size(path)[0] == round(columns * DEFAULT_PANEL_INCHES * DPI)


def assert_distribution_on_valid(grid: torch.Tensor, valid: torch.Tensor):
    assert grid.shape == valid.shape
    assert (~valid).any(), "the test needs padding cells"
    torch.testing.assert_close(grid[valid].sum(), torch.tensor(1.0), atol=1e-5, rtol=0)
    assert grid[~valid].abs().max() == 0  # padding never gets weight
    assert (grid >= 0).all()


# ---------------------------------------------------------------------------------------------------------------
# DETR maps


def test_run_detr_records_sizes_of_a_padded_batch(detr_inference):
    inference = detr_inference
    assert [inference.original_size(i) for i in range(2)] == list(SIZES)
    assert inference.resized_size(0) == (64, 106) and inference.resized_size(1) == (128, 58)  # shortest edge 64
    assert tuple(inference.pixel_mask.shape) == (2, 128, 106)
    assert inference.feature_mask.shape[1:] == (4, 4)  # resnet18 stride 32, rounded up
    assert inference.stride() == (32.0, 26.5)


@pytest.mark.parametrize("index", [0, 1])
@pytest.mark.parametrize("head", [None, 0, 3])
def test_encoder_maps_sum_to_one_over_valid_cells_and_skip_padding(detr_inference, index, head):
    height, width = SIZES[index]
    for point in [(0, 0), (width / 2, height / 2), (width - 1, height - 1)]:
        grid = encoder_attention_grid(detr_inference, index, point, head=head)
        assert_distribution_on_valid(grid, detr_inference.feature_mask[index])


@pytest.mark.parametrize("index", [0, 1])
def test_decoder_maps_sum_to_one_over_valid_cells_and_skip_padding(detr_inference, index):
    for query in range(6):
        grid = decoder_attention_grid(detr_inference, index, query, layer=0, head=1)
        assert_distribution_on_valid(grid, detr_inference.feature_mask[index])
        grid = decoder_attention_grid(detr_inference, index, query)
        assert_distribution_on_valid(grid, detr_inference.feature_mask[index])


def test_maps_are_the_models_own_attention_rows(detr_inference):
    outputs = detr_inference.outputs
    width = detr_inference.feature_mask.shape[2]
    row, column = detr_inference.feature_cell(1, (49, 109))  # bottom-right pixel of the tall image
    assert (row, column) == (3, 2)  # its valid cells: 4 rows (128 / 32) and 3 columns of 26.5 pixels (58 wide)
    expected = outputs.encoder_attentions[-1][1, :, row * width + column].mean(0).view(4, 4)
    torch.testing.assert_close(encoder_attention_grid(detr_inference, 1, (49, 109)), expected, atol=0, rtol=0)
    expected = outputs.cross_attentions[-1][0, 2, 5].view(4, 4)
    torch.testing.assert_close(decoder_attention_grid(detr_inference, 0, 5, head=2), expected, atol=0, rtol=0)
    assert detr_inference.feature_cell(0, (0, 0)) == (0, 0)


def test_maps_on_the_image_have_the_original_size(detr_inference):
    for index, size in enumerate(SIZES):
        grid = decoder_attention_grid(detr_inference, index, 0)
        heat = detr_inference.on_image(index, grid)
        assert heat.shape == size and np.isfinite(heat).all() and heat.min() >= 0


def test_points_outside_the_image_are_refused(detr_inference):
    with pytest.raises(ValueError, match="outside the image"):
        encoder_attention_grid(detr_inference, 0, (100, 10))
    with pytest.raises(ValueError, match="layer"):
        encoder_attention_grid(detr_inference, 0, (1, 1), layer=5)
    with pytest.raises(ValueError, match="query_index"):
        decoder_attention_grid(detr_inference, 0, 6)


def test_detect_agrees_with_post_processing_and_keeps_query_indices(detr, detr_inference):
    _, processor = detr
    outputs = detr_inference.outputs
    expected = processor.post_process_object_detection(outputs, threshold=0.0, target_sizes=list(SIZES))
    found = detect(detr_inference, processor, threshold=0.0)
    for image, (mine, theirs) in enumerate(zip(found, expected, strict=True)):
        assert len(mine["scores"]) == 6
        torch.testing.assert_close(mine["scores"], theirs["scores"])
        torch.testing.assert_close(mine["boxes"], theirs["boxes"])
        query_scores = outputs.logits[image].softmax(-1)[:, :-1].max(-1).values
        torch.testing.assert_close(query_scores[mine["query_indices"]], mine["scores"])
    assert len(detect(detr_inference, processor, threshold=1.0)[0]["scores"]) == 0
    assert len(detect(detr_inference, processor, threshold=0.0, top_k=2)[1]["query_indices"]) == 2


# ---------------------------------------------------------------------------------------------------------------
# ViLT maps


def test_word_patch_alignment_maps_sum_to_one_and_skip_padding(vilt):
    model, processor = vilt
    captions = ["a red circle beside two squarelets", "dogs"]
    alignments = word_patch_alignment(model, processor, random_images(), captions)
    first, second = alignments
    assert first.words == ["a", "red", "circle", "beside", "two", "squarelets"]  # pieces merged
    assert second.words == ["dogs"]
    for alignment in alignments:
        assert alignment.word_grids.shape == (len(alignment.words), *alignment.patch_mask.shape)
        for grid in alignment.word_grids:
            assert_distribution_on_valid(grid, alignment.patch_mask)
        cls = alignment.cls_grid
        assert cls[~alignment.patch_mask].abs().max() == 0 and 0 < cls.sum() <= 1 + 1e-6
        assert alignment.on_image(alignment.word_grids[0]).shape == alignment.image.shape[:2]
    pieces = word_patch_alignment(model, processor, random_images()[:1], captions[:1], merge_word_pieces=False)[0]
    assert len(pieces.words) > len(first.words) and any(w.startswith("##") for w in pieces.words)


def test_alignment_is_the_models_own_transport_plan(vilt):
    """The pictured plan gives the same OT distance as the model's WPA objective on the same pair, and the [CLS]
    map is the model's last attention row."""
    model, processor = vilt
    images, captions = random_images(), ["a red circle", "two blue squares and more"]
    alignments = word_patch_alignment(model, processor, images, captions)
    encoding = processor(images=[np.asarray(i) for i in images], text=captions)
    with torch.no_grad():
        outputs = model(**encoding, itm_labels=torch.ones(2, dtype=torch.long), output_attentions=True)
    torch.testing.assert_close(torch.tensor([a.distance for a in alignments]), outputs.wpa_distance)
    text_length = encoding["input_ids"].shape[1]
    cls_to_patches = outputs.attentions[-1][1, :, 0, text_length + 1:].mean(0)  # (L,) in grid order (eval)
    torch.testing.assert_close(alignments[1].cls_grid.flatten(), cls_to_patches)
    # the diagnostic maps: "red" (token 2 of the first caption) attends to the patches as the last layer says, and
    # its similarity is one minus the plan's cosine cost
    red = alignments[0]
    assert red.words[1] == "red"
    torch.testing.assert_close(red.attention_grids[1].flatten(),
                               outputs.attentions[-1][0, :, 2, text_length + 1:].mean(0))
    with torch.no_grad():
        hidden = model.vilt(**encoding).last_hidden_state
    word, patches = hidden[0, 2], hidden[0, text_length + 1:]
    valid = red.patch_mask.flatten()
    assert not valid.all()  # the first image is padded in this batch: its padding patches get 0
    expected = torch.nn.functional.cosine_similarity(word[None], patches, dim=-1)
    torch.testing.assert_close(red.similarity_grids[1].flatten()[valid], expected[valid], atol=1e-5, rtol=0)
    assert red.similarity_grids[1].flatten()[~valid].abs().max() == 0


# ---------------------------------------------------------------------------------------------------------------
# Pictures: a PNG of the promised size for each kind


def test_predictions_picture(tmp_path, detr, detr_inference):
    model, processor = detr
    detections = detect(detr_inference, processor, threshold=0.0, top_k=3)
    references = [{"boxes": [[5, 5, 40, 30]], "labels": [1]}, {"boxes": [], "labels": []}]
    path = tmp_path / "sub" / "predictions.png"
    figure = draw_detections(detr_inference.images, detections, path, model.config.id2label, references, dpi=DPI)
    assert_png_matches_figure(figure, path, columns=2)
    assert len(figure.axes[0].patches) == 4  # 3 detections + 1 reference
    with pytest.raises(ValueError, match="one entry per image"):
        draw_detections(detr_inference.images, detections[:1], None)


def test_encoder_attention_picture(tmp_path, detr):
    model, processor = detr
    path = tmp_path / "encoder.png"
    figure = draw_encoder_attention(model, processor, random_images()[1], [(10, 10), (40, 100)], path, dpi=DPI)
    assert_png_matches_figure(figure, path, columns=3)  # the image and one panel per point
    # panels follow the tall image's shape (110 / 50, kept at most 2), plus the title strips (0.25 + 0.4 inch)
    assert png_size(path)[1] == round((DEFAULT_PANEL_INCHES * 2 + 0.65) * DPI)
    with pytest.raises(ValueError, match="points"):
        draw_encoder_attention(model, processor, random_images()[1], [], path)


def test_decoder_attention_picture(tmp_path, detr):
    model, processor = detr
    path = tmp_path / "decoder.png"
    figure = draw_decoder_attention(model, processor, random_images()[0], path, threshold=0.0, max_objects=4, dpi=DPI)
    assert_png_matches_figure(figure, path, columns=4)
    assert len(figure.axes) == 8  # attention above, box below, for each of the 4 objects
    figure = draw_decoder_attention(model, processor, random_images()[0], None, threshold=1.0, max_objects=2)
    assert "none above" in figure.get_suptitle()  # falls back to the best-scoring queries


def test_query_box_picture_and_colours(tmp_path, detr):
    model, processor = detr
    path = tmp_path / "queries.png"
    rows = [{"image": image} for image in random_images(SIZES * 2)]  # dataset rows
    figure = draw_query_box_distribution(model, processor, rows, path, queries=[0, 2, 5], batch_size=3, dpi=DPI)
    width, height = figure.get_size_inches()
    assert png_size(path) == (round(width * DPI), round(height * DPI)) and png_size(path)[0] == 3 * 1.8 * DPI
    assert len(figure.axes[0].collections[0].get_offsets()) == 4  # one centre per image
    colours = box_colours(torch.tensor([[0.02, 0.02], [0.9, 0.2], [0.2, 0.9]]))
    assert colours[0].argmax() == 1 and colours[1].argmax() == 0 and colours[2].argmax() == 2  # green, red, blue


def test_word_patch_alignment_picture(tmp_path, vilt):
    model, processor = vilt
    qa_model = ViltForQuestionAnswering(model.config).eval()  # any model with a .vilt
    path = tmp_path / "wpa.png"
    figure = draw_word_patch_alignment(qa_model, processor, random_images()[0], "a red circle", path, dpi=DPI)
    assert_png_matches_figure(figure, path, columns=4)  # image, [CLS], 3 words -> 2 rows of 4
    assert len([axis for axis in figure.axes if axis.images]) == 5


def test_demo_pictures(tmp_path, detr):
    model, processor = detr
    paths = detr_demo_pictures(model, processor, random_images(), str(tmp_path), threshold=0.0, dpi=DPI)
    assert [Path(p).name for p in paths] == ["detr_predictions.png", "detr_encoder_attention.png",
                                             "detr_decoder_attention.png", "detr_query_boxes.png"]
    assert all(png_size(p)[0] > 0 for p in paths)


# ---------------------------------------------------------------------------------------------------------------
# scripts/visualize.py


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        visualize.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in dataclasses.fields(VisualizeArguments):
        help_text = option.metadata.get("help", "")
        assert help_text, f"--{option.name} has no help"
        assert f"--{option.name}" in text and " ".join(help_text.split()[:4]) in text


def test_script_on_saved_folders(tmp_path, detr, vilt):
    image_path = tmp_path / "photo.png"
    random_images()[1].save(image_path)
    model, processor = detr
    model.save_pretrained(tmp_path / "detr")
    processor.save_pretrained(tmp_path / "detr")
    out = tmp_path / "out"
    paths = visualize.main(["--model_dir", str(tmp_path / "detr"), "--images", str(image_path), "--output_dir",
                            str(out), "--points", "10,20", "30,100", "--threshold", "0", "--dpi", str(DPI)])
    assert sorted(Path(p).name for p in paths) == ["photo_decoder_attention.png", "photo_encoder_attention.png",
                                                   "predictions.png", "query_boxes.png"]
    assert png_size(out / "photo_encoder_attention.png")[0] == 3 * DEFAULT_PANEL_INCHES * DPI  # 2 points
    with pytest.raises(ValueError, match="do not apply"):
        visualize.main(["--model_dir", str(tmp_path / "detr"), "--images", str(image_path), "--kinds",
                        "word_patch_alignment", "--output_dir", str(tmp_path / "never")])

    vilt_model, vilt_processor = vilt
    vilt_model.save_pretrained(tmp_path / "vilt")
    vilt_processor.save_pretrained(tmp_path / "vilt")
    paths = visualize.main(["--model_dir", str(tmp_path / "vilt"), "--images", str(image_path), "--output_dir",
                            str(out), "--captions", "a tall picture", "--dpi", str(DPI)])
    assert [Path(p).name for p in paths] == ["photo_word_patch_alignment.png"] and Path(paths[0]).is_file()
    with pytest.raises(ValueError, match="captions"):
        visualize.main(["--model_dir", str(tmp_path / "vilt"), "--images", str(image_path), "--output_dir",
                        str(tmp_path / "never")])
    assert not (tmp_path / "never").exists()
