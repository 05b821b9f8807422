"""`vqa_score` equals the official VQA evaluation (GT-Vision-Lab/VQA, vqaEval.py, Python 3 version): checked
against a second, independent re-implementation of the official rules written below in a different way (a
character loop instead of regular expressions, annotator records with ids as the official data has, the
contractions table typed out pair by pair), on hand-picked tricky answers and on a random set rich in them."""

import numpy as np
import pytest

from detrvilt.data.vilt.vqa import OFFICIAL_CONTRACTIONS, normalize_answer, process_punctuation
from detrvilt.evaluation import load_metric

MARKS = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
           "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
# The official contractions table, one "spelling contracted-form" pair per line.
CONTRACTIONS_TABLE = """
aint ain't
arent aren't
cant can't
couldve could've
couldnt couldn't
couldn'tve couldn't've
couldnt've couldn't've
didnt didn't
doesnt doesn't
dont don't
hadnt hadn't
hadnt've hadn't've
hadn'tve hadn't've
hasnt hasn't
havent haven't
hed he'd
hed've he'd've
he'dve he'd've
hes he's
howd how'd
howll how'll
hows how's
Id've I'd've
I'dve I'd've
Im I'm
Ive I've
isnt isn't
itd it'd
itd've it'd've
it'dve it'd've
itll it'll
let's let's
maam ma'am
mightnt mightn't
mightnt've mightn't've
mightn'tve mightn't've
mightve might've
mustnt mustn't
mustve must've
neednt needn't
notve not've
oclock o'clock
oughtnt oughtn't
ow's'at 'ow's'at
'ows'at 'ow's'at
'ow'sat 'ow's'at
shant shan't
shed've she'd've
she'dve she'd've
she's she's
shouldve should've
shouldnt shouldn't
shouldnt've shouldn't've
shouldn'tve shouldn't've
somebody'd somebodyd
somebodyd've somebody'd've
somebody'dve somebody'd've
somebodyll somebody'll
somebodys somebody's
someoned someone'd
someoned've someone'd've
someone'dve someone'd've
someonell someone'll
someones someone's
somethingd something'd
somethingd've something'd've
something'dve something'd've
somethingll something'll
thats that's
thered there'd
thered've there'd've
there'dve there'd've
therere there're
theres there's
theyd they'd
theyd've they'd've
they'dve they'd've
theyll they'll
theyre they're
theyve they've
twas 'twas
wasnt wasn't
wed've we'd've
we'dve we'd've
weve we've
werent weren't
whatll what'll
whatre what're
whats what's
whatve what've
whens when's
whered where'd
wheres where's
whereve where've
whod who'd
whod've who'd've
who'dve who'd've
wholl who'll
whos who's
whove who've
whyll why'll
whyre why're
whys why's
wont won't
wouldve would've
wouldnt wouldn't
wouldnt've wouldn't've
wouldn'tve wouldn't've
yall y'all
yall'll y'all'll
y'allll y'all'll
yall'd've y'all'd've
y'alld've y'all'd've
y'all'dve y'all'd've
youd you'd
youd've you'd've
you'dve you'd've
youll you'll
youre you're
youve you've
"""
CONTRACTIONS = dict(line.split(" ") for line in CONTRACTIONS_TABLE.strip().splitlines())


def reference_punctuation(text):
    has_digit_comma_digit = any(text[i].isdecimal() and text[i + 1] == "," and text[i + 2].isdecimal()
                                for i in range(len(text) - 2))
    out = text
    for mark in MARKS:
        if (mark + " ") in text or (" " + mark) in text or has_digit_comma_digit:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    kept, removed = [], 0
    for i, character in enumerate(out):
        followed_by_digit = i + 1 < len(out) and out[i + 1].isdecimal()
        if character == "." and not followed_by_digit and removed < 32:
            removed += 1
            continue
        kept.append(character)
    return "".join(kept)


def reference_digits_articles(text):
    words = []
    for word in text.lower().split():
        word = NUMBERS.get(word, word)
        if word not in ("a", "an", "the"):
            words.append(word)
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def reference_accuracy(prediction, answers):
    """The official per-question loop: records with answer ids, the left-out record removed by identity."""
    prediction = prediction.replace("\n", " ").replace("\t", " ").strip()
    prediction = reference_digits_articles(reference_punctuation(prediction))
    records = [{"answer_id": i + 1, "answer": answer} for i, answer in enumerate(answers)]
    if len({record["answer"] for record in records}) > 1:
        for record in records:
            record["answer"] = reference_punctuation(record["answer"])
    accuracies = []
    for left_out in records:
        others = [record for record in records if record != left_out]
        accuracies.append(min(1, len([r for r in others if r["answer"] == prediction]) / 3))
    return sum(accuracies) / len(accuracies)


# (prediction, the ten answers, the official accuracy worked out by hand)
TRICKY = [
    ("t-shirt", ["t-shirt"] * 10, 0.0),  # unanimous answers are not processed, the prediction becomes "t shirt"
    ("t-shirt", ["t-shirt"] * 9 + ["shirt"], 1.0),  # disagreement: every answer becomes "t shirt" too
    ("t shirt", ["t-shirt"] * 9 + ["shirt"], 1.0),
    ("tshirt", ["t-shirt"] * 9 + ["shirt"], 0.0),
    ("10,000", ["10000"] * 10, 1.0),  # digit-comma-digit: the comma is deleted
    ("10,000", ["10,000"] * 10, 0.0),
    ("10,000", ["10,000"] * 5 + ["10000"] * 5, 1.0),
    ("1,5-2", ["152"] * 10, 1.0),  # with a digit-comma-digit every listed mark is deleted, "-" too
    ("a dog", ["dog"] * 10, 1.0),  # articles dropped from the prediction ...
    ("dog", ["the dog"] * 10, 0.0),  # ... never from the answers
    ("The Dog", ["dog"] * 3 + ["cat"] * 7, 0.9),  # 3 matches: 7 subsets see 3, 3 subsets see 2 -> 0.9
    ("dont", ["don't"] * 4 + ["no"] * 6, 1.0),  # contraction restored in the prediction
    ("don't", ["dont"] * 4 + ["no"] * 6, 0.0),  # "'" is not a listed mark: answers keep their spelling
    ("whats that", ["what's that"] * 10, 1.0),
    ("two", ["2"] * 10, 1.0),  # digit words in the prediction
    ("two", ["two"] * 10, 0.0),  # ... never in the answers
    ("none", ["0"] * 2 + ["no"] * 8, 0.6),
    ("yes!", ["yes"] * 10, 1.0),  # "!" not touching a space becomes a space, stripped by the split
    ("left !", ["left"] * 10, 1.0),  # "!" touching a space is deleted
    ("left - right", ["left right"] * 10, 1.0),  # "-" touches a space: every "-" deleted, spaces collapse
    ("left-right", ["left right"] * 10, 1.0),
    ("red-green - blue", ["redgreen blue"] * 10, 1.0),  # one "-" touches a space, so both go
    ("red - green", ["red - green"] * 9 + ["red"], 0.0),  # the answers' own double space stays: "red  green"
    ("red  green", ["red - green"] * 9 + ["red"], 0.0),  # the prediction's double space collapses
    ("3.5", ["3.5"] * 10, 1.0),  # a point before a digit stays
    ("3.", ["3"] * 10, 1.0),
    ("e.g. this", ["eg this"] * 10, 1.0),
    ("x:y", ["x:y"] * 10, 1.0),  # ":" is not a listed mark
    ("Yes", ["yes"] * 10, 1.0),  # the prediction is lower-cased ...
    ("yes", ["Yes"] * 10, 0.0),  # ... the answers never
    ("yes", ["yes", "Yes!", "yes", "no", "YES", "yes", "no", "yes ", "yes", "nope"], 1.0),  # "yes " keeps its space
    ("yes", ["yes"], 0.0),  # one annotator: nobody is left to agree with
    ("2", ["2"] * 2 + ["3"] * 8, 0.6),
    ("2", ["2"] + ["3"] * 9, 0.3),
    ("  two\tdogs\n", ["2 dogs"] * 10, 1.0),
]


def test_the_contractions_table_is_the_official_one():
    assert OFFICIAL_CONTRACTIONS == CONTRACTIONS and len(OFFICIAL_CONTRACTIONS) == 120


@pytest.mark.parametrize("prediction, answers, expected", TRICKY)
def test_vqa_score_equals_the_official_rules_on_tricky_answers(prediction, answers, expected):
    result = load_metric("vqa_score").compute(predictions=[prediction], references=[answers])
    assert reference_accuracy(prediction, answers) == pytest.approx(expected, abs=1e-12)
    assert result["vqa_score"] == pytest.approx(expected, abs=1e-12)
    assert result["overall"] == round(100 * expected, 2)


def test_processing_rules_match_the_reference_on_single_strings():
    for text in ("t-shirt", "10,000", "t-shirt - red", "a.b.c", "." * 40 + "x", "3.14.", "(hi)", "semi;colon; x",
                 "x ,y", "1,2,3-4", "what's", "don't", "It's 5 o'clock", "A man.", "the ten dogs", "Dont!", "[a] {b}"):
        assert process_punctuation(text) == reference_punctuation(text), text
        expected = reference_digits_articles(reference_punctuation(text.strip()))
        assert normalize_answer(text) == expected, text
    assert process_punctuation("." * 40 + "x") == "." * 8 + "x"  # the official count: 32 periods at most


def random_answer(rng):
    pieces = ["t-shirt", "10,000", "1,5", "don't", "dont", "whats", "two", "2", "ten", "none", "the", "a", "an",
              "Yes", "yes", "no", "dog", "dogs", "3.5", "3.", "e.g.", "x:y", "it's", "-", "!", "?", "(", ")", ",",
              ";", "/", "'", ".", "red", "left", "A"]
    words = [pieces[i] for i in rng.integers(len(pieces), size=rng.integers(1, 4))]
    separators = rng.choice(["", " ", "  "], size=len(words) - 1)
    text = words[0] + "".join(s + w for s, w in zip(separators, words[1:], strict=True))
    return text + (" " if rng.random() < 0.05 else "")


def test_vqa_score_equals_the_official_rules_on_a_random_set_where_the_lenient_score_does_not():
    rng = np.random.default_rng(0)
    predictions, references = [], []
    for _ in range(600):
        pool = [random_answer(rng) for _ in range(3)]
        answers = [pool[0]] * 10 if rng.random() < 0.4 else [pool[i] for i in rng.integers(3, size=10)]
        predictions.append(answers[0] if rng.random() < 0.5 else random_answer(rng))
        references.append(answers)
    expected = np.mean([reference_accuracy(p, a) for p, a in zip(predictions, references, strict=True)])
    official = load_metric("vqa_score").compute(predictions=predictions, references=references)
    lenient = load_metric("vqa_score_lenient").compute(predictions=predictions, references=references)
    assert official["vqa_score"] == pytest.approx(expected, abs=1e-12)
    assert abs(lenient["vqa_score"] - expected) > 0.01  # normalizing the answers too is not the official score
    assert expected > 0.05  # the set is not degenerate: many predictions score


def test_lenient_score_normalizes_every_answer():
    lenient = load_metric("vqa_score_lenient")
    assert lenient.compute(predictions=["t-shirt"], references=[["t-shirt"] * 10])["vqa_score"] == 1.0
    assert lenient.compute(predictions=["two"], references=[["Two"] * 10])["vqa_score"] == 1.0
    assert lenient.compute(predictions=["yes"], references=[["yes"]])["vqa_score"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="references"):
        lenient.compute(predictions=["yes", "no"], references=[["yes"] * 10])
