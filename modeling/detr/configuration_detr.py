"""Configuration of DETR (Carion et al., 2020, "End-to-End Object Detection with Transformers").

The field names are those of transformers' ``DetrConfig`` wherever the concept is the same, so that users
coming from transformers find them. The defaults are the paper's (and facebookresearch/detr's), which differ
from transformers' in three places: auxiliary decoding losses are on, and dropout is also applied to the
attention weights and inside the feed-forward block (``attention_dropout``, ``activation_dropout``), as
``nn.MultiheadAttention(dropout=0.1)`` and the FFN dropout of the official code do.

Two training-only options make DETR learn faster while the inference model stays a plain DETR (both off by default,
so converted checkpoints and transformers parity are unchanged): extra groups of object queries, each matched
one-to-one on its own and attending only to its own group (Group DETR, Chen et al., 2022, "Group DETR: Fast DETR
Training with Group-Wise One-to-Many Assignment"), and a one-to-many branch of extra queries matched against the
targets repeated several times (the hybrid matching of H-DETR, Jia et al., 2023, "DETRs with Hybrid Matching").
"""

from transformers import PretrainedConfig

_POSITION_EMBEDDING_TYPES = ("sine", "learned")
_ACTIVATIONS = ("relu", "gelu", "silu")


class DetrConfig(PretrainedConfig):
    r"""Architecture settings, matching costs and loss weights of [`DetrForObjectDetection`].

    Args:
        num_labels (`int`, *optional*, defaults to 91):
            Number of object classes, without the extra "no object" class that the classifier adds. The default is
            the official COCO setting (largest category id 90, plus one). Set through `id2label` or `num_labels`.
        num_channels (`int`, *optional*, defaults to 3): Channels of the input images.
        num_queries (`int`, *optional*, defaults to 100):
            Number of object queries (detection slots), the most objects one image can be given.
        d_model (`int`, *optional*, defaults to 256): Width of the transformer.
        encoder_layers / decoder_layers (`int`, *optional*, defaults to 6): Number of layers.
        encoder_attention_heads / decoder_attention_heads (`int`, *optional*, defaults to 8): Attention heads.
        encoder_ffn_dim / decoder_ffn_dim (`int`, *optional*, defaults to 2048): Hidden size of the feed-forward blocks.
        activation_function (`str`, *optional*, defaults to `"relu"`): One of `"relu"`, `"gelu"`, `"silu"`.
        dropout (`float`, *optional*, defaults to 0.1): Dropout on the residual branches.
        attention_dropout (`float`, *optional*, defaults to 0.1): Dropout on the attention weights.
        activation_dropout (`float`, *optional*, defaults to 0.1): Dropout between the two feed-forward layers.
        pre_norm (`bool`, *optional*, defaults to `False`):
            LayerNorm before each sub-block (the official `--pre_norm`) instead of after it (the paper's default).
            With pre-norm the encoder gets a final LayerNorm.
        decoder_chained_norm (`bool`, *optional*, defaults to `False`):
            Compatibility with transformers' `DetrDecoder` when its `auxiliary_loss` is on: there each decoder layer
            receives the *normalized* output of the previous layer, and the last output is normalized twice. The
            official DETR normalizes a copy for the heads and leaves the residual stream alone (`False`). Set by
            `convert_transformers_detr` so converted checkpoints keep their outputs.
        auxiliary_loss (`bool`, *optional*, defaults to `True`):
            Apply the Hungarian loss to the output of every decoder layer (the paper's auxiliary decoding losses).
        position_embedding_type (`str`, *optional*, defaults to `"sine"`):
            `"sine"` (fixed, normalized over each image's unpadded region) or `"learned"` (row and column tables of
            50 entries, so at most 50x50 feature cells).
        backbone (`str`, *optional*, defaults to `"resnet50"`): Any timm CNN that supports `features_only`.
        use_pretrained_backbone (`bool`, *optional*, defaults to `False`):
            Load timm's ImageNet weights for the backbone when the model is built (needs them in the local cache or
            a connection to the Hub). Leave off when loading a trained checkpoint.
        dilation (`bool`, *optional*, defaults to `False`):
            Replace the stride of the last backbone stage by a dilation (DETR-DC5: stride 16 instead of 32).
        freeze_backbone_stem (`bool`, *optional*, defaults to `True`):
            Freeze the backbone's stem and first stage, as the paper does.
        freeze_batch_norm (`bool`, *optional*, defaults to `True`):
            Replace the backbone's batch norms by frozen ones (the paper, with an ImageNet-pretrained backbone). Set
            to `False` to train a backbone from scratch, where frozen identity statistics would leave it without
            normalization.
        init_std (`float`, *optional*, defaults to 0.02): Kept for transformers compatibility (not used by the
            Xavier initialisation of the transformer, which follows the official code).
        init_xavier_std (`float`, *optional*, defaults to 1.0): Gain of the Xavier initialisation.
        class_cost / bbox_cost / giou_cost (`float`, *optional*, defaults to 1 / 5 / 2):
            Weights of the classification, L1 and GIoU terms in the matching cost.
        bbox_loss_coefficient / giou_loss_coefficient (`float`, *optional*, defaults to 5 / 2):
            Weights of the L1 and GIoU losses; `ce_loss_coefficient` (defaults to 1) weighs the classification loss.
        eos_coefficient (`float`, *optional*, defaults to 0.1):
            Relative weight of the "no object" class in the classification loss (the paper's `eos_coef`).
        num_query_groups (`int`, *optional*, defaults to 1):
            Group DETR: in training, `num_query_groups - 1` extra groups of `num_queries` learned queries decode next
            to the model's own queries (the first group); the decoder's self-attention is masked so that every group
            sees only itself, each group is matched one-to-one to the targets on its own and gets the full Hungarian
            loss (so an object has one positive query per group). In evaluation only the first group runs: the
            inference model is a plain DETR. 1 turns it off.
        hybrid_queries (`int`, *optional*, defaults to 0):
            H-DETR's hybrid matching: in training, this many extra queries form a one-to-many branch, matched (one
            to one) against every target repeated `hybrid_repeats` times, so that each object gets up to
            `hybrid_repeats` positive queries; the branch is masked off from the other queries in self-attention and
            dropped in evaluation. 0 turns it off.
        hybrid_repeats (`int`, *optional*, defaults to 6): How often each target is repeated for the one-to-many
            branch (H-DETR's `k`).
        hybrid_loss_coefficient (`float`, *optional*, defaults to 1): Weight of the one-to-many branch's Hungarian
            loss in the total (H-DETR's `lambda`).

    The extra queries of `num_query_groups` and `hybrid_queries` are training-only parameters
    (`model.training_query_position_embeddings`): a plain DETR config ignores them when loading, and
    [`DetrForObjectDetection.to_plain_detr`] drops them.
    """

    model_type = "detrvilt_detr"
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "encoder_attention_heads",
        "num_hidden_layers": "encoder_layers",
    }

    def __init__(
        self,
        num_channels: int = 3,
        num_queries: int = 100,
        d_model: int = 256,
        encoder_layers: int = 6,
        decoder_layers: int = 6,
        encoder_attention_heads: int = 8,
        decoder_attention_heads: int = 8,
        encoder_ffn_dim: int = 2048,
        decoder_ffn_dim: int = 2048,
        activation_function: str = "relu",
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        activation_dropout: float = 0.1,
        pre_norm: bool = False,
        decoder_chained_norm: bool = False,
        auxiliary_loss: bool = True,
        position_embedding_type: str = "sine",
        backbone: str = "resnet50",
        use_pretrained_backbone: bool = False,
        dilation: bool = False,
        freeze_backbone_stem: bool = True,
        freeze_batch_norm: bool = True,
        init_std: float = 0.02,
        init_xavier_std: float = 1.0,
        class_cost: float = 1.0,
        bbox_cost: float = 5.0,
        giou_cost: float = 2.0,
        ce_loss_coefficient: float = 1.0,
        bbox_loss_coefficient: float = 5.0,
        giou_loss_coefficient: float = 2.0,
        eos_coefficient: float = 0.1,
        num_query_groups: int = 1,
        hybrid_queries: int = 0,
        hybrid_repeats: int = 6,
        hybrid_loss_coefficient: float = 1.0,
        **kwargs,
    ):
        if "id2label" not in kwargs and "num_labels" not in kwargs:
            kwargs["num_labels"] = 91
        self.num_channels = num_channels
        self.num_queries = num_queries
        self.d_model = d_model
        self.encoder_layers = encoder_layers
        self.decoder_layers = decoder_layers
        self.encoder_attention_heads = encoder_attention_heads
        self.decoder_attention_heads = decoder_attention_heads
        self.encoder_ffn_dim = encoder_ffn_dim
        self.decoder_ffn_dim = decoder_ffn_dim
        self.activation_function = activation_function
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation_dropout = activation_dropout
        self.pre_norm = pre_norm
        self.decoder_chained_norm = decoder_chained_norm
        self.auxiliary_loss = auxiliary_loss
        self.position_embedding_type = position_embedding_type
        self.backbone = backbone
        self.use_pretrained_backbone = use_pretrained_backbone
        self.dilation = dilation
        self.freeze_backbone_stem = freeze_backbone_stem
        self.freeze_batch_norm = freeze_batch_norm
        self.init_std = init_std
        self.init_xavier_std = init_xavier_std
        self.class_cost = class_cost
        self.bbox_cost = bbox_cost
        self.giou_cost = giou_cost
        self.ce_loss_coefficient = ce_loss_coefficient
        self.bbox_loss_coefficient = bbox_loss_coefficient
        self.giou_loss_coefficient = giou_loss_coefficient
        self.eos_coefficient = eos_coefficient
        self.num_query_groups = num_query_groups
        self.hybrid_queries = hybrid_queries
        self.hybrid_repeats = hybrid_repeats
        self.hybrid_loss_coefficient = hybrid_loss_coefficient
        kwargs.setdefault("is_encoder_decoder", True)
        super().__init__(**kwargs)
        self.validate_detr()

    def validate_detr(self):
        """Raise `ValueError` for settings the model cannot be built with (called by `__init__`)."""
        for name in ("num_channels", "num_queries", "d_model", "encoder_attention_heads", "decoder_attention_heads",
                     "encoder_ffn_dim", "decoder_ffn_dim", "decoder_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.encoder_layers, int) or self.encoder_layers < 0:
            raise ValueError(f"encoder_layers must be a non-negative integer, got {self.encoder_layers!r}")
        for name in ("encoder_attention_heads", "decoder_attention_heads"):
            if self.d_model % getattr(self, name):
                raise ValueError(f"d_model={self.d_model} must be divisible by {name}={getattr(self, name)}")
        if self.d_model % 4:
            raise ValueError(f"d_model must be divisible by 4 for the 2-D sine positions, got {self.d_model}")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        if self.position_embedding_type not in _POSITION_EMBEDDING_TYPES:
            raise ValueError(
                f"position_embedding_type must be one of {_POSITION_EMBEDDING_TYPES}, "
                f"got {self.position_embedding_type!r}"
            )
        if self.activation_function not in _ACTIVATIONS:
            raise ValueError(f"activation_function must be one of {_ACTIVATIONS}, got {self.activation_function!r}")
        if not isinstance(self.backbone, str) or not self.backbone:
            raise ValueError(f"backbone must be the name of a timm model, got {self.backbone!r}")
        costs = (self.class_cost, self.bbox_cost, self.giou_cost)
        if any(c < 0 for c in costs) or not any(costs):
            raise ValueError(f"matching costs must be >= 0 and not all zero, got class/bbox/giou = {costs}")
        if not 0.0 < self.eos_coefficient <= 1.0:
            raise ValueError(f"eos_coefficient must be in (0, 1], got {self.eos_coefficient!r}")
        if self.num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {self.num_labels}")
        self.validate_training_queries()

    @property
    def num_training_queries(self) -> int:
        """Number of training-only queries: the extra Group DETR groups plus the hybrid one-to-many branch."""
        return (self.num_query_groups - 1) * self.num_queries + self.hybrid_queries

    def validate_training_queries(self):
        """Raise `ValueError` for bad Group DETR / hybrid matching settings."""
        for name, low in (("num_query_groups", 1), ("hybrid_queries", 0), ("hybrid_repeats", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        coefficient = self.hybrid_loss_coefficient
        if not isinstance(coefficient, (int, float)) or isinstance(coefficient, bool) or coefficient < 0:
            raise ValueError(f"hybrid_loss_coefficient must be a number >= 0, got {coefficient!r}")
        if self.num_training_queries and type(self).model_type != DetrConfig.model_type:
            # The panoptic model runs the detector's decoder without them; training queries there would be unused
            # parameters (and DDP would fail on them).
            raise ValueError(
                f"num_query_groups={self.num_query_groups} and hybrid_queries={self.hybrid_queries} are options of "
                f"DetrForObjectDetection only, not of {type(self).__name__}: set num_query_groups=1 and "
                "hybrid_queries=0 (DetrForObjectDetection.to_plain_detr() gives the plain detector of a model trained "
                "with them)"
            )
