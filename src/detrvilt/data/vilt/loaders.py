"""Loaders of the vision-language formats users have, into `datasets.Dataset`, for ViLT's collators.

- Captions (COCO / Flickr30k) in Karpathy's split json (``dataset_coco.json``: ``{"images": [{"filepath",
  "filename", "split", "sentences": [{"raw"}], "cocoid" | "imgid"}]}``) -> columns `image`, `image_id`, `captions`
  (list of str), `split`.
- VQAv2: the questions json (``{"questions": [{"question_id", "image_id", "question"}]}``) and, for train/val, the
  annotations json (``{"annotations": [{"question_id", "answers": [{"answer"}], "multiple_choice_answer"}]}``), images
  named ``COCO_{subtype}_{image_id:012d}.jpg`` -> `image`, `image_id`, `question_id`, `question`, `answers`.
- NLVR2: json lines (``{"identifier": "dev-850-0-0", "sentence", "label": "True", "directory"?}``), images
  ``{identifier minus its last field}-img0.png`` / ``-img1.png`` (in `image_dir` or `image_dir/directory`) ->
  `image_0`, `image_1`, `text`, `label` (int), `identifier`.
- Hub datasets saved with ``save_to_disk`` holding those columns: [`load_vilt_dataset_from_disk`] checks them.

Images are stored as undecoded `datasets.Image` (path), so a broken file is named when a collator decodes it.

Bad input never disappears silently: with ``on_error="raise"`` (the default) a missing image file, an empty caption,
a question without answers or an NLVR2 item without both images raises `ValueError` naming the item; with
``on_error="skip"`` the item is left out, counted, and a warning names the count per reason; pass
``return_skipped=True`` to also get ``{reason: [item names]}``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import datasets

ON_ERROR = ("raise", "skip")


class _Problems:
    def __init__(self, on_error: str, source):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.on_error, self.source, self.skipped = on_error, source, {}

    def report(self, reason: str, item: str, message: str) -> None:
        if self.on_error == "raise":
            raise ValueError(f"{self.source}: {item}: {message}")
        self.skipped.setdefault(reason, []).append(item)

    def finish(self, dataset, return_skipped: bool):
        if self.skipped:
            counts = {reason: len(items) for reason, items in self.skipped.items()}
            warnings.warn(f"{self.source}: skipped {sum(counts.values())} items: {counts}", stacklevel=3)
        return (dataset, self.skipped) if return_skipped else dataset


def _image_features(**columns) -> datasets.Features:
    return datasets.Features(columns)


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read the json file {str(path)!r}: {error}") from error


def load_karpathy_captions(json_path, image_dir, splits: Sequence[str] | None = None, on_error: str = "raise",
                           return_skipped: bool = False):
    """Captions in Karpathy's split format (COCO or Flickr30k).

    Args:
        json_path: ``dataset_coco.json`` / ``dataset_flickr30k.json``.
        image_dir: the folder the images' ``filepath/filename`` are relative to.
        splits (`list[str]`, *optional*): keep these splits (e.g. ``["train", "restval"]``); all by default.
        on_error, return_skipped: see the module docstring (reasons `missing_image`, `empty_caption`).
    """
    data = _read_json(json_path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{str(json_path)!r} is not a Karpathy split file: expected {{'images': [...]}}")
    problems = _Problems(on_error, str(json_path))
    rows = {"image": [], "image_id": [], "captions": [], "split": []}
    for position, entry in enumerate(data["images"]):
        if splits is not None and entry.get("split") not in splits:
            continue
        image_id = entry.get("cocoid", entry.get("imgid", position))
        item = f"image {entry.get('filename')!r} (id {image_id})"
        path = Path(image_dir, entry.get("filepath", ""), entry.get("filename", ""))
        if not entry.get("filename") or not path.is_file():
            problems.report("missing_image", item, f"image file not found: {str(path)!r}")
            continue
        captions = [s.get("raw", "") if isinstance(s, dict) else s for s in entry.get("sentences", [])]
        if not captions or any(not isinstance(c, str) or not c.strip() for c in captions):
            problems.report("empty_caption", item, f"has an empty or missing caption: {captions!r}")
            continue
        rows["image"].append(str(path))
        rows["image_id"].append(int(image_id))
        rows["captions"].append([c.strip() for c in captions])
        rows["split"].append(entry.get("split", ""))
    features = _image_features(image=datasets.Image(decode=False), image_id=datasets.Value("int64"),
                               captions=datasets.Sequence(datasets.Value("string")), split=datasets.Value("string"))
    return problems.finish(datasets.Dataset.from_dict(rows, features=features), return_skipped)


def load_vqav2(questions_path, image_dir, annotations_path=None, image_pattern: str | None = None,
               on_error: str = "raise", return_skipped: bool = False):
    """VQAv2 questions (+ annotations) and their COCO images.

    Args:
        questions_path: ``v2_OpenEnded_mscoco_{subtype}_questions.json``.
        image_dir: the folder of the subtype's images.
        annotations_path (*optional*): ``v2_mscoco_{subtype}_annotations.json`` (absent for test).
        image_pattern (`str`, *optional*): file name of an image from its id, defaults to
            ``"COCO_{subtype}_{image_id:012d}.jpg"`` with the questions file's ``data_subtype``.
        on_error, return_skipped: see the module docstring (reasons `missing_image`, `no_answers`, `empty_question`).
    """
    questions = _read_json(questions_path)
    if not isinstance(questions, dict) or not isinstance(questions.get("questions"), list):
        raise ValueError(f"{str(questions_path)!r} is not a VQA questions file: expected {{'questions': [...]}}")
    subtype = questions.get("data_subtype", "")
    pattern = image_pattern or "COCO_{subtype}_{image_id:012d}.jpg"
    answers_by_question = None
    if annotations_path is not None:
        annotations = _read_json(annotations_path)
        if not isinstance(annotations, dict) or not isinstance(annotations.get("annotations"), list):
            raise ValueError(f"{str(annotations_path)!r} is not a VQA annotations file")
        answers_by_question = {a["question_id"]: [x["answer"] for x in a.get("answers", [])]
                               for a in annotations["annotations"]}
    problems = _Problems(on_error, str(questions_path))
    rows = {"image": [], "image_id": [], "question_id": [], "question": [], "answers": []}
    for question in questions["questions"]:
        item = f"question_id {question.get('question_id')}"
        text = question.get("question")
        if not isinstance(text, str) or not text.strip():
            problems.report("empty_question", item, f"empty question {text!r}")
            continue
        answers = []
        if answers_by_question is not None:
            answers = answers_by_question.get(question["question_id"]) or []
            if not answers:
                problems.report("no_answers", item, "the question has no answers in the annotations")
                continue
        path = Path(image_dir, pattern.format(subtype=subtype, image_id=question["image_id"]))
        if not path.is_file():
            problems.report("missing_image", item, f"image file not found: {str(path)!r}")
            continue
        rows["image"].append(str(path))
        rows["image_id"].append(int(question["image_id"]))
        rows["question_id"].append(int(question["question_id"]))
        rows["question"].append(text.strip())
        rows["answers"].append(answers)
    features = _image_features(image=datasets.Image(decode=False), image_id=datasets.Value("int64"),
                               question_id=datasets.Value("int64"), question=datasets.Value("string"),
                               answers=datasets.Sequence(datasets.Value("string")))
    return problems.finish(datasets.Dataset.from_dict(rows, features=features), return_skipped)


def nlvr2_image_paths(identifier: str, image_dir, directory=None) -> list[Path]:
    """The two image files of an NLVR2 item: ``{split}-{set}-{pair}-img0.png`` and ``-img1.png``."""
    prefix = identifier.rsplit("-", 1)[0]
    folder = Path(image_dir) if directory is None else Path(image_dir, str(directory))
    return [folder / f"{prefix}-img{k}.png" for k in (0, 1)]


def load_nlvr2(jsonl_path, image_dir, on_error: str = "raise", return_skipped: bool = False):
    """NLVR2 json lines and image pairs (reasons for skips: `missing_image`, `empty_caption`, `bad_label`)."""
    problems = _Problems(on_error, str(jsonl_path))
    rows = {"image_0": [], "image_1": [], "text": [], "label": [], "identifier": []}
    try:
        lines = Path(jsonl_path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ValueError(f"cannot read {str(jsonl_path)!r}: {error}") from error
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{str(jsonl_path)!r} line {number} is not json: {error}") from error
        identifier = entry.get("identifier", f"line {number}")
        item = f"identifier {identifier!r}"
        paths = nlvr2_image_paths(identifier, image_dir, entry.get("directory"))
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            problems.report("missing_image", item, f"NLVR2 needs two images; not found: {missing}")
            continue
        sentence = entry.get("sentence")
        if not isinstance(sentence, str) or not sentence.strip():
            problems.report("empty_caption", item, f"empty sentence {sentence!r}")
            continue
        label = str(entry.get("label")).lower()
        if label not in ("true", "false"):
            problems.report("bad_label", item, f"label must be 'True' or 'False', got {entry.get('label')!r}")
            continue
        rows["image_0"].append(str(paths[0]))
        rows["image_1"].append(str(paths[1]))
        rows["text"].append(sentence.strip())
        rows["label"].append(int(label == "true"))
        rows["identifier"].append(identifier)
    features = _image_features(image_0=datasets.Image(decode=False), image_1=datasets.Image(decode=False),
                               text=datasets.Value("string"), label=datasets.Value("int64"),
                               identifier=datasets.Value("string"))
    return problems.finish(datasets.Dataset.from_dict(rows, features=features), return_skipped)


TASK_COLUMNS = {
    "captions": ("image", "captions"),
    "vqa": ("image", "question", "answers"),
    "nlvr2": ("image_0", "image_1", "text", "label"),
}


def load_vilt_dataset_from_disk(path: str | os.PathLike, task: str):
    """A dataset saved with `save_to_disk` (a `Dataset` or a `DatasetDict`), checked for `task`'s columns."""
    if task not in TASK_COLUMNS:
        raise ValueError(f"task must be one of {sorted(TASK_COLUMNS)}, got {task!r}")
    dataset = datasets.load_from_disk(str(path))
    parts = dataset.values() if isinstance(dataset, datasets.DatasetDict) else [dataset]
    for part in parts:
        missing = [c for c in TASK_COLUMNS[task] if c not in part.column_names]
        if missing:
            raise ValueError(f"{str(path)!r} has no column(s) {missing} for task {task!r} "
                             f"(columns: {part.column_names})")
    return dataset
