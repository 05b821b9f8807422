"""VQA answers: the official evaluation's answer processing, soft scores and the answer vocabulary (saved with the
model as `id2label`).

**Answer processing** follows the facts of the official VQA evaluation (GT-Vision-Lab/VQA,
``PythonEvaluationTools/vqaEvaluation/vqaEval.py``, its Python 3 version: ``processPunctuation`` and
``processDigitArticle``), re-written here with its quirks, each kept on purpose:

- [`process_punctuation`]: the 21 marks ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` (not ``:``, not ``'``,
  not ``.``). A mark is deleted everywhere when it touches a space anywhere in the text, or when the text holds a
  digit-comma-digit anywhere (then *every* listed mark is deleted); otherwise each occurrence becomes a space. The
  test is made on the input text, not on the text as it is being changed. So ``t-shirt`` becomes ``t shirt``,
  ``10,000`` becomes ``10000`` and ``t-shirt - red`` becomes ``tshirt  red``. Then every ``.`` not followed by a
  digit is deleted (the official pattern meant "not between digits" but its look-behind is written as a
  look-ahead, so ``3.5`` keeps its point and ``3.`` loses it), at most 32 of them (the official call passes
  ``re.UNICODE``, whose value is 32, where the count goes);
- [`process_digit_article`]: lower case, split on white space, number words ``none``/``zero``..``ten`` to digits,
  articles ``a``/``an``/``the`` dropped, then a word found in the official contractions table is replaced by its
  contracted form (``dont`` -> ``don't``, ``whats`` -> ``what's``; see [`OFFICIAL_CONTRACTIONS`]), joined by single
  spaces.

The official evaluation processes a **prediction** fully (new lines and tabs to spaces, strip, punctuation, then
digits, articles and contractions: [`normalize_answer`]), but the **annotators' answers** only with the punctuation
rule, and only when they are not all the same string; that asymmetry lives in the `vqa_score` metric
(``detrvilt.evaluation``).

**Targets and vocabulary** follow ViLT's official ``vilt/utils/write_vqa.py``: every annotator answer gets the full
processing of a prediction ([`normalize_answer`]), an answer given by ``n`` of the (ten) annotators scores 0, 0.3,
0.6, 0.9, 1.0 for ``n`` = 0, 1, 2, 3, >= 4 (the VQA accuracy ``min(n / 3, 1)`` as the official code rounds it); the
vocabulary is every processed answer given at least `min_count` times (9 in the official code, which gives VQAv2's
3129 answers).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import torch

OFFICIAL_PUNCTUATION = tuple(';/[]"{}()=+\\_-><@`,?!')
OFFICIAL_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                         "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
OFFICIAL_ARTICLES = frozenset({"a", "an", "the"})
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD_BEFORE_NON_DIGIT = re.compile(r"\.(?!\d)")
_MAX_PERIODS_REMOVED = 32  # the official `sub(..., re.UNICODE)`: re.UNICODE (32) lands in the count argument

# The contracted forms of the official table. Each is reached from every spelling that lacks exactly one of its
# apostrophes ("dont" -> "don't"; "couldnt've" and "couldn'tve" -> "couldn't've", but not "couldntve"); the keys of
# the capitalised forms ("Im", "Ive", "Id've") can never match, the answer being lower-cased first.
_CONTRACTED_FORMS = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't he'd "
    "he'd've he's how'd how'll how's I'd've I'm I've isn't it'd it'd've it'll ma'am mightn't mightn't've might've "
    "mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't shouldn't've "
    "somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's something'd something'd've "
    "something'll that's there'd there'd've there're there's they'd they'd've they'll they're they've 'twas wasn't "
    "we'd've we've weren't what'll what're what's what've when's where'd where's where've who'd who'd've who'll "
    "who's who've why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've "
    "you'll you're you've"
).split()


def _official_contractions() -> dict[str, str]:
    table = {}
    for form in _CONTRACTED_FORMS:
        for position in (i for i, character in enumerate(form) if character == "'"):
            table[form[:position] + form[position + 1:]] = form
    # Three entries of the official table break the pattern: two map a form to itself, one the other way round.
    table.update({"let's": "let's", "she's": "she's", "somebody'd": "somebodyd"})
    return table


OFFICIAL_CONTRACTIONS = _official_contractions()


def process_punctuation(text: str) -> str:
    """The official evaluation's punctuation rule (see the module docstring), quirks included."""
    touches_space = {mark for mark in OFFICIAL_PUNCTUATION if mark + " " in text or " " + mark in text}
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = "".join(("" if delete_all or character in touches_space else " ")
                  if character in OFFICIAL_PUNCTUATION else character for character in text)
    return _PERIOD_BEFORE_NON_DIGIT.sub("", out, count=_MAX_PERIODS_REMOVED)


def process_digit_article(text: str) -> str:
    """The official evaluation's word rule: lower case, number words to digits, articles dropped, contractions."""
    words = [OFFICIAL_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(OFFICIAL_CONTRACTIONS.get(word, word) for word in words if word not in OFFICIAL_ARTICLES)


def normalize_answer(answer: str) -> str:
    """The official evaluation's processing of a predicted answer: new lines and tabs to spaces, strip, then
    [`process_punctuation`] and [`process_digit_article`]. (`"T-shirt"` -> `"t shirt"`, `"Two dogs."` ->
    `"2 dogs"`, `"10,000"` -> `"10000"`.)"""
    if not isinstance(answer, str):
        raise TypeError(f"answer must be a string, got {type(answer).__name__}: {answer!r}")
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(text))


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
