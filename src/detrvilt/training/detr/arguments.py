"""The dataclasses the training scripts parse with `HfArgumentParser` (every field has its `--help` text)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...data.detr.sources import DATA_SOURCES
from ..arguments import MIXED_PRECISION, BaseTrainingArguments, LoopArguments, StreamingArguments
from .optimization import PAPER_BACKBONE_LEARNING_RATE, PAPER_LEARNING_RATE, PAPER_MAX_GRAD_NORM, PAPER_WEIGHT_DECAY


@dataclass
class DetrModelArguments:
    """Which DETR to train: a saved model, or a new one from these architecture settings."""

    model_name_or_path: str | None = field(default=None, metadata={
        "help": "A local folder with a saved detrvilt DETR to start from (config + weights). Without it a new model "
                "is built from the settings below."})
    backbone: str = field(default="resnet50", metadata={"help": "timm CNN backbone name (any with features_only)."})
    use_pretrained_backbone: bool = field(default=False, metadata={
        "help": "Load timm's ImageNet weights for the backbone (must be in the local timm cache: nothing is "
                "downloaded here)."})
    dilation: bool = field(default=False, metadata={
        "help": "DC5: dilate the last backbone stage (stride 16 instead of 32), for small images or small objects."})
    freeze_backbone_stem: bool = field(default=True, metadata={
        "help": "Freeze the backbone's stem and first stage (the paper, with a pretrained backbone)."})
    freeze_batch_norm: bool = field(default=True, metadata={
        "help": "Frozen batch norm in the backbone (the paper); use False when training the backbone from scratch."})
    d_model: int = field(default=256, metadata={"help": "Width of the transformer."})
    encoder_layers: int = field(default=6, metadata={"help": "Number of encoder layers."})
    decoder_layers: int = field(default=6, metadata={"help": "Number of decoder layers."})
    attention_heads: int = field(default=8, metadata={"help": "Attention heads in the encoder and the decoder."})
    ffn_dim: int = field(default=2048, metadata={"help": "Hidden size of the feed-forward blocks."})
    num_queries: int = field(default=100, metadata={"help": "Number of object queries (most objects per image)."})
    dropout: float = field(default=0.1, metadata={
        "help": "Dropout on residual branches, attention weights and inside the FFN (the paper: 0.1)."})
    auxiliary_loss: bool = field(default=True, metadata={"help": "Hungarian loss on every decoder layer."})
    eos_coefficient: float = field(default=0.1, metadata={"help": "Weight of the 'no object' class in the loss."})
    giou_loss_coefficient: float = field(default=2.0, metadata={
        "help": "Weight of the GIoU box loss (the paper: 2; 0 turns the term off, the matching cost keeps it)."})
    num_query_groups: int = field(default=1, metadata={
        "help": "Group DETR: train with this many groups of --num_queries queries, each matched one-to-one on its "
                "own and attending only to itself; the first group is the inference model (1: off)."})
    hybrid_queries: int = field(default=0, metadata={
        "help": "H-DETR hybrid matching: this many training-only queries matched one-to-many (each target repeated "
                "--hybrid_repeats times); dropped at inference (0: off)."})
    hybrid_repeats: int = field(default=6, metadata={"help": "Repeats of each target for the hybrid branch."})
    hybrid_loss_coefficient: float = field(default=1.0, metadata={"help": "Weight of the hybrid branch's loss."})

    def __post_init__(self):
        for name in ("d_model", "encoder_layers", "decoder_layers", "attention_heads", "ffn_dim", "num_queries",
                     "num_query_groups", "hybrid_repeats"):
            value = getattr(self, name)
            if value < (0 if name == "encoder_layers" else 1):
                raise ValueError(f"--{name} must be positive, got {value!r}")
        for name in ("giou_loss_coefficient", "hybrid_queries", "hybrid_loss_coefficient"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)!r}")


@dataclass
class DetrDataArguments:
    """Where the images come from and how they are prepared."""

    dataset: str = field(default="synthetic", metadata={
        "help": f"Data source, one of {DATA_SOURCES}: the built-in synthetic shapes set, a COCO folder "
                "(--train_images_dir/--train_annotation_file, optional --eval_*), or a DatasetDict saved with "
                "save_to_disk (--dataset_path)."})
    dataset_name: str | None = field(default=None, metadata={
        "help": "A Hub dataset id or a local folder in the Hub object-detection layout (cppe-5's: image, image_id, "
                "objects with bbox in COCO [x, y, w, h] absolute pixels and category; class names from the "
                "ClassLabel of objects.category), read with datasets.load_dataset. Replaces --dataset."})
    dataset_config_name: str | None = field(default=None, metadata={
        "help": "For --dataset_name: the dataset's configuration name."})
    train_split_name: str = field(default="train", metadata={"help": "For --dataset_name: the training split."})
    eval_split_name: str = field(default="validation", metadata={
        "help": "For --dataset_name: the evaluation split ('' for none)."})
    dataset_path: str | None = field(default=None, metadata={"help": "For --dataset disk: the save_to_disk folder."})
    train_split: str = field(default="train", metadata={"help": "For --dataset disk: the training split."})
    eval_split: str = field(default="validation", metadata={
        "help": "For --dataset disk: the evaluation split ('' for none)."})
    train_images_dir: str | None = field(default=None, metadata={"help": "For --dataset coco: training images."})
    train_annotation_file: str | None = field(default=None, metadata={
        "help": "For --dataset coco: the training instances_*.json."})
    eval_images_dir: str | None = field(default=None, metadata={"help": "For --dataset coco: evaluation images."})
    eval_annotation_file: str | None = field(default=None, metadata={
        "help": "For --dataset coco: the evaluation instances_*.json."})
    synthetic_train_size: int = field(default=2000, metadata={"help": "Synthetic set: training images (seed 0)."})
    synthetic_eval_size: int = field(default=200, metadata={"help": "Synthetic set: held-out images (seed 1)."})
    synthetic_image_size: int = field(default=128, metadata={"help": "Synthetic set: side of the square images."})
    synthetic_shapes: str = field(default="circle,square,triangle", metadata={
        "help": "Synthetic set: the classes, comma-separated names from circle, square, triangle, cross."})
    synthetic_min_objects: int = field(default=0, metadata={"help": "Synthetic set: fewest objects per image."})
    synthetic_max_objects: int = field(default=5, metadata={"help": "Synthetic set: most objects per image."})
    synthetic_min_object_size: float = field(default=0.12, metadata={
        "help": "Synthetic set: smallest object side, as a fraction of the image side."})
    synthetic_max_object_size: float = field(default=0.5, metadata={
        "help": "Synthetic set: largest object side, as a fraction of the image side."})
    shortest_edge: int | None = field(default=None, metadata={
        "help": "Resize images to this shortest side for the model (default: 800 for real data, the synthetic "
                "image size for the synthetic set)."})
    longest_edge: int | None = field(default=None, metadata={
        "help": "Limit of the longest side after resizing (default: 1333 scaled like --shortest_edge)."})
    augment: bool = field(default=True, metadata={
        "help": "The paper's training augmentation (flip, multi-scale resize, random crop), scaled to "
                "--shortest_edge. With --in_memory only the flip is applied."})
    in_memory: bool = field(default=False, metadata={
        "help": "Preprocess every image once and keep the tensors in memory (fast for small sets such as the "
                "synthetic one; fixed size, flip-only augmentation)."})

    def __post_init__(self):
        if self.dataset not in DATA_SOURCES:
            raise ValueError(f"--dataset must be one of {DATA_SOURCES}, got {self.dataset!r}")
        if self.dataset_name is not None and self.dataset != "synthetic":
            raise ValueError(f"--dataset_name and --dataset {self.dataset!r} name two data sources: give one (got "
                             f"--dataset_name {self.dataset_name!r})")
        if self.shortest_edge is not None and self.shortest_edge < 16:
            raise ValueError(f"--shortest_edge must be >= 16, got {self.shortest_edge!r}")
        if self.synthetic_train_size < 1:
            raise ValueError(f"--synthetic_train_size must be positive, got {self.synthetic_train_size!r}")


@dataclass
class DetrTrainingArguments(BaseTrainingArguments):
    """`TrainingArguments` with the paper's optimization as defaults, plus the backbone learning rate and step decay."""

    learning_rate: float = field(default=PAPER_LEARNING_RATE, metadata={
        "help": "AdamW learning rate of the transformer and heads (the paper: 1e-4)."})
    weight_decay: float = field(default=PAPER_WEIGHT_DECAY, metadata={"help": "AdamW weight decay (the paper: 1e-4)."})
    max_grad_norm: float = field(default=PAPER_MAX_GRAD_NORM, metadata={
        "help": "Gradient clipping norm (the paper: 0.1)."})
    remove_unused_columns: bool = field(default=False, metadata={
        "help": "Must stay False for DETR: the model's inputs are made by the dataset's transform."})
    eval_do_concat_batches: bool = field(default=False, metadata={
        "help": "Must stay False for DETR: images have different numbers of objects."})
    backbone_learning_rate: float = field(default=PAPER_BACKBONE_LEARNING_RATE, metadata={
        "help": "AdamW learning rate of the CNN backbone (the paper: 1e-5)."})
    lr_drop_step: int | None = field(default=None, metadata={
        "help": "Multiply the learning rate by --lr_drop_gamma after this many optimizer steps (the paper's step "
                "decay: after 200 of 300 epochs). Without it --lr_scheduler_type decides."})
    lr_drop_gamma: float = field(default=0.1, metadata={"help": "Factor of the step decay."})
    use_model_loss: bool = field(default=True, metadata={
        "help": "Take the loss from the model (labels=...); False computes it with "
                "Trainer(compute_loss_func=DetrLoss) instead (the same number)."})


@dataclass
class DetrAccelerateArguments(StreamingArguments, LoopArguments):
    """DETR's optimizer settings of the Accelerate loop (the paper's as defaults); the rest is [`LoopArguments`] and
    the `--streaming` options ([`StreamingArguments`])."""

    per_device_train_batch_size: int = field(default=8, metadata={"help": "Training images per process and batch."})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Evaluation images per process and batch."})
    max_grad_norm: float = field(default=PAPER_MAX_GRAD_NORM, metadata={
        "help": "Gradient clipping norm (the paper: 0.1); 0 turns clipping off."})
    mixed_precision: str = field(default="no", metadata={
        "help": f"One of {MIXED_PRECISION}; `accelerate launch --mixed_precision` sets it too. Matching and the "
                "box losses always run in fp32."})
    learning_rate: float = field(default=PAPER_LEARNING_RATE, metadata={
        "help": "AdamW learning rate of the transformer and heads (the paper: 1e-4)."})
    backbone_learning_rate: float = field(default=PAPER_BACKBONE_LEARNING_RATE, metadata={
        "help": "AdamW learning rate of the CNN backbone (the paper: 1e-5)."})
    weight_decay: float = field(default=PAPER_WEIGHT_DECAY, metadata={"help": "AdamW weight decay (the paper: 1e-4)."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear learning-rate warmup steps."})
    lr_drop_step: int | None = field(default=None, metadata={
        "help": "Multiply the learning rate by --lr_drop_gamma after this many steps (the paper's step decay)."})
    lr_drop_gamma: float = field(default=0.1, metadata={"help": "Factor of the step decay."})
    eval_threshold: float = field(default=0.0, metadata={
        "help": "Score threshold of the detections passed to COCO mAP (0 keeps every query, as COCO wants)."})

    def __post_init__(self):
        super().__post_init__()
        if self.learning_rate <= 0 or self.backbone_learning_rate < 0:
            raise ValueError(f"--learning_rate must be > 0 and --backbone_learning_rate >= 0, got "
                             f"{self.learning_rate!r} and {self.backbone_learning_rate!r}")
