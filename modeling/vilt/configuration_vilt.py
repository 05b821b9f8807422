"""Configuration of ViLT (Kim et al., 2021, "ViLT: Vision-and-Language Transformer Without Convolution or Region
Supervision").

Field names are those of transformers' ``ViltConfig`` wherever the concept is the same, so that users coming from
transformers find them. Defaults are ViLT-B/32 as the paper and the official code (dandelin/ViLT) train it, which
differs from transformers' port in a few places:

- dropout 0.1 (``hidden_dropout_prob``) on the embeddings, the residual branches and inside the MLP (transformers
  defaults to 0.0 and has no dropout between the two MLP layers). The attention weights get no dropout
  (``attention_probs_dropout_prob=0.0``): the official code builds its timm ViT blocks with ``attn_drop_rate=0``;
  its 0.1 only reaches the BERT embedding config, where attention does not occur.
- LayerNorm epsilon 1e-6 in the transformer blocks and the final norm (timm's ViT, from which the blocks are
  initialised) and 1e-12 in the BERT text embeddings and the MLM head (``text_layer_norm_eps``); transformers uses
  one ``layer_norm_eps`` (1e-12) everywhere. ``convert_transformers_vilt`` copies transformers' value into both.
- the MLM decoder is not tied to the word embeddings (the official code does not tie them; transformers 5.x
  forces the tie).
"""

from transformers import PretrainedConfig

_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu")
_OBJECTIVES = ("mlm", "itm", "wpa")


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class ViltConfig(PretrainedConfig):
    r"""Architecture settings, patch sampling and pretraining-loss settings of the ViLT models.

    Args:
        vocab_size (`int`, *optional*, defaults to 30522): Size of the (BERT uncased) word-piece vocabulary.
        type_vocab_size (`int`, *optional*, defaults to 2): Rows of BERT's text token-type table (`token_type_ids`).
        modality_type_vocab_size (`int`, *optional*, defaults to 2):
            Rows of the modality-type table: 0 text, 1 image, 2 the second image of an NLVR2 pair (set 3 for
            [`ViltForImagesAndTextClassification`] with two images).
        max_position_embeddings (`int`, *optional*, defaults to 40): The longest text, in tokens ([CLS] and [SEP]
            included): the paper's 40.
        hidden_size (`int`, *optional*, defaults to 768): Width of the transformer.
        num_hidden_layers (`int`, *optional*, defaults to 12): Number of transformer blocks.
        num_attention_heads (`int`, *optional*, defaults to 12): Attention heads per block.
        intermediate_size (`int`, *optional*, defaults to 3072): Hidden size of the MLP in each block.
        hidden_act (`str`, *optional*, defaults to `"gelu"`): MLP and MLM-head activation: `"gelu"` (exact),
            `"gelu_new"` / `"gelu_pytorch_tanh"` (tanh approximation), `"relu"` or `"silu"`.
        hidden_dropout_prob (`float`, *optional*, defaults to 0.1): Dropout on the embeddings, on both residual
            branches and between the two MLP layers (the official `drop_rate`).
        attention_probs_dropout_prob (`float`, *optional*, defaults to 0.0): Dropout on the attention weights.
        initializer_range (`float`, *optional*, defaults to 0.02): Standard deviation of the random initialisation.
        layer_norm_eps (`float`, *optional*, defaults to 1e-6): Epsilon of the blocks' and the final LayerNorm.
        text_layer_norm_eps (`float`, *optional*, defaults to 1e-12): Epsilon of the text-embedding and MLM-head
            LayerNorms (BERT's).
        image_size (`int`, *optional*, defaults to 384): Side of the square image the position table was made for:
            the table has `(image_size // patch_size) ** 2` patch positions (12 x 12 for ViLT-B/32) and is
            bilinearly interpolated to each image's own patch grid.
        patch_size (`int`, *optional*, defaults to 32): Side of the square patches; image height and width must be
            multiples of it.
        num_channels (`int`, *optional*, defaults to 3): Image channels.
        qkv_bias (`bool`, *optional*, defaults to `True`): Bias in the query/key/value projection.
        max_image_length (`int`, *optional*, defaults to -1):
            Number of patches each image keeps **in training** (random valid patches; padding patches only to fill
            up an image with fewer valid ones). The official pretraining uses 200; fine-tuning uses -1 (all
            patches). In eval mode every patch is kept whatever this says. Also readable as `max_image_len`.
        num_images (`int`, *optional*, defaults to -1): Images per example for
            [`ViltForImagesAndTextClassification`] (2 for NLVR2); -1 when unused. Each image gets its own modality
            type, so it must be below `modality_type_vocab_size`.
        vit (`str`, *optional*, defaults to `"vit_base_patch32_384"`): The timm ViT whose ImageNet weights
            initialise the blocks, the patch projection and the image positions when `use_pretrained_vit`.
        use_pretrained_vit (`bool`, *optional*, defaults to `False`): Load timm's pretrained `vit` weights when the
            model is built (needs them in the local cache or a connection). Leave off when loading a checkpoint.
        pretraining_objectives (`list[str]`, *optional*, defaults to `["mlm", "itm", "wpa"]`): The objectives
            [`ViltForPreTraining`] computes: masked language modeling, image-text matching and word-patch
            alignment.
        wpa_loss_weight (`float`, *optional*, defaults to 0.1): Weight of the WPA loss in the total (the official).
        ipot_beta (`float`, *optional*, defaults to 0.5): Proximal step size of IPOT.
        ipot_iterations (`int`, *optional*, defaults to 50): Outer IPOT iterations.
        ipot_inner_iterations (`int`, *optional*, defaults to 1): Sinkhorn updates per outer iteration (IPOT's k).
        pad_token_id (`int`, *optional*, defaults to 0): BERT's [PAD] id (its word embedding starts at zero and
            gets no gradient).
    """

    model_type = "detrvilt_vilt"
    attribute_map = {"max_image_len": "max_image_length"}

    def __init__(
        self,
        vocab_size: int = 30522,
        type_vocab_size: int = 2,
        modality_type_vocab_size: int = 2,
        max_position_embeddings: int = 40,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.0,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-6,
        text_layer_norm_eps: float = 1e-12,
        image_size: int = 384,
        patch_size: int = 32,
        num_channels: int = 3,
        qkv_bias: bool = True,
        max_image_length: int = -1,
        num_images: int = -1,
        vit: str = "vit_base_patch32_384",
        use_pretrained_vit: bool = False,
        pretraining_objectives: list[str] | tuple[str, ...] = ("mlm", "itm", "wpa"),
        wpa_loss_weight: float = 0.1,
        ipot_beta: float = 0.5,
        ipot_iterations: int = 50,
        ipot_inner_iterations: int = 1,
        pad_token_id: int | None = 0,
        **kwargs,
    ):
        if "max_image_len" in kwargs:  # the official code's name
            max_image_length = kwargs.pop("max_image_len")
        self.vocab_size = vocab_size
        self.type_vocab_size = type_vocab_size
        self.modality_type_vocab_size = modality_type_vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.text_layer_norm_eps = text_layer_norm_eps
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.qkv_bias = qkv_bias
        self.max_image_length = max_image_length
        self.num_images = num_images
        self.vit = vit
        self.use_pretrained_vit = use_pretrained_vit
        self.pretraining_objectives = list(pretraining_objectives)
        self.wpa_loss_weight = wpa_loss_weight
        self.ipot_beta = ipot_beta
        self.ipot_iterations = ipot_iterations
        self.ipot_inner_iterations = ipot_inner_iterations
        kwargs.setdefault("tie_word_embeddings", False)  # the official MLM decoder has its own weights
        super().__init__(**kwargs)
        # Set after the base class, which treats pad_token_id as a generation parameter in some versions.
        self.pad_token_id = pad_token_id
        self.validate_vilt()

    @property
    def position_grid_size(self) -> int:
        """Side of the square table of patch positions (`image_size // patch_size`, 12 for ViLT-B/32)."""
        return self.image_size // self.patch_size

    def validate_vilt(self):
        """Raise `ValueError` for settings the model cannot be built with (called by `__init__`)."""
        for name in ("vocab_size", "type_vocab_size", "max_position_embeddings", "hidden_size", "num_hidden_layers",
                     "num_attention_heads", "intermediate_size", "image_size", "patch_size", "num_channels",
                     "ipot_iterations", "ipot_inner_iterations"):
            value = getattr(self, name)
            if not _is_positive_int(value):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not _is_positive_int(self.modality_type_vocab_size) or self.modality_type_vocab_size < 2:
            raise ValueError(
                "modality_type_vocab_size must be an integer >= 2 (text and image), "
                f"got {self.modality_type_vocab_size!r}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be divisible by num_attention_heads={self.num_attention_heads}"
            )
        if self.image_size < self.patch_size:
            raise ValueError(f"image_size={self.image_size} must be at least patch_size={self.patch_size}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        for name in ("layer_norm_eps", "text_layer_norm_eps", "initializer_range", "ipot_beta"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"hidden_act must be one of {_ACTIVATIONS}, got {self.hidden_act!r}")
        length = self.max_image_length
        if not isinstance(length, int) or isinstance(length, bool) or (length < 1 and length != -1):
            raise ValueError(f"max_image_length must be a positive integer or -1 (all patches), got {length!r}")
        num_images = self.num_images
        if not isinstance(num_images, int) or isinstance(num_images, bool) or (num_images < 1 and num_images != -1):
            raise ValueError(f"num_images must be a positive integer or -1 (unused), got {num_images!r}")
        if num_images >= self.modality_type_vocab_size:
            raise ValueError(
                f"num_images={num_images} needs one modality type per image after the text's: "
                f"modality_type_vocab_size must be at least {num_images + 1}, got {self.modality_type_vocab_size}"
            )
        unknown = [name for name in self.pretraining_objectives if name not in _OBJECTIVES]
        if unknown or not self.pretraining_objectives:
            raise ValueError(
                f"pretraining_objectives must be a non-empty subset of {_OBJECTIVES}, "
                f"got {self.pretraining_objectives!r}"
            )
        if not isinstance(self.wpa_loss_weight, (int, float)) or self.wpa_loss_weight < 0:
            raise ValueError(f"wpa_loss_weight must be >= 0, got {self.wpa_loss_weight!r}")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"pad_token_id must be in [0, vocab_size={self.vocab_size}) or None, got {self.pad_token_id}"
            )
        if self.num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {self.num_labels}")
