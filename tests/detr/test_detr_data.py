"""DETR data: the paper's augmentations keep boxes on their pixels, the synthetic shapes set, COCO folders in and out,
the with_transform pipeline and the collator feeding the model."""

import io

import numpy as np
import pytest
import torch
from conftest import tiny_detr_config
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch.utils.data import DataLoader
from torchvision import tv_tensors

import detrvilt
from detrvilt.data import (
    DetrDataCollator,
    DetrTrainAugmentation,
    count_dropped,
    load_coco_detection,
    make_shapes_dataset,
    prepare_detection_dataset,
    write_coco_detection,
)
from detrvilt.modeling.detr.image_processing_detr import get_resize_size, prepare_detection_annotation

COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255)])


def painted_canvas(height: int, width: int, rng: np.random.Generator):
    """A black image with one box per cell of a 3x2 grid, each painted in its own colour; class id = colour index."""
    image = np.zeros((height, width, 3), np.uint8)
    boxes = []
    cell_h, cell_w = height // 2, width // 3
    for k in range(6):
        top, left = (k // 3) * cell_h, (k % 3) * cell_w
        w, h = rng.integers(cell_w // 4, cell_w - 8), rng.integers(cell_h // 4, cell_h - 8)
        x0, y0 = left + 4 + rng.integers(0, cell_w - 8 - w + 1), top + 4 + rng.integers(0, cell_h - 8 - h + 1)
        image[y0:y0 + h, x0:x0 + w] = COLOURS[k]
        boxes.append([float(x0), float(y0), float(w), float(h)])
    return image, {"bbox": boxes, "category": list(range(6))}


def painted_region(image: torch.Tensor, k: int):
    """Tight xyxy box of the pixels closer than 100 (per channel) to colour k, or None; and their count."""
    distance = (image.permute(1, 2, 0).numpy().astype(np.int32) - COLOURS[k]).__abs__().max(axis=-1)
    ys, xs = np.nonzero(distance < 100)
    if len(xs) == 0:
        return None, 0
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64), len(xs)


def augment_painted(augmentation, height, width, seed):
    rng = np.random.default_rng(seed)
    image, objects = painted_canvas(height, width, rng)
    target = prepare_detection_annotation(objects, (height, width))
    return augmentation(torch.from_numpy(image).permute(2, 0, 1), target)


@pytest.mark.parametrize("shape", [(160, 240), (300, 120)])
def test_augmented_boxes_stay_on_their_pixels_and_crops_are_counted(shape):
    augmentation = DetrTrainAugmentation.scaled(160, generator=torch.Generator().manual_seed(0))
    crops = 0
    for seed in range(16):
        image, target = augment_painted(augmentation, *shape, seed)
        boxes = target["boxes"]
        assert isinstance(boxes, tv_tensors.BoundingBoxes) and tuple(boxes.canvas_size) == tuple(image.shape[-2:])
        kept = target["class_labels"].tolist()
        assert len(kept) + target["dropped"]["cropped"] == 6
        crops += target["dropped"]["cropped"]
        for box, k in zip(boxes.as_subclass(torch.Tensor).numpy(), kept, strict=True):
            region, _ = painted_region(image, k)
            assert region is not None, f"seed {seed}: box of class {k} kept but its pixels are gone"
            assert np.abs(region - box).max() <= 2.0, f"seed {seed}, class {k}: box {box} vs painted {region}"
        for k in set(range(6)) - set(kept):
            assert painted_region(image, k)[1] <= 3, f"seed {seed}: class {k} removed but still visible"
    assert crops > 0  # the crop branch did remove boxes in these draws


def test_paper_recipe_on_a_photo_sized_canvas():
    augmentation = DetrTrainAugmentation(generator=torch.Generator().manual_seed(1))
    for seed in range(3):
        image, target = augment_painted(augmentation, 480, 640, seed)
        height, width = image.shape[-2:]
        assert max(height, width) <= 1333 and (min(height, width) in range(480, 801, 32) or max(height, width) >= 1332)
        boxes = target["boxes"].as_subclass(torch.Tensor).numpy()
        for box, k in zip(boxes, target["class_labels"].tolist(), strict=True):
            region, _ = painted_region(image, k)
            assert np.abs(region - box).max() <= 2.0


def test_output_sizes_stay_within_the_configured_scales():
    augmentation = DetrTrainAugmentation.scaled(160, generator=torch.Generator().manual_seed(2))
    assert augmentation.scales[0] == 96 and augmentation.scales[-1] == 160 and augmentation.max_size == 267
    seen_short, seen_limited = set(), 0
    for height, width in [(160, 160), (60, 300), (300, 100), (500, 700)] * 15:
        image = torch.zeros(3, height, width, dtype=torch.uint8)
        target = prepare_detection_annotation({"bbox": [[1, 1, 20, 20]], "category": [0]}, (height, width))
        out, out_target = augmentation(image, target)
        h, w = out.shape[-2:]
        assert tuple(out_target["boxes"].canvas_size) == (h, w)
        assert max(h, w) <= augmentation.max_size
        limited = max(h, w) >= augmentation.max_size - 1
        assert min(h, w) in augmentation.scales or limited, (height, width, h, w)
        seen_short.add(min(h, w))
        seen_limited += limited
    assert len(seen_short) >= 6 and seen_limited > 0


def test_augmentation_is_reproducible_and_checks_its_input():
    first = augment_painted(DetrTrainAugmentation.scaled(160, generator=torch.Generator().manual_seed(9)), 160, 240, 0)
    again = augment_painted(DetrTrainAugmentation.scaled(160, generator=torch.Generator().manual_seed(9)), 160, 240, 0)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1]["boxes"], again[1]["boxes"])
    target = prepare_detection_annotation({"bbox": [[1, 1, 5, 5]], "category": [0]}, (20, 20))
    with pytest.raises(TypeError, match="XYXY"):
        DetrTrainAugmentation()(torch.zeros(3, 20, 20), {**target, "boxes": target["boxes"].as_subclass(torch.Tensor)})
    with pytest.raises(ValueError, match="canvas_size"):
        DetrTrainAugmentation()(torch.zeros(3, 30, 20), target)
    with pytest.raises(ValueError, match="crop_size"):
        DetrTrainAugmentation(crop_size=(600, 384))


# ---------------------------------------------------------------------------------------------------------------
# The synthetic shapes


@pytest.fixture(scope="module")
def shapes():
    return make_shapes_dataset(60, seed=11)


def test_shapes_are_deterministic_per_seed_and_prefix_stable(shapes):
    again = make_shapes_dataset(60, seed=11)
    prefix = make_shapes_dataset(5, seed=11)
    other = make_shapes_dataset(5, seed=12)
    for i in range(5):
        assert np.array_equal(np.asarray(shapes[i]["image"]), np.asarray(again[i]["image"]))
        assert np.array_equal(np.asarray(shapes[i]["image"]), np.asarray(prefix[i]["image"]))
        assert shapes[i]["objects"]["bbox"] == prefix[i]["objects"]["bbox"]
    assert shapes[:]["objects"] == again[:]["objects"]
    assert any(not np.array_equal(np.asarray(shapes[i]["image"]), np.asarray(other[i]["image"])) for i in range(5))


def test_shapes_content_is_varied_and_consistent(shapes):
    assert shapes.features["objects"]["category"].feature.names == ["circle", "square", "triangle"]
    counts, sides, classes, overlaps = [], [], set(), 0
    for row in shapes:
        image, objects = row["image"], row["objects"]
        assert image.size == (128, 128) and image.mode == "RGB"
        boxes = np.asarray(objects["bbox"], dtype=np.float64).reshape(-1, 4)
        counts.append(len(boxes))
        assert (boxes[:, 2:] >= 1).all() and (boxes[:, :2] >= 0).all() and (boxes[:, :2] + boxes[:, 2:] <= 128).all()
        assert all(area <= w * h for area, (_, _, w, h) in zip(objects["area"], boxes, strict=True))
        sides += np.sqrt(boxes[:, 2] * boxes[:, 3]).tolist()
        classes.update(objects["category"])
        xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1)
        for a in range(len(xyxy)):
            for b in range(a + 1, len(xyxy)):
                overlaps += (min(xyxy[a, 2], xyxy[b, 2]) > max(xyxy[a, 0], xyxy[b, 0])
                             and min(xyxy[a, 3], xyxy[b, 3]) > max(xyxy[a, 1], xyxy[b, 1]))
        # Objects stand out from the background: the box interior differs from the rest of the image.
        pixels = np.asarray(image, dtype=np.float32)
        for x, y, w, h in boxes.astype(int):
            assert np.abs(pixels[y:y + h, x:x + w].mean((0, 1)) - pixels.mean((0, 1))).max() > 3
    assert min(counts) == 0 and max(counts) == 5
    assert classes == {0, 1, 2}
    assert min(sides) < 0.15 * 128 and max(sides) > 0.4 * 128  # small to large
    assert overlaps > 0
    varied = make_shapes_dataset(6, seed=0, image_size=(96, 160), shapes=("cross", "circle"), max_objects=2)
    assert len({row["image"].size for row in varied}) > 1
    assert varied.features["objects"]["category"].feature.names == ["cross", "circle"]
    with pytest.raises(ValueError, match="shapes"):
        make_shapes_dataset(1, shapes=("hexagon",))


def test_shapes_as_coco_folder_round_trip_and_pycocotools(shapes, tmp_path, capsys):
    subset = shapes.select(range(20))
    images_dir, annotation_file = write_coco_detection(subset, tmp_path, split="val")
    assert annotation_file == tmp_path / "annotations" / "instances_val.json"
    loaded = load_coco_detection(images_dir, annotation_file)
    assert loaded.features["objects"]["category"].feature.names == ["circle", "square", "triangle"]
    for original, reloaded in zip(subset, loaded, strict=True):
        assert np.array_equal(np.asarray(original["image"]), np.asarray(reloaded["image"]))
        for key in ("bbox", "category", "area", "iscrowd"):
            assert original["objects"][key] == reloaded["objects"][key]
    ground_truth = COCO(str(annotation_file))
    detections = [{"image_id": row["image_id"], "category_id": c, "bbox": b, "score": 1.0}
                  for row in subset for b, c in zip(row["objects"]["bbox"], row["objects"]["category"], strict=True)]
    evaluation = COCOeval(ground_truth, ground_truth.loadRes(detections), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[1] == pytest.approx(1.0)  # AP@0.5 of the ground truth itself


# ---------------------------------------------------------------------------------------------------------------
# COCO folders


def write_folder(tmp_path, annotations, categories=({"id": 1, "name": "cat"}, {"id": 3, "name": "dog"})):
    import json

    (tmp_path / "images").mkdir(exist_ok=True)
    Image.new("RGB", (40, 30), (10, 20, 30)).save(tmp_path / "images" / "a.png")
    content = {"images": [{"id": 5, "file_name": "a.png", "width": 40, "height": 30}],
               "annotations": annotations, "categories": list(categories)}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(content))
    return tmp_path / "images", path


def test_coco_loader_reads_and_rejects_inconsistent_files(tmp_path):
    good = [{"id": 1, "image_id": 5, "category_id": 3, "bbox": [1, 2, 10, 5], "area": 40.0, "iscrowd": 0},
            {"id": 2, "image_id": 5, "category_id": 1, "bbox": [0, 0, 4, 4], "area": 16.0, "iscrowd": 1}]
    dataset = load_coco_detection(*write_folder(tmp_path, good))
    row = dataset[0]
    assert row["image"].size == (40, 30) and row["image_id"] == 5
    assert row["objects"]["category"] == [3, 1] and row["objects"]["iscrowd"] == [0, 1]
    assert detrvilt.data.coco_id2label(tmp_path / "instances.json") == {0: "N/A", 1: "cat", 2: "N/A", 3: "dog"}

    unknown = [{**good[0], "category_id": 2}]
    with pytest.raises(ValueError, match=r"annotation id 1 \(image 'a.png'\) has the unknown category id 2"):
        load_coco_detection(*write_folder(tmp_path, unknown))
    short = [{**good[0], "bbox": [1, 2, 3]}]
    with pytest.raises(ValueError, match=r"annotation id 1 .* bbox of 4 numbers .*\[1, 2, 3\]"):
        load_coco_detection(*write_folder(tmp_path, short))
    orphan = [{**good[0], "image_id": 99}]
    with pytest.raises(ValueError, match="unknown image id 99"):
        load_coco_detection(*write_folder(tmp_path, orphan))
    images_dir, annotation_file = write_folder(tmp_path, good)
    (images_dir / "a.png").unlink()
    with pytest.raises(ValueError, match="not found.*a.png"):
        load_coco_detection(images_dir, annotation_file)


def test_corrupt_file_in_a_dataset_is_named_when_read(tmp_path):
    good = [{"id": 1, "image_id": 5, "category_id": 3, "bbox": [1, 2, 10, 5], "area": 40.0}]
    images_dir, annotation_file = write_folder(tmp_path, good)
    dataset = load_coco_detection(images_dir, annotation_file)
    (images_dir / "a.png").write_bytes(b"\x89PNG garbage")
    prepared = prepare_detection_dataset(dataset, detrvilt.DetrImageProcessor())
    with pytest.raises(ValueError, match=r"image_id 5: .*file '.*a\.png'.*cannot decode"):
        prepared[0]


# ---------------------------------------------------------------------------------------------------------------
# The pipeline into the model


def test_pipeline_collator_and_model(shapes):
    processor = detrvilt.DetrImageProcessor(size={"shortest_edge": 128, "longest_edge": 213}, num_labels=3)
    train = prepare_detection_dataset(shapes, processor, DetrTrainAugmentation.scaled(128))
    loader = DataLoader(train, batch_size=4, collate_fn=DetrDataCollator(), shuffle=False)
    batch = next(iter(loader))
    assert batch["pixel_values"].shape[:2] == (4, 3) and batch["pixel_mask"].dtype == torch.int64
    for mask, label in zip(batch["pixel_mask"], batch["labels"], strict=True):
        height, width = label["size"].tolist()
        assert int(mask.sum()) == height * width and bool(mask[:height, :width].all())
        assert ((label["boxes"] > 0) & (label["boxes"] <= 1)).all()
    model = detrvilt.DetrForObjectDetection(tiny_detr_config(num_labels=3))
    output = model(**batch)
    assert torch.isfinite(output.loss)
    assert set(count_dropped(batch["labels"])) == {"crowd", "degenerate", "nonfinite", "outside", "cropped"}


def test_validation_pipeline_round_trips_the_dataset_boxes(shapes):
    """No augmentation: labels of the padded batch, post-processed at `orig_size`, give back the dataset's boxes."""
    processor = detrvilt.DetrImageProcessor(size={"shortest_edge": 200, "longest_edge": 333})
    varied = make_shapes_dataset(4, seed=3, image_size=(80, 150), min_objects=1)
    batch = DetrDataCollator()([prepare_detection_dataset(varied, processor)[i] for i in range(4)])
    assert len({tuple(label["size"].tolist()) for label in batch["labels"]}) > 1
    for row, label in zip(varied, batch["labels"], strict=True):
        logits = torch.full((1, len(label["boxes"]), 4), -5.0)
        logits[0, torch.arange(len(label["boxes"])), label["class_labels"]] = 5.0
        (result,) = processor.post_process_object_detection(
            {"logits": logits, "pred_boxes": label["boxes"][None]}, threshold=0.5, target_sizes=[label["orig_size"]]
        )
        expected = np.asarray(row["objects"]["bbox"])
        expected[:, 2:] += expected[:, :2]
        order = np.argsort(result["labels"].numpy(), kind="stable")
        assert sorted(result["labels"].tolist()) == sorted(row["objects"]["category"])
        found = result["boxes"].numpy()
        assert all(np.abs(found - box).max(axis=1).min() < 0.5 for box in expected), (found[order], expected)


def test_transform_formats_and_errors_name_the_example(shapes):
    processor = detrvilt.DetrImageProcessor(size={"shortest_edge": 128, "longest_edge": 213})
    rows = shapes.select(range(3))
    xyxy = rows.map(lambda row: {"objects": {**row["objects"], "bbox": [
        [x, y, x + w, y + h] for x, y, w, h in row["objects"]["bbox"]]}})
    a = prepare_detection_dataset(rows, processor)
    b = prepare_detection_dataset(xyxy, processor, bbox_format="xyxy")
    for i in range(3):
        torch.testing.assert_close(a[i]["labels"]["boxes"], b[i]["labels"]["boxes"])
        assert torch.equal(a[i]["pixel_values"], b[i]["pixel_values"])
    strict = detrvilt.DetrImageProcessor(size={"shortest_edge": 128, "longest_edge": 213}, num_labels=2)
    with pytest.raises(ValueError, match=r"image_id \d+: .*unknown category id 2"):
        [prepare_detection_dataset(shapes, strict)[i] for i in range(len(shapes))]
    with pytest.raises(ValueError, match="bbox_format"):
        prepare_detection_dataset(rows, processor, bbox_format="yxyx")
    # The undecoded storage of an in-memory dataset is bytes: decoding still goes through our checks.
    raw = io.BytesIO()
    Image.new("LA", (20, 10), (0, 0)).save(raw, format="PNG")
    from detrvilt.data import decode_image
    assert decode_image({"bytes": raw.getvalue(), "path": None}, "x").shape == (3, 10, 20)
    with pytest.raises(ValueError, match="example 0"):
        decode_image({"bytes": b"nope", "path": None}, "example 0")


def test_augmentation_resize_is_the_processor_resize():
    """With one scale and neither flip nor crop, the augmentation is exactly the processor's validation resize."""
    augmentation = DetrTrainAugmentation(scales=(800,), max_size=1333, flip_prob=0.0, crop_prob=0.0)
    processor = detrvilt.DetrImageProcessor()
    for height, width in [(512, 150), (300, 451), (97, 203)]:
        image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
        target = prepare_detection_annotation({"bbox": [[3, 4, 50, 60]], "category": [1]}, (height, width))
        ours, ours_target = augmentation(image, target)
        reference, reference_target = processor.resize(image, target)
        assert ours.shape[-2:] == get_resize_size(height, width, 800, 1333)
        assert torch.equal(ours, reference) and torch.equal(ours_target["boxes"], reference_target["boxes"])


@pytest.mark.parametrize("multiple, same", [(32, True), (None, False)])
def test_collator_pads_to_the_stride_so_feature_masks_do_not_depend_on_the_batch(multiple, same):
    """A 64x92 image alone and next to an 89x92 one: with padding to a multiple of the stride its valid feature cells
    are the same; padded to the larger image exactly (transformers' way), a cell lying mostly over padding counts."""
    torch.manual_seed(0)
    model = detrvilt.DetrForObjectDetection(tiny_detr_config(num_labels=3)).eval()
    small, large = ({"pixel_values": torch.rand(3, h, 92)} for h in (64, 89))
    collate = DetrDataCollator(pad_to_multiple_of=multiple)
    masks = []
    for features in ([small], [small, large]):
        batch = collate(features)
        assert multiple is None or batch["pixel_values"].shape[-1] % multiple == 0
        with torch.no_grad():
            masks.append(model(batch["pixel_values"], pixel_mask=batch["pixel_mask"]).feature_mask[0])
    alone, batched = masks
    cells = (alone.any(1).sum().item(), alone.any(0).sum().item()), (batched.any(1).sum().item(),
                                                                     batched.any(0).sum().item())
    assert (cells[0] == cells[1]) is same, cells
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        DetrDataCollator(pad_to_multiple_of=0)
