"""Built-in synthetic vision-language sets from one scene generator, small enough to train ViLT on a CPU in minutes.

A scene is a few objects (shape: circle, square, triangle; colour: red, yellow, magenta, cyan; size: small, large)
at non-overlapping positions on a plain dark canvas. From scenes come:

- captions / retrieval: ``"two red circles left of a cyan square"`` (every caption is true of its image), and for
  each caption the objects its colour and shape words name ([`caption_groundings`], for the word-patch pointing
  metric);
- VQA: count, colour, shape, existence and relative-position questions, answers from the fixed [`VQA_ANSWERS`]
  (ten identical annotator answers, so the soft score of the right answer is 1.0);
- NLVR2-style pairs: a statement about two scenes, true of one pair and false of another (balanced labels).

Every set is deterministic per seed: example ``i`` is drawn from its own stream seeded by ``(seed, i)``, so the first
k examples do not depend on how many are made.

Two choices serve the pretraining study (``detrvilt.training.vilt.pretraining_study``): two colour names are split
by BERT's WordPiece vocabulary (``magenta`` -> ``mage ##nta``, ``cyan`` -> ``cy ##an``), so that whole-word masking
and token masking differ on these captions as they do on real ones (with one-piece words only, the two are the same
procedure); and objects are 18% and 30% of the image side, so that at the study's 96-pixel images in 16-pixel
patches every object covers the centre of at least one patch (a word can point at it) and a shape spans more than
one patch's worth of pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import datasets
import numpy as np
from PIL import Image, ImageDraw

SCENE_SHAPES = ("circle", "square", "triangle")
SCENE_COLOURS = {"red": (220, 40, 40), "yellow": (235, 205, 40), "magenta": (200, 50, 200), "cyan": (40, 195, 215)}
SCENE_SIZES = {"small": 0.18, "large": 0.30}  # side as a fraction of the image side
# Dark, so that every colour is brighter than the canvas in all its channels together: a shape is then a bright
# silhouette that a linear patch projection sees whatever its colour (on mid grey most colours have its brightness).
SCENE_BACKGROUND = (40, 40, 40)
NUMBER_WORDS = ("no", "one", "two", "three", "four")
VQA_ANSWERS = ("0", "1", "2", "3", "4", "yes", "no", *SCENE_COLOURS, *SCENE_SHAPES)


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 absolute pixels

    @property
    def center_x(self) -> float:
        return (self.box[0] + self.box[2]) / 2


def random_scene(rng: np.random.Generator, image_size: int = 128, max_objects: int = 4,
                 grid: int | None = None) -> list[SceneObject]:
    """1..`max_objects` non-overlapping objects (up to 100 placement tries each).

    Without `grid`, objects are `SCENE_SIZES` of the image side, anywhere. With `grid` (pixels, e.g. the model's
    patch size), the image is a grid of `grid`-pixel cells and each object is drawn centred in a cell of its own, a
    large one `grid - 2` pixels wide, a small one `5/8` of the cell: every shape then lies whole in one patch.
    """
    if grid is not None and (not isinstance(grid, int) or grid < 4 or image_size // grid < 2):
        raise ValueError(f"grid must be an integer >= 4 with at least 2 cells per side of the {image_size}-pixel "
                         f"image, got {grid!r}")
    cells = 0 if grid is None else image_size // grid
    occupied = np.zeros((cells, cells), dtype=bool)
    objects = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        shape = SCENE_SHAPES[rng.integers(len(SCENE_SHAPES))]
        colour = list(SCENE_COLOURS)[rng.integers(len(SCENE_COLOURS))]
        size = list(SCENE_SIZES)[rng.integers(len(SCENE_SIZES))]
        for _ in range(100):
            if grid is not None:
                row, column = (int(v) for v in rng.integers(0, cells, size=2))
                if occupied[row, column]:
                    continue
                occupied[row, column] = True
                margin = 1 if size == "large" else (grid - grid * 5 // 8) // 2
                box = (column * grid + margin, row * grid + margin, (column + 1) * grid - margin,
                       (row + 1) * grid - margin)
                objects.append(SceneObject(shape, colour, size, box))
                break
            side = int(SCENE_SIZES[size] * image_size)
            x0, y0 = (int(v) for v in rng.integers(2, image_size - side - 2, size=2))
            box = (x0, y0, x0 + side, y0 + side)
            if all(box[2] + 2 <= o.box[0] or o.box[2] + 2 <= box[0] or box[3] + 2 <= o.box[1] or o.box[3] + 2 <= box[1]
                   for o in objects):
                objects.append(SceneObject(shape, colour, size, box))
                break
    return objects


def render_scene(objects: list[SceneObject], image_size: int = 128) -> Image.Image:
    """The scene as an RGB PIL image on a dark grey canvas (`SCENE_BACKGROUND`)."""
    image = Image.new("RGB", (image_size, image_size), SCENE_BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in objects:
        x0, y0, x1, y1 = obj.box
        fill = SCENE_COLOURS[obj.colour]
        if obj.shape == "circle":
            draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
        elif obj.shape == "square":
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
        else:
            draw.polygon([((x0 + x1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=fill)
    return image


def _plural(count: int, colour: str, shape: str) -> str:
    word = NUMBER_WORDS[count] if count < len(NUMBER_WORDS) else str(count)
    article = "a" if count == 1 else word
    return f"{article} {colour} {shape}" + ("" if count == 1 else "s")


def _groups(objects) -> dict[tuple[str, str], list[SceneObject]]:
    groups: dict[tuple[str, str], list[SceneObject]] = {}
    for obj in objects:
        groups.setdefault((obj.colour, obj.shape), []).append(obj)
    return groups


def scene_captions(objects: list[SceneObject], rng: np.random.Generator) -> list[str]:
    """True descriptions of a scene: a relation between two groups when there are two, and an inventory."""
    groups = _groups(objects)
    keys = sorted(groups)
    captions = []
    if len(keys) >= 2:
        a, b = (keys[i] for i in rng.choice(len(keys), 2, replace=False))
        ax = np.mean([o.center_x for o in groups[a]])
        bx = np.mean([o.center_x for o in groups[b]])
        relation = "left of" if ax < bx else "right of"
        first = _plural(len(groups[a]), *a)
        second = _plural(len(groups[b]), *b)
        captions.append(f"{first} {relation} {second}")
    captions.append(" and ".join(_plural(len(groups[k]), *k) for k in keys))
    return captions


def caption_groundings(caption: str, objects: list[SceneObject]) -> list[tuple[int, str, tuple[int, int, int, int]]]:
    """The words of `caption` that name exactly one object of the scene, with that object's box.

    A caption phrase is ``<count> <colour> <shape>[s]``; when the scene holds exactly one object of that colour and
    shape, both the colour word and the shape word name it. Returns `(word_position, word, box)` triples, where
    `word_position` indexes ``caption.split()`` and `box` is the object's `(x0, y0, x1, y1)` in absolute pixels of
    the rendered image. Phrases about several objects (``"two red circles"``) give nothing.
    """
    groups = _groups(objects)
    words = caption.split()
    found = []
    for position, (word, following) in enumerate(zip(words, words[1:], strict=False)):
        shape = following[:-1] if following.endswith("s") and following[:-1] in SCENE_SHAPES else following
        if word in SCENE_COLOURS and shape in SCENE_SHAPES and len(groups.get((word, shape), ())) == 1:
            box = groups[(word, shape)][0].box
            found += [(position, word, box), (position + 1, following, box)]
    return found


def _phrase(words: list[str]) -> tuple[int, str, str]:
    """``["two", "red", "circles"]`` -> ``(2, "red", "circle")``; ValueError for anything else."""
    if len(words) != 3 or words[1] not in SCENE_COLOURS:
        raise ValueError(f"not a caption phrase: {' '.join(words)!r}")
    count = 1 if words[0] == "a" else NUMBER_WORDS.index(words[0]) if words[0] in NUMBER_WORDS else -1
    shape = words[2][:-1] if count != 1 and words[2].endswith("s") else words[2]
    if count < 1 or shape not in SCENE_SHAPES:
        raise ValueError(f"not a caption phrase: {' '.join(words)!r}")
    return count, words[1], shape


def caption_holds(caption: str, objects: list[SceneObject]) -> bool:
    """Whether a caption of [`scene_captions`]' two kinds is true of a scene, read as the captions are made: a
    relation (``"<phrase> left of <phrase>"``) holds when both groups exist with exactly those counts and the first
    group's mean centre lies left (right) of the second's; an inventory (``"<phrase> and <phrase> ..."``) holds when
    it lists exactly the scene's groups and counts. Used to measure how often an ITM negative (another scene's
    image) is in fact described by the caption."""
    groups = _groups(objects)
    words = caption.split()
    for relation in ("left", "right"):
        if relation in words and words[words.index(relation) + 1:words.index(relation) + 2] == ["of"]:
            cut = words.index(relation)
            first, second = _phrase(words[:cut]), _phrase(words[cut + 2:])
            if any(len(groups.get((colour, shape), ())) != count for count, colour, shape in (first, second)):
                return False
            ax, bx = (np.mean([o.center_x for o in groups[(c, s)]]) for _, c, s in (first, second))
            return bool(ax < bx) if relation == "left" else bool(ax >= bx)
    phrases = " ".join(words).split(" and ")
    claimed = {(colour, shape): count for count, colour, shape in (_phrase(p.split()) for p in phrases)}
    return claimed == {key: len(members) for key, members in groups.items()}


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def synthetic_scene(seed: int, index: int, image_size: int = 128, max_objects: int = 4,
                    grid: int | None = None) -> tuple[list[SceneObject], list[str]]:
    """Scene `index` of the captions set of `seed` and its captions: row `index` of
    `make_vilt_captions_dataset(..., seed=seed, image_size=image_size, max_objects=max_objects, grid=grid)` before
    rendering."""
    rng = _rng(seed, index)
    objects = random_scene(rng, image_size, max_objects, grid)
    return objects, scene_captions(objects, rng)


def make_vilt_captions_dataset(num_images: int = 64, seed: int = 0, image_size: int = 128,
                               max_objects: int = 4, grid: int | None = None) -> datasets.Dataset:
    """Columns `image` (PIL), `image_id`, `captions` (list of str, all true), `text` (the first caption).

    `max_objects` (at least 1) bounds the objects per scene; 1 gives one-object scenes with captions such as
    ``"a red circle"`` (an easy retrieval set for quick checks). `grid`: see [`random_scene`].
    """
    if not isinstance(max_objects, int) or max_objects < 1:
        raise ValueError(f"max_objects must be a positive integer, got {max_objects!r}")
    rows = {"image": [], "image_id": [], "captions": [], "text": []}
    for index in range(num_images):
        objects, captions = synthetic_scene(seed, index, image_size, max_objects, grid)
        rows["image"].append(render_scene(objects, image_size))
        rows["image_id"].append(index)
        rows["captions"].append(captions)
        rows["text"].append(captions[0])
    features = datasets.Features({"image": datasets.Image(), "image_id": datasets.Value("int64"),
                                  "captions": datasets.Sequence(datasets.Value("string")),
                                  "text": datasets.Value("string")})
    return datasets.Dataset.from_dict(rows, features=features)


make_vilt_retrieval_dataset = make_vilt_captions_dataset


def make_vilt_pointing_examples(num_images: int = 64, seed: int = 1, image_size: int = 128,
                                max_objects: int = 4, grid: int | None = None) -> list[dict]:
    """Captioned scenes for the word-patch pointing metric: one dict per caption that names at least one object
    alone, with `image` (PIL), `image_id`, `text` and `groundings` (see [`caption_groundings`]). The scenes are those
    of `make_vilt_captions_dataset(num_images, seed, image_size, max_objects, grid)` (seed 1: the held-out ones)."""
    examples = []
    for index in range(num_images):
        objects, captions = synthetic_scene(seed, index, image_size, max_objects, grid)
        image = render_scene(objects, image_size)
        for caption in captions:
            found = caption_groundings(caption, objects)
            if found:
                examples.append({"image": image, "image_id": index, "text": caption, "groundings": found})
    return examples


def scene_question(objects: list[SceneObject], rng: np.random.Generator) -> tuple[str, str, str]:
    """One (question, answer, question_type) about the scene; the answer is in [`VQA_ANSWERS`]."""
    groups = _groups(objects)
    unique = [o for o in objects if len(groups[(o.colour, o.shape)]) == 1]
    kinds = ["count", "existence"]
    if any(sum(o.shape == obj.shape for o in objects) == 1 for obj in objects):
        kinds.append("colour")
    if any(sum(o.colour == obj.colour for o in objects) == 1 for obj in objects):
        kinds.append("shape")
    if len(unique) >= 2:
        kinds.append("position")
    kind = kinds[rng.integers(len(kinds))]
    if kind == "count":
        shape = SCENE_SHAPES[rng.integers(len(SCENE_SHAPES))]
        return f"how many {shape}s are there?", str(sum(o.shape == shape for o in objects)), kind
    if kind == "existence":
        colour = list(SCENE_COLOURS)[rng.integers(len(SCENE_COLOURS))]
        shape = SCENE_SHAPES[rng.integers(len(SCENE_SHAPES))]
        answer = "yes" if (colour, shape) in groups else "no"
        return f"is there a {colour} {shape}?", answer, kind
    if kind == "colour":
        candidates = [o for o in objects if sum(p.shape == o.shape for p in objects) == 1]
        obj = candidates[rng.integers(len(candidates))]
        return f"what colour is the {obj.shape}?", obj.colour, kind
    if kind == "shape":
        candidates = [o for o in objects if sum(p.colour == o.colour for p in objects) == 1]
        obj = candidates[rng.integers(len(candidates))]
        return f"what shape is the {obj.colour} object?", obj.shape, kind
    a, b = (unique[i] for i in rng.choice(len(unique), 2, replace=False))
    answer = "yes" if a.center_x < b.center_x else "no"
    return f"is the {a.colour} {a.shape} left of the {b.colour} {b.shape}?", answer, kind


def make_vilt_vqa_dataset(num_questions: int = 64, seed: int = 0, image_size: int = 128,
                          grid: int | None = None) -> datasets.Dataset:
    """Columns `image`, `image_id`, `question_id`, `question`, `answers` (ten identical), `question_type`.

    The answer vocabulary is fixed: ``id2label = dict(enumerate(VQA_ANSWERS))``. `grid`: see [`random_scene`].
    """
    rows = {"image": [], "image_id": [], "question_id": [], "question": [], "answers": [], "question_type": []}
    for index in range(num_questions):
        rng = _rng(seed, index)
        objects = random_scene(rng, image_size, grid=grid)
        question, answer, kind = scene_question(objects, rng)
        rows["image"].append(render_scene(objects, image_size))
        rows["image_id"].append(index)
        rows["question_id"].append(index)
        rows["question"].append(question)
        rows["answers"].append([answer] * 10)
        rows["question_type"].append(kind)
    features = datasets.Features({"image": datasets.Image(), "image_id": datasets.Value("int64"),
                                  "question_id": datasets.Value("int64"), "question": datasets.Value("string"),
                                  "answers": datasets.Sequence(datasets.Value("string")),
                                  "question_type": datasets.Value("string")})
    return datasets.Dataset.from_dict(rows, features=features)


def make_vilt_nlvr2_dataset(num_pairs: int = 64, seed: int = 0, image_size: int = 128,
                            grid: int | None = None) -> datasets.Dataset:
    """Columns `image_0`, `image_1`, `text`, `label` (1 true), `identifier`; labels alternate true/false.

    Statement: ``"there are exactly two red circles in the two images"``; for a false example the count is changed.
    `grid`: see [`random_scene`].
    """
    rows = {"image_0": [], "image_1": [], "text": [], "label": [], "identifier": []}
    for index in range(num_pairs):
        rng = _rng(seed, index)
        scenes = [random_scene(rng, image_size, grid=grid), random_scene(rng, image_size, grid=grid)]
        everything = scenes[0] + scenes[1]
        obj = everything[rng.integers(len(everything))]
        count = sum(o.colour == obj.colour and o.shape == obj.shape for o in everything)
        label = index % 2 == 0
        stated = count if label else (count + int(rng.integers(1, 3))) % 5 or 5
        plural = "" if stated == 1 else "s"
        verb = "is" if stated == 1 else "are"
        word = NUMBER_WORDS[stated] if stated < len(NUMBER_WORDS) else str(stated)
        rows["image_0"].append(render_scene(scenes[0], image_size))
        rows["image_1"].append(render_scene(scenes[1], image_size))
        rows["text"].append(f"there {verb} exactly {word} {obj.colour} {obj.shape}{plural} in the two images")
        rows["label"].append(int(stated == count))
        rows["identifier"].append(f"synthetic-{seed}-{index}")
    features = datasets.Features({"image_0": datasets.Image(), "image_1": datasets.Image(),
                                  "text": datasets.Value("string"), "label": datasets.Value("int64"),
                                  "identifier": datasets.Value("string")})
    return datasets.Dataset.from_dict(rows, features=features)
