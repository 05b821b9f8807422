"""Every code block of README.md and docs/*.md runs as written (transformers checks its documentation's examples the
same way), and every path, module and link the pages name exists.

- ```python blocks run in the default suite, each in a fresh namespace with a temporary folder as the working
  directory; the pages use tiny configs so that they are fast. A block that cannot run offline (it needs the Hub)
  is marked on the line before its fence with ``<!-- docs-test: skip (the reason) -->``: it is compiled, not run,
  reported as skipped with its reason, and `MAX_SKIPPED_PYTHON_BLOCKS` keeps such blocks few.
- ```bash blocks run behind the ``docs`` marker (``pytest -m docs``), as a reader follows the pages: in one
  temporary folder for the session that stands in for the repository root (``scripts/``, ``benchmarks/``,
  ``configs/`` and ``.venv`` linked into it), each command in a new bash with ``.venv`` activated, as the README
  says, in the order of the page. ``make demo`` runs first, since later pages use its folders. Commands too long for
  a test get small-budget flags appended through `BUDGETS`, an explicit list of (pattern, flags, preparation);
  ``make`` targets are checked with ``make -n`` and replaced by the command they run with such flags
  (`MAKE_TARGETS`). Skip-marked
  bash blocks (several GPUs, data sets or uploads this machine does not have) are reported as skipped with their
  reason.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON = {"python", "py"}
BASH = {"bash", "sh", "shell"}
SKIP_MARK = re.compile(r"^<!--\s*docs-test:\s*skip\s*\((?P<reason>.+)\)\s*-->$")
MAX_SKIPPED_PYTHON_BLOCKS = 2
COMMAND_TIMEOUT = 300
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


@dataclass(frozen=True)
class Block:
    """One fenced code block: its page, the line of its opening fence, language, text and skip reason."""

    page: Path
    line: int
    language: str
    code: str
    skip: str | None

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    def commands(self) -> list[str]:
        """The shell commands of a bash block: continuation lines joined, comment and blank lines dropped."""
        joined = re.sub(r"\\\n\s*", " ", self.code)
        return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def read_blocks(page: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, with the skip mark of the line before each opening fence."""
    lines = page.read_text().splitlines()
    blocks, index = [], 0
    while index < len(lines):
        if not lines[index].startswith("```"):
            index += 1
            continue
        start, language = index, lines[index][3:].strip().lower()
        end = start + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if end == len(lines):
            raise ValueError(f"{page.name}:{start + 1}: code block never closed")
        before = lines[start - 1].strip() if start > 0 else ""
        mark = SKIP_MARK.match(before)
        if before.startswith("<!--") and "docs-test" in before and mark is None:
            raise ValueError(f"{page.name}:{start}: malformed mark {before!r}; expected "
                             "'<!-- docs-test: skip (the reason) -->'")
        blocks.append(Block(page, start + 1, language, "\n".join(lines[start + 1:end]) + "\n",
                            mark["reason"] if mark else None))
        index = end + 1
    return blocks


BLOCKS = [block for page in PAGES for block in read_blocks(page)]
PYTHON_BLOCKS = [block for block in BLOCKS if block.language in PYTHON]
BASH_BLOCKS = [block for block in BLOCKS if block.language in BASH]


# ------------------------------------------------------------------------------------------------------------------
# Python blocks: the default suite.


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda block: block.id)
def test_python_block_runs(block, tmp_path, monkeypatch):
    code = compile(block.code, block.id, "exec")
    if block.skip:
        pytest.skip(f"{block.id}: {block.skip} (compiled, not run)")
    monkeypatch.chdir(tmp_path)
    exec(code, {"__name__": "__main__"})


def test_the_pages_have_blocks_and_few_are_skipped():
    skipped = [block for block in PYTHON_BLOCKS if block.skip]
    print("\n".join(f"skipped python block {block.id}: {block.skip}" for block in skipped))
    print("\n".join(f"skipped bash block {block.id}: {block.skip}" for block in BASH_BLOCKS if block.skip))
    assert len(PYTHON_BLOCKS) - len(skipped) >= 5 and len(BASH_BLOCKS) >= 5
    assert len(skipped) <= MAX_SKIPPED_PYTHON_BLOCKS, [block.id for block in skipped]
    for block in BLOCKS:
        assert block.language in PYTHON | BASH | {"", "text"}, f"{block.id}: unknown language {block.language!r}"


def test_the_readme_is_short_and_links_every_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 280  # a front page: the two commands, each study's results tables, links
    for page in PAGES[1:]:
        assert f"](docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"
    assert ". .venv/bin/activate" in readme


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    return {_slug(m[1]) for m in re.finditer(r"^#+\s+(.*)$", text, flags=re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_links_point_to_existing_files_and_headings(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.name}: link to missing {target}"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{page.name}: no heading for #{anchor} in {resolved.name}"


REPOSITORY_PATH = re.compile(
    r"^(?:src|tests|scripts|modeling|benchmarks|configs|docs|hub_cards|requirements)/[\w./-]*$")


def _resolves(dotted: str) -> bool:
    """Whether `dotted` (`detrvilt.a.b.Name`) is an importable module, or an attribute chain from one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_named_paths_and_modules_exist(page):
    """Every repository path and every `detrvilt.*` name in inline code (outside code blocks) exists: the pages
    follow the layout."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    for code in re.findall(r"`([^`]+)`", text):
        for word in code.split():
            if REPOSITORY_PATH.match(word) and "*" not in word:
                assert (ROOT / word).exists(), f"{page.name}: `{word}` does not exist"
        for dotted in re.findall(r"(?<![\w.])detrvilt(?:\.\w+)+", code):
            assert _resolves(dotted), f"{page.name}: `{dotted}` does not import"


# ------------------------------------------------------------------------------------------------------------------
# Bash blocks: `pytest -m docs`.

TINY_DETR = ("--backbone resnet18 --d_model 32 --encoder_layers 1 --decoder_layers 2 --attention_heads 4 --ffn_dim 64 "
             "--num_queries 6 --no_freeze_batch_norm")
TINY_DETR_DATA = "--synthetic_train_size 8 --synthetic_eval_size 4 --synthetic_image_size 64"
TINY_VILT_DATA = "--synthetic_train_size 16 --synthetic_eval_size 8 --per_device_train_batch_size 4"
DEMO_BUDGET = ("--max_steps 3 --batch_size 4 --train_images 16 --eval_images 4 --warmup_steps 1 --lr_drop_step 2 "
               "--no_progress_bar")
VILT_DEMO_BUDGET = ("--pretrain_steps 2 --finetune_steps 2 --batch_size 8 --caption_images 16 --vqa_train_questions 32 "
                    "--vqa_eval_questions 8 --pointing_images 8")


def write_small_coco(workdir: Path) -> None:
    """A COCO-layout folder of synthetic images where the COCO commands expect COCO 2017."""
    from detrvilt.data import make_shapes_dataset, write_coco_detection

    write_coco_detection(make_shapes_dataset(8, seed=0, image_size=64, max_objects=3), workdir / "coco", "train2017")
    write_coco_detection(make_shapes_dataset(4, seed=1, image_size=64, max_objects=3), workdir / "coco", "val2017")


# (pattern on the command as written, flags appended, preparation run in the working folder first). The docs name
# the small-budget runs next to the commands where it matters.
BUDGETS = [
    (r"^python scripts/train_detr\.py .*--dataset coco",
     f"{TINY_DETR} --shortest_edge 64 --max_steps 2 --save_strategy no --disable_tqdm true", write_small_coco),
    (r"^torchrun --nproc_per_node 2 scripts/train_detr_accelerate\.py ",
     f"{TINY_DETR} {TINY_DETR_DATA} --max_steps 2 --per_device_train_batch_size 2 --per_device_eval_batch_size 2 "
     "--progress_bar false", None),
    (r"^python scripts/train_detr_accelerate\.py --output_dir out/detr_small .*--checkpointing_steps 100$",
     f"{TINY_DETR_DATA} --max_steps 4 --checkpointing_steps 2 --progress_bar false", None),
    (r"^python scripts/train_detr_accelerate\.py --output_dir out/detr_requeue .*--resume_from_checkpoint latest$",
     f"{TINY_DETR_DATA} --max_steps 4 --checkpointing_steps 2 --progress_bar false", None),
    (r"^python scripts/train_detr_accelerate\.py --output_dir out/detr_small .*--resume_from_checkpoint",
     f"{TINY_DETR_DATA} --max_steps 4 --resume_from_checkpoint out/detr_small/checkpoint-2 --progress_bar false",
     None),
    (r"^python scripts/train_detr_accelerate\.py --output_dir out/detr_groups ",
     f"{TINY_DETR_DATA} --max_steps 2 --progress_bar false", None),
    (r"^python benchmarks/detr_convergence\.py ",
     "--seeds 0 --max_steps 4 --eval_every 2 --checkpoint_every 2 --train_images 16 --eval_images 6", None),
    (r"^python scripts/train_vilt_accelerate\.py --task pretrain --output_dir out/vilt_pretrain_small ",
     f"{TINY_VILT_DATA} --max_steps 2 --progress_bar false", None),
    (r"^python scripts/train_vilt\.py --task vqa --model_name_or_path out/vilt_pretrain_small ",
     f"{TINY_VILT_DATA} --max_steps 2 --save_strategy no --disable_tqdm true", None),
    (r"^python scripts/train_detr_panoptic\.py ",
     "--steps 2 --head_steps 1 --num_train_images 8 --num_eval_images 4 --log_every 0", None),
    (r"^python benchmarks/vilt_pretraining\.py ",
     "--seeds 0 --label_budgets 32 --ablations no_wpa --pretrain_steps 2 --caption_images 32 --finetune_steps 2 "
     "--nlvr2_train_pairs 32 --nlvr2_steps 2 --vqa_eval_questions 10 --nlvr2_eval_pairs 10 --pretrain_eval_images 10 "
     "--pointing_images 10 --hidden_size 32 --num_hidden_layers 1 --num_attention_heads 2", None),
    (r"^python benchmarks/run_all\.py --repeats",
     "--only preprocessing --repeats 1 --warmup 0 --output out/run_all.json", None),
]

# make target -> (the command `make -n` must show, the commands run in its place; None: only checked).
MAKE_TARGETS = {
    "demo": ("scripts/demo.py --output_dir outputs/demo", [
        f"python scripts/demo.py --output_dir outputs/demo {DEMO_BUDGET} --no_vilt",
        # what `--vilt` (the default) runs after DETR, with its own small budget
        f"python -m detrvilt.training.vilt.demo --output_dir outputs/demo/vilt {VILT_DEMO_BUDGET}",
    ]),
    "test": ("-m pytest", None),  # the default suite itself: it runs this file's Python blocks
}


def with_budget(command: str, workdir: Path | None = None, used: set | None = None) -> str:
    """`command` with the flags of its `BUDGETS` entry appended (after running the entry's preparation in
    `workdir`), or as it is."""
    matches = [(pattern, flags, prepare) for pattern, flags, prepare in BUDGETS if re.search(pattern, command)]
    if len(matches) > 1:
        raise AssertionError(f"several BUDGETS entries match {command!r}")
    if not matches:
        return command
    pattern, flags, prepare = matches[0]
    if used is not None:
        used.add(pattern)
    if prepare is not None and workdir is not None:
        prepare(workdir)
    return shlex.join(shlex.split(command, comments=True) + flags.split())


class Session:
    """A reader's shell session in a temporary stand-in for the repository root."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        for name in ("scripts", "benchmarks", "configs", ".venv"):
            (workdir / name).symlink_to(ROOT / name)
        self.environment = {**os.environ, **OFFLINE}
        self.done: set[str] = set()

    def run(self, command: str) -> None:
        """Run one command of a page (each at most once: `make demo` runs first, for the pages that use it)."""
        if command in self.done:
            return
        if command.startswith("make "):
            self._make(command)
        else:
            self._bash(with_budget(command, self.workdir))
        self.done.add(command)

    def _make(self, command: str) -> None:
        target = command.split()[1]
        if target not in MAKE_TARGETS:
            raise AssertionError(f"no entry in MAKE_TARGETS for {command!r}")
        shown, replacement = MAKE_TARGETS[target]
        dry = subprocess.run(["make", "-n", "-C", str(ROOT), target], capture_output=True, text=True, timeout=60)
        assert dry.returncode == 0 and shown in dry.stdout, f"make -n {target}:\n{dry.stdout}{dry.stderr}"
        for replaced in replacement or []:
            self._bash(replaced)

    def _bash(self, command: str) -> None:
        script = f"set -e\n. .venv/bin/activate\n{command}\n"
        try:
            result = subprocess.run(["bash", "-c", script], cwd=self.workdir, env=self.environment,
                                    capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired as error:
            raise AssertionError(f"{command!r} ran past {COMMAND_TIMEOUT} s") from error
        assert result.returncode == 0, (f"{command!r} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                                        f"{result.stderr[-5000:]}")


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    session = Session(tmp_path_factory.mktemp("docs_session"))
    session.run("make demo")
    return session


@pytest.mark.docs
@pytest.mark.parametrize("block", BASH_BLOCKS, ids=lambda block: block.id)
def test_bash_block_runs(block, session):
    if block.skip:
        pytest.skip(f"{block.id}: {block.skip}")
    for command in block.commands():
        session.run(command)


def test_every_budget_entry_matches_a_command_on_the_pages():
    """An entry that matches no command means a page changed under it; a `make` command needs its entry."""
    commands = [command for block in BASH_BLOCKS if not block.skip for command in block.commands()]
    for pattern, _, _ in BUDGETS:
        assert [c for c in commands if re.search(pattern, c)], f"BUDGETS pattern {pattern!r} matches no command"
    for command in commands:
        if command.startswith("make "):
            assert command.split()[1] in MAKE_TARGETS, command


def test_budget_flags_follow_the_command_as_written():
    written = "python benchmarks/run_all.py --repeats 7"
    assert with_budget(written) == written + " --only preprocessing --repeats 1 --warmup 0 --output out/run_all.json"
    assert with_budget("python scripts/visualize.py --help") == "python scripts/visualize.py --help"
