"""Collators for ViLT: whole-word masking (MLM), image-text matching (ITM, and so WPA), VQA, NLVR2 and retrieval.

Each collator takes a list of examples (dicts from a `datasets.Dataset` row or built by hand) holding raw images
(PIL images, paths, arrays, or `datasets.Image` storage `{"path", "bytes"}`) and texts, decodes and preprocesses them
with a [`DetrviltViltProcessor`] (RandAugment when its image processor has `do_augment=True`), and returns the keyword
arguments of the matching model, so ``model(**collator(examples))`` trains. With `Trainer`, pass
``remove_unused_columns=False``.

Whole-word masking follows BERT's recipe as ViLT's official code uses it (transformers'
``DataCollatorForWholeWordMask``, gone in transformers 5): words are the fast tokenizer's `word_ids`; each word is
chosen with probability 15% (independently, so the masked fraction of words is 15% in expectation; a batch where no
word is chosen gets one, so the loss is defined); every sub-token of a chosen word is a target; each target token
becomes [MASK] with probability 0.8, a random non-special token with 0.1, and stays with 0.1 (decided per token, as
transformers' collator did). Special tokens and padding are never chosen; labels are -100 except at targets.

ITM follows the official data module: in each batch, ``batch_size // 2`` pairs (chosen at random) get the image of
another example (one with a different `image_id` when the examples have one) and `itm_labels` 0; the rest keep their
image with label 1. The WPA loss of the model uses the same labels (positive pairs pulled together).

Token masking (``whole_word_masking=False``, the ViLT paper's ablation baseline) applies the same rule to each word
piece on its own: a piece of a chosen word may be masked while the other pieces of its word stay visible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..images import decode_image

IGNORE_INDEX = -100


def _generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(int(torch.randint(2**62, ()).item()) if seed is None else seed)
    return generator


def _describe(example: Mapping, position: int) -> str:
    for key in ("id", "identifier", "question_id", "image_id"):
        if example.get(key) is not None:
            return f"example {key}={example[key]!r}"
    return f"example {position} of the batch"


def _text(example: Mapping, column: str, position: int) -> str:
    text = example.get(column)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{_describe(example, position)}: {column!r} must be a non-empty string, got {text!r}")
    return text


# ----------------------------------------------------------------------------------------------------------------
# Whole-word masking


def whole_word_mask(
    input_ids: torch.Tensor,
    word_ids: Sequence[Sequence[int | None]],
    tokenizer,
    mlm_probability: float = 0.15,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask whole words of a tokenized batch.

    Args:
        input_ids (`torch.LongTensor` of shape `(batch_size, text_length)`): the token ids.
        word_ids (`list[list[int | None]]`): per row, the word index of each token (`BatchEncoding.word_ids(i)`);
            `None` for special tokens and padding, which are never masked.
        tokenizer: supplies `mask_token_id`, `all_special_ids` and `len(tokenizer)` (random replacements).
        mlm_probability (`float`): chance of each word to be a target.
        mask_replace_prob, random_replace_prob (`float`): of the target tokens, the share replaced by [MASK] and by a
            random token; the rest keep their token.
        generator (`torch.Generator`, *optional*): the random stream.

    Returns:
        `(masked_input_ids, labels)`, both `torch.LongTensor` of shape `(batch_size, text_length)`; labels hold the
        original id at targets and -100 elsewhere.
    """
    if not 0 < mlm_probability < 1:
        raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
    if mask_replace_prob < 0 or random_replace_prob < 0 or mask_replace_prob + random_replace_prob > 1:
        raise ValueError(f"mask_replace_prob ({mask_replace_prob}) and random_replace_prob ({random_replace_prob}) "
                         "must be >= 0 and sum to at most 1")
    if tokenizer.mask_token_id is None:
        raise ValueError("the tokenizer has no mask token")
    batch_size, length = input_ids.shape
    if len(word_ids) != batch_size:
        raise ValueError(f"word_ids must have one row per input row ({batch_size}), got {len(word_ids)}")
    # word index per token as a tensor, -1 for special tokens / padding
    words = torch.full((batch_size, length), -1, dtype=torch.long)
    for i, row in enumerate(word_ids):
        words[i, : len(row)] = torch.tensor([-1 if w is None else w for w in row], dtype=torch.long)
    num_words = int(words.max().item()) + 1
    chosen = torch.rand((batch_size, max(num_words, 1)), generator=generator) < mlm_probability  # (B, W)
    exists = torch.zeros_like(chosen)
    valid = words >= 0
    rows, columns = valid.nonzero(as_tuple=True)
    exists[rows, words[rows, columns]] = True
    chosen &= exists
    if not chosen.any() and exists.any():  # keep the MLM loss defined: one word somewhere
        candidates = exists.flatten().nonzero().flatten()
        pick = candidates[torch.randint(len(candidates), (1,), generator=generator)]
        chosen.view(-1)[pick] = True
    targets = valid & torch.gather(chosen, 1, words.clamp(min=0))  # (B, T)
    labels = torch.where(targets, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    draw = torch.rand((batch_size, length), generator=generator)
    masked = input_ids.clone()
    masked[targets & (draw < mask_replace_prob)] = tokenizer.mask_token_id
    replace = targets & (draw >= mask_replace_prob) & (draw < mask_replace_prob + random_replace_prob)
    if replace.any():
        special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        allowed = torch.ones(len(tokenizer), dtype=torch.bool)
        allowed[special[special < len(tokenizer)]] = False
        pool = allowed.nonzero().flatten()
        masked[replace] = pool[torch.randint(len(pool), (int(replace.sum()),), generator=generator)]
    return masked, labels


# ----------------------------------------------------------------------------------------------------------------
# Base


class _ViltCollator:
    """Shared decoding: images through the processor's image processor, texts through its tokenizer."""

    def __init__(self, processor, image_column: str = "image", text_column: str = "text", seed: int | None = None):
        self.processor = processor
        self.image_column = image_column
        self.text_column = text_column
        self.generator = _generator(seed)

    def _images(self, values: Sequence, descriptions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        image_processor = self.processor.image_processor
        prepared = []
        for value, description in zip(values, descriptions, strict=True):
            image = decode_image(value, description)
            prepared.append(image_processor.prepare_image(image, generator=self.generator))
        return image_processor.pad(prepared)

    def _tokenize(self, texts: Sequence[str]):
        tokenizer = self.processor.tokenizer
        return tokenizer(list(texts), padding="max_length", truncation=True,
                         max_length=getattr(self.processor, "max_length", 40), return_tensors="pt")

    def _column(self, examples, column):
        missing = [i for i, example in enumerate(examples) if column not in example]
        if missing:
            raise KeyError(f"examples {missing} have no {column!r} (keys: {sorted(examples[missing[0]])})")
        return [example[column] for example in examples]


class ViltMLMCollator(_ViltCollator):
    """Masked language modeling with whole-word masking: matched pairs, masked texts, `labels` (B, T).

    Args:
        processor ([`DetrviltViltProcessor`]): with a fast tokenizer.
        mlm_probability, mask_replace_prob, random_replace_prob: see [`whole_word_mask`].
        whole_word_masking (`bool`, defaults to `True`): choose whole words (all their pieces); `False` chooses word
            pieces one by one (token masking, the paper's ablation).
        image_column, text_column (`str`): keys of the examples; seed (`int`, *optional*): the random stream.

    Returns (from `__call__`): `input_ids`, `attention_mask`, `token_type_ids` (`(B, T)`), `pixel_values`
    (`(B, 3, H, W)`), `pixel_mask` (`(B, H, W)`), `labels` (`torch.LongTensor` `(B, T)`, -100 but at targets).
    """

    def __init__(self, processor, mlm_probability: float = 0.15, mask_replace_prob: float = 0.8,
                 random_replace_prob: float = 0.1, whole_word_masking: bool = True, **kwargs):
        super().__init__(processor, **kwargs)
        self.mlm_probability = mlm_probability
        self.mask_replace_prob = mask_replace_prob
        self.random_replace_prob = random_replace_prob
        self.whole_word_masking = bool(whole_word_masking)

    def mask_texts(self, texts: Sequence[str]) -> dict:
        """Tokenize and mask `texts`: the text half of the batch."""
        encoding = self._tokenize(texts)
        word_ids = [encoding.word_ids(i) for i in range(len(texts))]
        if not self.whole_word_masking:  # every piece its own "word"
            word_ids = [[None if word is None else position for position, word in enumerate(row)] for row in word_ids]
        masked, labels = whole_word_mask(encoding["input_ids"], word_ids, self.processor.tokenizer,
                                         self.mlm_probability, self.mask_replace_prob, self.random_replace_prob,
                                         self.generator)
        batch = dict(encoding)
        batch["input_ids"], batch["labels"] = masked, labels
        return batch

    def __call__(self, examples: Sequence[Mapping]) -> dict:
        descriptions = [_describe(e, i) for i, e in enumerate(examples)]
        texts = [_text(e, self.text_column, i) for i, e in enumerate(examples)]
        batch = self.mask_texts(texts)
        batch["pixel_values"], batch["pixel_mask"] = self._images(self._column(examples, self.image_column),
                                                                  descriptions)
        return batch


class ViltITMCollator(_ViltCollator):
    """Image-text matching: `batch_size // 2` pairs get another example's image; `itm_labels` (B,) 1 = matched.

    The texts are not masked (the official ITM/WPA pass). Negatives need examples with different images in the batch.
    `image_id_column` (default `"image_id"`, used when present) says which examples share an image.
    """

    def __init__(self, processor, image_id_column: str = "image_id", **kwargs):
        super().__init__(processor, **kwargs)
        self.image_id_column = image_id_column

    def draw_images(self, examples: Sequence[Mapping], descriptions: Sequence[str]) -> tuple[list[int], torch.Tensor]:
        """`(sources, itm_labels)`: the example whose image each pair gets, and 1 where that is its own image.

        `batch_size // 2` randomly chosen pairs get another example's image; a chosen pair whose image every other
        example shares (e.g. an evaluation batch of one image's captions) keeps its own and stays matched.
        """
        batch_size = len(examples)
        if batch_size < 1:
            raise ValueError("ITM needs at least one example")
        ids = [e.get(self.image_id_column, i) for i, e in enumerate(examples)]
        itm_labels = torch.ones(batch_size, dtype=torch.long)
        negatives = torch.randperm(batch_size, generator=self.generator)[: batch_size // 2].tolist()
        sources = list(range(batch_size))
        for i in negatives:
            others = [j for j in range(batch_size) if ids[j] != ids[i]]
            if others:
                sources[i] = others[int(torch.randint(len(others), (), generator=self.generator))]
                itm_labels[i] = 0
        return sources, itm_labels

    def __call__(self, examples: Sequence[Mapping]) -> dict:
        descriptions = [_describe(e, i) for i, e in enumerate(examples)]
        texts = [_text(e, self.text_column, i) for i, e in enumerate(examples)]
        images = self._column(examples, self.image_column)
        sources, itm_labels = self.draw_images(examples, descriptions)
        batch = dict(self._tokenize(texts))
        batch["pixel_values"], batch["pixel_mask"] = self._images(
            [images[j] for j in sources], [descriptions[j] for j in sources])
        batch["itm_labels"] = itm_labels
        return batch


class ViltPretrainingCollator(ViltITMCollator, ViltMLMCollator):
    """All three pretraining objectives in one pass: whole-word-masked texts (`labels`), half of the images replaced
    (`itm_labels`, which also drive WPA).

    The official code runs two passes (MLM on matched pairs, ITM + WPA on unmasked text); this one-pass variant
    (see [`ViltForPreTraining`]) costs half. MLM targets are kept only on the matched pairs (-100 on the replaced
    ones), so the MLM objective still reads the text's own image. Arguments: those of [`ViltMLMCollator`] and
    [`ViltITMCollator`].
    """

    def __call__(self, examples: Sequence[Mapping]) -> dict:
        descriptions = [_describe(e, i) for i, e in enumerate(examples)]
        texts = [_text(e, self.text_column, i) for i, e in enumerate(examples)]
        images = self._column(examples, self.image_column)
        sources, itm_labels = self.draw_images(examples, descriptions)
        batch = self.mask_texts(texts)
        batch["labels"][itm_labels == 0] = IGNORE_INDEX
        batch["pixel_values"], batch["pixel_mask"] = self._images(
            [images[j] for j in sources], [descriptions[j] for j in sources])
        batch["itm_labels"] = itm_labels
        return batch


class IndexedExamples(torch.utils.data.Dataset):
    """A map-style dataset whose examples carry their position (`_index`) and the epoch (`_epoch`, see `set_epoch`),
    for [`BatchSeededCollator`]. `dataset` is a `datasets.Dataset` or any sequence of dicts."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return {**self.dataset[int(index)], "_index": int(index), "_epoch": self.epoch}


class BatchSeededCollator:
    """Makes a collator's randomness (masking, ITM negatives, RandAugment) a function of the batch alone.

    Before each call the wrapped collator's generator is re-seeded from `seed`, the epoch and the examples'
    positions (from [`IndexedExamples`]), so a batch is built the same way whether or not the batches before it were
    built: what an exact resume needs (resuming skips batches without collating them), and what makes every process
    and worker independent of the others' history.

    Args:
        collator: a ViLT collator (anything with a `torch.Generator` attribute `generator`).
        seed (`int`): the run's seed.
        return_indices (`bool`): add `example_index` (`(B,)`, the examples' `_index`) to the batch, for evaluation
            records and error messages (drop it before calling the model).
    """

    def __init__(self, collator, seed: int = 0, return_indices: bool = False):
        if not isinstance(getattr(collator, "generator", None), torch.Generator):
            raise TypeError(f"collator must have a torch.Generator `generator`, got {type(collator).__name__}")
        self.collator = collator
        self.seed = int(seed)
        self.return_indices = return_indices

    def __call__(self, examples: Sequence[Mapping]) -> dict:
        missing = [i for i, e in enumerate(examples) if "_index" not in e]
        if missing:
            raise ValueError(f"examples {missing} have no '_index': wrap the dataset in IndexedExamples")
        key = (self.seed, int(examples[0].get("_epoch", 0)), *(int(e["_index"]) for e in examples))
        self.collator.generator.manual_seed(hash(key) % (2**63))  # hash of a tuple of ints is stable across runs
        batch = self.collator(examples)
        if self.return_indices:
            batch["example_index"] = torch.tensor([int(e["_index"]) for e in examples])
        return batch


# ----------------------------------------------------------------------------------------------------------------
# Downstream


class ViltVQACollator(_ViltCollator):
    """VQA: question + image, `labels` the soft scores `(B, num_labels)` from each example's annotator answers.

    Args:
        processor ([`DetrviltViltProcessor`]).
        label2id (`dict[str, int]`): the answer vocabulary (see [`build_answer_vocabulary`]); answers outside it
            score nothing (as in the official code).
        text_column (`str`, defaults to `"question"`), answers_column (`str`, defaults to `"answers"`, a list of the
            annotators' answer strings; the column may be absent at test time).
    """

    def __init__(self, processor, label2id: Mapping[str, int], answers_column: str = "answers",
                 text_column: str = "question", **kwargs):
        super().__init__(processor, text_column=text_column, **kwargs)
        self.label2id = dict(label2id)
        self.answers_column = answers_column

    def __call__(self, examples: Sequence[Mapping]) -> dict:
        from .vqa import vqa_targets

        descriptions = [_describe(e, i) for i, e in enumerate(examples)]
        texts = [_text(e, self.text_column, i) for i, e in enumerate(examples)]
        batch = dict(self._tokenize(texts))
        batch["pixel_values"], batch["pixel_mask"] = self._images(self._column(examples, self.image_column),
                                                                  descriptions)
        if all(self.answers_column in e for e in examples):
            rows = []
            for example, description in zip(examples, descriptions, strict=True):
                answers = example[self.answers_column]
                if not answers:
                    raise ValueError(f"{description}: the question has no answers")
                rows.append(vqa_targets(answers, self.label2id))
            batch["labels"] = torch.stack(rows)
        return batch


class ViltNLVR2Collator(_ViltCollator):
    """NLVR2: two images + one sentence + a binary label.

    Examples hold `image_0` and `image_1` (or `images`, a list of two) and `text`, `label` (bool/0/1 or
    "True"/"False"). Returns `pixel_values` `(B, 2, 3, H, W)`, `pixel_mask` `(B, 2, H, W)` (both images of the batch
    padded to one size) and `labels` `(B,)`.
    """

    def __call__(self, examples: Sequence[Mapping]) -> dict:
        descriptions = [_describe(e, i) for i, e in enumerate(examples)]
        texts = [_text(e, self.text_column, i) for i, e in enumerate(examples)]
        pairs = []
        for example, description in zip(examples, descriptions, strict=True):
            pair = example.get("images") or [example.get("image_0"), example.get("image_1")]
            if len(pair) != 2 or any(image is None for image in pair):
                raise ValueError(f"{description}: NLVR2 needs two images (image_0 and image_1), got "
                                 f"{sum(image is not None for image in pair)}")
            pairs.append(pair)
        batch = dict(self._tokenize(texts))
        flat_images = [image for pair in pairs for image in pair]
        flat_descriptions = [f"{d}, image {k}" for d in descriptions for k in (0, 1)]
        pixel_values, pixel_mask = self._images(flat_images, flat_descriptions)
        batch["pixel_values"] = pixel_values.unflatten(0, (len(examples), 2))  # (B, 2, 3, H, W)
        batch["pixel_mask"] = pixel_mask.unflatten(0, (len(examples), 2))  # (B, 2, H, W)
        if all("label" in e for e in examples):
            labels = [_nlvr2_label(e["label"], d) for e, d in zip(examples, descriptions, strict=True)]
            batch["labels"] = torch.tensor(labels)
        return batch


def _nlvr2_label(value, description: str) -> int:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return int(value.lower() == "true")
    if value in (0, 1, True, False):
        return int(value)
    raise ValueError(f"{description}: label must be True/False (or 'True'/'False', 0/1), got {value!r}")


class ViltRetrievalCollator(_ViltCollator):
    """Retrieval training: per image, its caption (index 0) and `num_negatives` captions of other images.

    Examples hold `image`, `text` (one caption; or `captions`, a list, of which one is drawn) and optionally
    `image_id`. Negatives come from the other examples of the batch (with replacement when the batch is small).
    Returns `input_ids`, `attention_mask`, `token_type_ids` of shape `(B, 1 + K, T)`, `pixel_values`, `pixel_mask`,
    and `labels` (`(B,)`, zeros: the positive is first), the layout of `ViltForImageAndTextRetrieval`.
    """

    def __init__(self, processor, num_negatives: int = 15, image_id_column: str = "image_id", **kwargs):
        super().__init__(processor, **kwargs)
        if not isinstance(num_negatives, int) or num_negatives < 1:
            raise ValueError(f"num_negatives must be a positive integer, got {num_negatives!r}")
        self.num_negatives = num_negatives
        self.image_id_column = image_id_column

    def _caption(self, example, position):
        captions = example.get("captions")
        if captions:
            example = {**example, self.text_column: captions[int(torch.randint(len(captions), (),
                                                                               generator=self.generator))]}
        return _text(example, self.text_column, position)

    def __call__(self, examples: Sequence[Mapping]) -> dict:
        batch_size = len(examples)
        descriptions = [_describe(e, i) for i, e in enumerate(examples)]
        captions = [self._caption(e, i) for i, e in enumerate(examples)]
        ids = [e.get(self.image_id_column, i) for i, e in enumerate(examples)]
        texts = []
        for i in range(batch_size):
            others = [j for j in range(batch_size) if ids[j] != ids[i]]
            if not others:
                raise ValueError(f"{descriptions[i]}: retrieval negatives need examples with other images in the "
                                 "batch")
            draws = torch.randint(len(others), (self.num_negatives,), generator=self.generator).tolist()
            texts += [captions[i]] + [captions[others[k]] for k in draws]
        encoding = self._tokenize(texts)
        batch = {key: value.unflatten(0, (batch_size, 1 + self.num_negatives)) for key, value in encoding.items()}
        batch["pixel_values"], batch["pixel_mask"] = self._images(self._column(examples, self.image_column),
                                                                  descriptions)
        batch["labels"] = torch.zeros(batch_size, dtype=torch.long)
        return batch


def retrieval_evaluation_batch(processor, image, texts: Sequence[str]) -> dict:
    """One image against `texts` for retrieval evaluation: `input_ids` etc. of shape `(1, K, T)`, `pixel_values`
    `(1, 3, H, W)`, `pixel_mask` `(1, H, W)`; `ViltForImageAndTextRetrieval` returns `logits` `(1, K)`."""
    if len(texts) == 0:
        raise ValueError("texts is empty")
    encoding = processor.tokenizer(list(texts), padding="max_length", truncation=True,
                                   max_length=getattr(processor, "max_length", 40), return_tensors="pt")
    batch = {key: value[None] for key, value in encoding.items()}  # (1, K, T)
    batch.update(processor.image_processor([decode_image(image, "retrieval image")]))
    return batch


def retrieval_evaluation_pairs(num_images: int, num_texts: int, chunk_size: int = 64):
    """All (image, text) index pairs for retrieval evaluation, in chunks: yields `(image_index, text_indices)`.

    Score every image against every text: each chunk is one image and up to `chunk_size` texts, which
    `ViltForImageAndTextRetrieval` takes as `(1, K, T)` text inputs with one image.
    """
    if num_images < 1 or num_texts < 1:
        raise ValueError(f"need at least one image and one text, got {num_images} and {num_texts}")
    for image_index in range(num_images):
        for start in range(0, num_texts, chunk_size):
            yield image_index, list(range(start, min(start + chunk_size, num_texts)))
