"""VQA targets: answer normalization, soft scores and the answer vocabulary (saved with the model as `id2label`).

Follows ViLT's official ``vilt/utils/write_vqa.py``: an answer given by ``n`` of the (ten) annotators scores
0, 0.3, 0.6, 0.9, 1.0 for ``n`` = 0, 1, 2, 3, >= 4 (the VQA accuracy ``min(n / 3, 1)`` as the official code rounds
it); answers are normalized as the VQA evaluation does (lower case, punctuation, number words to digits, articles
dropped); the vocabulary is every normalized answer given at least `min_count` times (9 in the official code, which
gives VQAv2's 3129 answers).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import torch

_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
            "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_PUNCTUATION = re.compile(r"[;/\[\]\"{}()=+\\_\-><@`,?!*#%^&$~|]")
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")


def normalize_answer(answer: str) -> str:
    """The VQA evaluation's normalization of an answer string (lower case, no punctuation, digits, no articles)."""
    if not isinstance(answer, str):
        raise TypeError(f"answer must be a string, got {type(answer).__name__}: {answer!r}")
    text = answer.lower().replace("\n", " ").replace("\t", " ").strip()
    text = _PERIOD.sub("", _PUNCTUATION.sub("", text.replace("'", "")))
    words = [_NUMBERS.get(word, word) for word in text.split() if word not in _ARTICLES]
    return " ".join(words)


def vqa_score(count: int) -> float:
    """Soft score of an answer given by `count` annotators: 0, 0.3, 0.6, 0.9, 1.0 for 0, 1, 2, 3, >= 4."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    return (0.0, 0.3, 0.6, 0.9)[count] if count < 4 else 1.0


def vqa_targets(answers: Sequence[str], label2id: Mapping[str, int]) -> torch.Tensor:
    """`torch.FloatTensor` of shape `(len(label2id),)`: the soft score of each vocabulary answer for one question."""
    target = torch.zeros(len(label2id), dtype=torch.float32)
    for answer, count in Counter(normalize_answer(a) for a in answers).items():
        index = label2id.get(answer)
        if index is not None:
            target[index] = vqa_score(count)
    return target


def build_answer_vocabulary(answer_lists: Iterable[Sequence[str]], min_count: int = 9) -> dict[int, str]:
    """`id2label` of every normalized answer given at least `min_count` times, most frequent first (ties by name).

    Args:
        answer_lists: per question, the annotators' answers (e.g. a dataset's `answers` column).
        min_count (`int`, defaults to 9): the official threshold on VQAv2; use 1 for small sets.
    """
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    counts = Counter(normalize_answer(a) for answers in answer_lists for a in answers)
    kept = sorted((a for a, c in counts.items() if c >= min_count and a), key=lambda a: (-counts[a], a))
    if not kept:
        raise ValueError(f"no answer is given at least min_count={min_count} times ({len(counts)} distinct answers)")
    return dict(enumerate(kept))


def label2id_from(id2label: Mapping) -> dict[str, int]:
    """The inverse of an `id2label` (keys may be strings, as after a JSON round trip)."""
    return {label: int(index) for index, label in id2label.items()}
