"""The dataclasses the ViLT training scripts parse with `HfArgumentParser` (every field has its `--help` text)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..arguments import BaseTrainingArguments, LoopArguments, StreamingArguments
from .optimization import (
    VILT_BETAS,
    VILT_EPS,
    VILT_HEAD_LR_MULTIPLIER,
    VILT_LEARNING_RATE,
    VILT_WARMUP_RATIO,
    VILT_WEIGHT_DECAY,
)

VILT_TASKS = ("pretrain", "vqa", "nlvr2", "retrieval")
VILT_DATA_SOURCES = ("synthetic", "files", "disk")


@dataclass
class ViltModelArguments:
    """Which ViLT to train: a saved model or pretraining checkpoint, or a new one from these settings."""

    model_name_or_path: str | None = field(default=None, metadata={
        "help": "A local folder with a saved detrvilt ViLT. A pretraining checkpoint (ViltForPreTraining) starts a "
                "fine-tuning task: its transformer is loaded, the pretraining heads are dropped and the task head is "
                "created (retrieval: from the ITM head's 'match' row; NLVR2: the second image's modality type from "
                "the first's). A model of the task's own class continues as it is. Without it a new model is built "
                "from the settings below."})
    hidden_size: int = field(default=768, metadata={"help": "Width of the transformer (ViLT-B/32: 768)."})
    num_hidden_layers: int = field(default=12, metadata={"help": "Number of transformer blocks (ViLT-B/32: 12)."})
    num_attention_heads: int = field(default=12, metadata={"help": "Attention heads per block (ViLT-B/32: 12)."})
    intermediate_size: int = field(default=3072, metadata={"help": "Hidden size of each block's MLP (3072)."})
    patch_size: int = field(default=32, metadata={"help": "Side of the square image patches in pixels (32)."})
    image_size: int = field(default=384, metadata={
        "help": "Side of the image the patch-position table is made for (384); other sizes are interpolated."})
    max_image_length: int = field(default=-1, metadata={
        "help": "Patches kept per image in training (the paper's pretraining: 200); -1 keeps all (fine-tuning)."})
    hidden_dropout_prob: float = field(default=0.1, metadata={"help": "Dropout in the transformer (official 0.1)."})
    pretraining_objectives: str = field(default="mlm,itm,wpa", metadata={
        "help": "Pretraining only: comma-separated objectives among mlm (masked language modeling), itm "
                "(image-text matching) and wpa (word-patch alignment)."})
    wpa_loss_weight: float = field(default=0.1, metadata={
        "help": "Pretraining only: weight of the WPA loss in the total (the official 0.1)."})
    use_pretrained_vit: bool = field(default=False, metadata={
        "help": "Initialise the transformer from timm's ImageNet ViT (--vit), which must be in the local timm/Hub "
                "cache: nothing is downloaded here. Needs the ViT's width, depth and patch size."})
    vit: str = field(default="vit_base_patch32_384", metadata={"help": "The timm ViT name for --use_pretrained_vit."})
    vit_checkpoint: str | None = field(default=None, metadata={
        "help": "A local file with a timm ViT state dict (.safetensors, .pth or .bin) to initialise the transformer "
                "from, instead of timm's cache."})

    def __post_init__(self):
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size",
                     "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be a positive integer, got {getattr(self, name)!r}")


@dataclass
class ViltDataArguments:
    """The task, where its data comes from, and how images and texts are prepared."""

    task: str = field(default="vqa", metadata={
        "help": f"One of {VILT_TASKS}: pretraining (MLM + ITM + WPA on captions), VQA, NLVR2 or image-text "
                "retrieval (1 positive + --num_negatives captions per image)."})
    dataset: str = field(default="synthetic", metadata={
        "help": f"Data source, one of {VILT_DATA_SOURCES}: the built-in synthetic scenes; 'files' for the official "
                "formats (pretrain/retrieval: Karpathy's dataset_coco.json / dataset_flickr30k.json; vqa: VQAv2 "
                "questions + annotations json; nlvr2: the json lines), see --train_file and friends; 'disk' for a "
                "DatasetDict saved with save_to_disk (--dataset_path)."})
    dataset_name: str | None = field(default=None, metadata={
        "help": "A Hub dataset id or a local folder, read with datasets.load_dataset, in the task's columns: VQA "
                "image, question, answers (a list of strings, or VQAv2's list of dicts with answer), question_id; "
                "pretrain/retrieval image and caption or captions; NLVR2 image_0, image_1, text, label. Replaces "
                "--dataset."})
    dataset_config_name: str | None = field(default=None, metadata={
        "help": "For --dataset_name: the dataset's configuration name."})
    train_split_name: str = field(default="train", metadata={"help": "For --dataset_name: the training split."})
    eval_split_name: str = field(default="validation", metadata={
        "help": "For --dataset_name: the evaluation split ('' for none)."})
    train_file: str | None = field(default=None, metadata={
        "help": "For --dataset files: Karpathy split json (pretrain, retrieval), VQAv2 questions json (vqa) or NLVR2 "
                "train.json lines (nlvr2)."})
    train_annotations_file: str | None = field(default=None, metadata={
        "help": "For --dataset files and --task vqa: the VQAv2 annotations json of the training questions."})
    train_images_dir: str | None = field(default=None, metadata={
        "help": "For --dataset files: the training images folder (Karpathy: the folder filepath/filename are "
                "relative to; VQAv2: e.g. train2014/; NLVR2: the train images folder)."})
    eval_file: str | None = field(default=None, metadata={
        "help": "For --dataset files: the evaluation file (VQAv2 val questions, NLVR2 dev.json). Karpathy's json "
                "holds both splits: leave it empty to reuse --train_file with --eval_splits."})
    eval_annotations_file: str | None = field(default=None, metadata={
        "help": "For --dataset files and --task vqa: the VQAv2 annotations json of the evaluation questions."})
    eval_images_dir: str | None = field(default=None, metadata={
        "help": "For --dataset files: the evaluation images folder (default: --train_images_dir)."})
    train_splits: str = field(default="train,restval", metadata={
        "help": "For Karpathy files: comma-separated splits to train on."})
    eval_splits: str = field(default="test", metadata={
        "help": "For Karpathy files: comma-separated splits to evaluate on (retrieval: 'test' is the 5k/1k set)."})
    dataset_path: str | None = field(default=None, metadata={"help": "For --dataset disk: the save_to_disk folder."})
    train_split: str = field(default="train", metadata={"help": "For --dataset disk: the training split."})
    eval_split: str = field(default="validation", metadata={
        "help": "For --dataset disk: the evaluation split ('' for none)."})
    max_train_examples: int | None = field(default=None, metadata={
        "help": "Keep only the first this many training examples (quick runs)."})
    max_eval_examples: int | None = field(default=None, metadata={
        "help": "Keep only the first this many evaluation examples (retrieval: images)."})
    synthetic_train_size: int = field(default=2000, metadata={
        "help": "Synthetic set: training examples (images, questions or pairs; seed 0)."})
    synthetic_eval_size: int = field(default=200, metadata={"help": "Synthetic set: held-out examples (seed 1)."})
    synthetic_image_size: int = field(default=128, metadata={"help": "Synthetic set: side of the square images."})
    synthetic_grid: int = field(default=0, metadata={
        "help": "Synthetic set: draw objects in whole cells of this many pixels (e.g. the patch size: a small object "
                "fills one patch, a large one 2 x 2); 0 places them anywhere."})
    shortest_edge: int = field(default=384, metadata={
        "help": "Resize images so the shorter side is this (the paper: 384; the longer side is capped at "
                "1333/800 of it)."})
    max_text_length: int = field(default=40, metadata={"help": "Text length in tokens, [CLS]/[SEP] included (40)."})
    augment: bool = field(default=False, metadata={
        "help": "RandAugment on training images (the paper's fine-tuning: N=2, M=9, without Invert and Cutout)."})
    mlm_probability: float = field(default=0.15, metadata={
        "help": "Pretraining: chance of each word (each word piece without --whole_word_masking) to be masked."})
    whole_word_masking: bool = field(default=True, metadata={
        "help": "Pretraining: mask whole words, every piece of a chosen word (the paper); --no_whole_word_masking "
                "masks word pieces one by one (the paper's ablation)."})
    num_negatives: int = field(default=15, metadata={
        "help": "Retrieval training: negative captions per image (the paper: 15), drawn from the batch."})
    answer_min_count: int = field(default=9, metadata={
        "help": "VQA: keep answers given at least this many times in training (9 gives VQAv2's 3129 answers); "
                "the synthetic set uses its fixed vocabulary."})

    def __post_init__(self):
        if self.task not in VILT_TASKS:
            raise ValueError(f"--task must be one of {VILT_TASKS}, got {self.task!r}")
        if self.dataset not in VILT_DATA_SOURCES:
            raise ValueError(f"--dataset must be one of {VILT_DATA_SOURCES}, got {self.dataset!r}")
        if self.dataset_name is not None and self.dataset != "synthetic":
            raise ValueError(f"--dataset_name and --dataset {self.dataset!r} name two data sources: give one (got "
                             f"--dataset_name {self.dataset_name!r})")
        if self.dataset == "files" and (self.train_file is None or self.train_images_dir is None):
            raise ValueError("--dataset files needs --train_file and --train_images_dir")
        if self.dataset == "disk" and self.dataset_path is None:
            raise ValueError("--dataset disk needs --dataset_path")
        for name in ("synthetic_train_size", "synthetic_eval_size", "shortest_edge", "num_negatives"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.synthetic_grid < 0:
            raise ValueError(f"--synthetic_grid must be >= 0 (0: no grid), got {self.synthetic_grid!r}")
        if self.max_text_length < 2:
            raise ValueError(f"--max_text_length must be >= 2, got {self.max_text_length!r}")


@dataclass
class ViltTrainingArguments(BaseTrainingArguments):
    """`TrainingArguments` with ViLT's official optimization as defaults, plus the head learning-rate multiplier."""

    learning_rate: float = field(default=VILT_LEARNING_RATE, metadata={"help": "AdamW learning rate (official 1e-4)."})
    weight_decay: float = field(default=VILT_WEIGHT_DECAY, metadata={
        "help": "AdamW weight decay (official 0.01), never on biases and LayerNorms."})
    adam_beta2: float = field(default=VILT_BETAS[1], metadata={"help": "AdamW beta2 (official 0.98)."})
    adam_epsilon: float = field(default=VILT_EPS, metadata={"help": "AdamW epsilon (official 1e-8)."})
    warmup_steps: float = field(default=VILT_WARMUP_RATIO, metadata={
        "help": "Linear warmup: a fraction of the steps when < 1 (official 0.1), else a number of steps; then the "
                "learning rate decays linearly to 0 (--lr_scheduler_type linear)."})
    remove_unused_columns: bool = field(default=False, metadata={
        "help": "Must stay False for ViLT: the collators read the raw image and text columns."})
    head_lr_multiplier: float = field(default=VILT_HEAD_LR_MULTIPLIER, metadata={
        "help": "Learning-rate factor of the VQA/NLVR2 classifier (official 10; pretraining and retrieval heads "
                "train at the base rate)."})
    retrieval_text_batch_size: int = field(default=64, metadata={
        "help": "Retrieval evaluation: captions scored per forward pass and image (the full matrix is scored)."})


@dataclass
class ViltAccelerateArguments(StreamingArguments, LoopArguments):
    """ViLT's optimizer settings of the Accelerate loop (the official ones as defaults); the rest is
    [`LoopArguments`] and the `--streaming` options ([`StreamingArguments`])."""

    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training examples per process and batch."})
    per_device_eval_batch_size: int = field(default=32, metadata={
        "help": "Evaluation examples (retrieval: images) per process and batch."})
    max_grad_norm: float = field(default=0.0, metadata={
        "help": "Gradient clipping norm; 0 turns clipping off (the official ViLT does not clip)."})
    seed: int = field(default=0, metadata={
        "help": "Seed of the model initialisation, the shuffling, the masking/negatives and dropout."})
    learning_rate: float = field(default=VILT_LEARNING_RATE, metadata={"help": "AdamW learning rate (official 1e-4)."})
    weight_decay: float = field(default=VILT_WEIGHT_DECAY, metadata={
        "help": "AdamW weight decay (official 0.01), never on biases and LayerNorms."})
    head_lr_multiplier: float | None = field(default=None, metadata={
        "help": "Learning-rate factor of the VQA/NLVR2 classifier (default: 10 for vqa and nlvr2, as the official "
                "configs; other heads train at the base rate)."})
    adam_beta1: float = field(default=VILT_BETAS[0], metadata={"help": "AdamW beta1 (0.9)."})
    adam_beta2: float = field(default=VILT_BETAS[1], metadata={"help": "AdamW beta2 (official 0.98)."})
    adam_epsilon: float = field(default=VILT_EPS, metadata={"help": "AdamW epsilon (official 1e-8)."})
    warmup: float = field(default=VILT_WARMUP_RATIO, metadata={
        "help": "Linear warmup: a fraction of --max_steps when < 1 (official 0.1), else steps; then linear decay "
                "to 0."})

    def __post_init__(self):
        super().__post_init__()
        if self.learning_rate <= 0:
            raise ValueError(f"--learning_rate must be > 0, got {self.learning_rate!r}")
