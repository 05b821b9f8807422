"""ViLT: one single-stream transformer over word embeddings and raw image patches.

Kim et al., 2021, "ViLT: Vision-and-Language Transformer Without Convolution or Region Supervision". The text
(BERT embeddings) and the image (32 x 32 patches, linearly projected) are concatenated as
`[text CLS, words..., SEP, pad...; image CLS, patches...]`, each token with its modality type, and go through
pre-norm ViT blocks (initialised from an ImageNet ViT-B/32) with a joint padding mask; a final LayerNorm follows,
and the pooler (dense + tanh) reads the text [CLS].

The blocks follow dandelin/ViLT, which uses timm's ``Block``: fused query/key/value projection, dropout after the
attention projection and after both MLP layers, no dropout on the attention weights by default. Attention runs
through ``torch.nn.functional.scaled_dot_product_attention``; ``output_attentions=True`` switches to an explicit
softmax path that also returns the weights. Parameter names follow timm inside the blocks (so ViT weights load by
renaming, see ``timm_vilt.py``) and transformers' ``ViltModel`` around them; ``detrvilt.conversion`` converts
transformers' checkpoints.

Two savings that change no valid output (transformers' port computes both):

- padding tokens (text padding, patches beyond an image's own size) only matter as masked keys, so on the CPU,
  where finding them costs no device synchronisation, the per-token layers run on the valid tokens alone and the
  attention unpacks them around itself (``TokenPacking``); on GPUs the forward stays free of host
  synchronisation and computes the padding tokens too. Either way their outputs are set to zero;
- heads that read only the pooled [CLS] (question answering, NLVR2, retrieval) let the last block process that
  one token: its keys and values still come from every token, without the last block's attention output and MLP
  for the other tokens.

One faster kernel for the same arithmetic: fp32 inference on the CPU (no gradient needed) runs the block's linear
layers through oneDNN (``torch.ops.mkldnn._linear_pointwise``, with the MLP's GELU fused into the matrix product),
measured 10-25% faster than the default fp32 GEMM per layer on an AVX-512 AMD EPYC; training, autocast, GPUs and
``torch.compile`` keep ``F.linear``. Set ``ONEDNN_CPU_INFERENCE = False`` in this module to turn it off.

Gradient (activation) checkpointing: `model.gradient_checkpointing_enable()` (transformers' API) recomputes every
block in the backward instead of keeping its activations ([`checkpointed_call`]).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_vilt import ViltConfig
from .embeddings_vilt import ViltEmbeddings, ViltTextEmbeddings

_ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}

# Inference-only CPU path through oneDNN (see the module docstring); a module switch so tests can compare paths.
ONEDNN_CPU_INFERENCE = True
try:
    _ONEDNN_LINEAR = torch.ops.mkldnn._linear_pointwise
except (AttributeError, RuntimeError):  # a torch build without oneDNN
    _ONEDNN_LINEAR = None
# oneDNN post-op (name, algorithm) of the activations it can fuse; the others run after the product.
_ONEDNN_POST_OPS = {"gelu": ("gelu", "none"), "gelu_new": ("gelu", "tanh"), "gelu_pytorch_tanh": ("gelu", "tanh"),
                    "relu": ("relu", "")}


def _use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """fp32 CPU inference outside `torch.compile` (which does its own weight packing) and outside autocast."""
    return (
        ONEDNN_CPU_INFERENCE
        and _ONEDNN_LINEAR is not None
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and not torch.compiler.is_exporting()  # ONNX / torch.export: standard ops only
        and not torch.jit.is_tracing()
        and torch.backends.mkldnn.is_available()
    )


def linear_weights(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`x @ weight.T + bias`: `x` `(..., in)`, `weight` `(out, in)`, `bias` `(out,)` or None; `(..., out)`. Through
    oneDNN where `_use_onednn`."""
    if _use_onednn(x, weight):
        return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def linear(x: torch.Tensor, layer: nn.Module, activation: str | None = None) -> torch.Tensor:
    """`activation(layer(x))`, `activation` a `config.hidden_act` value or None. A plain `nn.Linear` without hooks
    runs through oneDNN (activation fused) where `_use_onednn`; anything else (adapters, quantized layers, hooked
    layers) is called as a module."""
    plain = type(layer) is nn.Linear and not (layer._forward_hooks or layer._forward_pre_hooks)
    if plain and _use_onednn(x, layer.weight):
        attr, algorithm = _ONEDNN_POST_OPS.get(activation, ("none", "")) if activation else ("none", "")
        y = _ONEDNN_LINEAR(x, layer.weight, layer.bias, attr, [], algorithm)
        return y if activation is None or activation in _ONEDNN_POST_OPS else _ACTIVATIONS[activation](y)
    y = layer(x)
    return y if activation is None else _ACTIVATIONS[activation](y)


@dataclass
class ViltModelOutput(ModelOutput):
    """Outputs of [`ViltModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, text_length + 1 + image_length, hidden_size)`):
            Output of the last block after the final LayerNorm: the text tokens, the image [CLS], then the patches
            in the order of `patch_index`; zero at padding positions (text padding, padding patches). With
            `pooled_output_only=True` only the text [CLS]: `(batch_size, 1, hidden_size)`.
        pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`): dense + tanh on the text [CLS].
        image_token_mask (`torch.BoolTensor` of shape `(batch_size, 1 + image_length)`): True on the image [CLS]
            and on patches that cover real pixels.
        patch_index (`torch.LongTensor` of shape `(batch_size, image_length)`): each image token's index in the
            row-major flattened patch grid `(height // patch_size, width // patch_size)` of the padded batch. All
            indices in order in eval; the sampled ones in training when `max_image_length` > 0.
        hidden_states (`tuple(torch.FloatTensor)`, with `output_hidden_states=True`): the embeddings and the output
            of every block (before the final LayerNorm), each `(batch_size, sequence_length, hidden_size)`; values
            at padding positions are unspecified.
        attentions (`tuple(torch.FloatTensor)`, with `output_attentions=True`): softmax weights of every block,
            `(batch_size, num_heads, sequence_length, sequence_length)`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    image_token_mask: torch.BoolTensor | None = None
    patch_index: torch.LongTensor | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


class TokenPacking:
    """Where the valid tokens of a padded `(B, S, ...)` batch sit, to run per-token layers on them alone.

    Padding tokens (text padding, patches beyond an image's own size) never influence a valid token (they are
    masked as keys), so the per-token layers (projections, MLP, norms) can skip them: the valid tokens are packed
    into `(N, ...)` and unpacked (zeros at padding) only around the attention itself.
    """

    def __init__(self, mask: torch.Tensor):
        self.batch_size, self.length = mask.shape
        self.index = mask.flatten().nonzero().squeeze(1)  # (N,): a host synchronisation (free on the CPU)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(0, 1).index_select(0, self.index)  # (B, S, C) -> (N, C)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        full = x.new_zeros(self.batch_size * self.length, x.shape[-1])
        return full.index_copy(0, self.index, x).view(self.batch_size, self.length, -1)  # (N, C) -> (B, S, C)


class ViltAttention(nn.Module):
    """Multi-head self-attention with a fused query/key/value projection (timm's `Attention`)."""

    def __init__(self, config: ViltConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.attention_probs_dropout_prob
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)  # (B, heads, T, head_dim)

    def forward(
        self,
        x: torch.Tensor,
        attn_bias: torch.Tensor | None = None,
        output_attentions: bool = False,
        first_token_only: bool = False,
        packing: TokenPacking | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            x (`(B, S, D)`, or `(N, D)` valid tokens with `packing`): normalized input.
            attn_bias (`(B, 1, 1, S)`, optional): additive key mask, 0 on valid tokens and a large negative value on
                padding, in the dtype the attention computes in.
            output_attentions: return the weights `(B, heads, S', S)` (explicit path) instead of `None`.
            first_token_only: queries from the first token only (`S' = 1`); keys and values from all.
            packing: set when `x` holds the valid tokens only; the output is then packed too, `(N, D)`.

        Returns:
            `(B, S', D)` (or `(N, D)`) and the weights or `None`.
        """
        dim = x.shape[-1]
        if first_token_only:
            weight, bias = self.qkv.weight, self.qkv.bias
            q = linear_weights(x[:, :1], weight[:dim], None if bias is None else bias[:dim])  # (B, 1, D)
            k, v = linear_weights(x, weight[dim:], None if bias is None else bias[dim:]).chunk(2, dim=-1)  # (B, S, D)
        elif packing is not None:
            q, k, v = packing.unpack(linear(x, self.qkv)).chunk(3, dim=-1)  # (N, 3D) -> (B, S, D)
        else:
            q, k, v = linear(x, self.qkv).chunk(3, dim=-1)  # (B, S, D) each
        q, k, v = self._split_heads(q), self._split_heads(k), self._split_heads(v)  # (B, h, S, d)
        dropout = self.dropout if self.training else 0.0
        if output_attentions:
            scores = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)  # (B, h, S', S)
            if attn_bias is not None:
                scores = scores + attn_bias
            weights = scores.softmax(-1)
            out = F.dropout(weights, p=dropout, training=self.training) @ v  # (B, h, S', d)
        else:
            weights = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=dropout)
        out = out.transpose(1, 2).flatten(2)  # (B, S', D)
        if packing is not None:
            out = packing.pack(out)  # (N, D)
        return linear(out, self.proj), weights


class ViltMLP(nn.Module):
    """fc1 -> activation -> dropout -> fc2 (timm's `Mlp`; the dropout after fc2 is applied by the block)."""

    def __init__(self, config: ViltConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.activation = config.hidden_act
        self.dropout = config.hidden_dropout_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = linear(x, self.fc1, self.activation)  # (..., intermediate_size)
        x = F.dropout(x, p=self.dropout, training=self.training)
        return linear(x, self.fc2)


def checkpointed_call(layer: nn.Module, *args):
    """`layer(*args)`; with the layer's `gradient_checkpointing` flag on (set by transformers'
    `gradient_checkpointing_enable`, with `_gradient_checkpointing_func`), in training with gradients, through that
    function: the layer's activations are recomputed in the backward instead of kept. Arguments are positional, as
    `use_reentrant=True` needs. The default `torch.utils.checkpoint.checkpoint(use_reentrant=False)` restores the RNG
    state before recomputing, so the dropout masks and the gradients are those of the plain path. (With
    `use_reentrant=True` the first pass runs without gradients and may take the oneDNN inference path: the same
    arithmetic to float rounding.) (DETR's folder has the same function: each folder travels to the Hub alone.)

    Not transformers' `GradientCheckpointingLayer`: its wrapping changed between 5.17 (`__call__`, also without
    gradients) and later versions (`forward`); the flag and function `gradient_checkpointing_enable` sets did not.
    """
    if layer.gradient_checkpointing and layer.training and torch.is_grad_enabled():
        return layer._gradient_checkpointing_func(layer.__call__, *args)
    return layer(*args)


class ViltLayer(nn.Module):
    """A pre-norm transformer block: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`, dropout on both branches."""

    gradient_checkpointing = False  # see checkpointed_call

    def __init__(self, config: ViltConfig):
        super().__init__()
        self.dropout = config.hidden_dropout_prob
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = ViltAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = ViltMLP(config)

    def forward(self, x, attn_bias=None, output_attentions=False, first_token_only=False, packing=None):
        """x: `(B, S, D)` (or `(N, D)` valid tokens with `packing`); attn_bias: `(B, 1, 1, S)` or None. Returns
        `x`'s shape (`(B, 1, D)` with `first_token_only`) and the attention weights or None."""
        y, weights = self.attn(self.norm1(x), attn_bias, output_attentions, first_token_only, packing)
        if first_token_only:
            x = x[:, :1]
        x = x + F.dropout(y, p=self.dropout, training=self.training)
        x = x + F.dropout(self.mlp(self.norm2(x)), p=self.dropout, training=self.training)
        return x, weights


class ViltEncoder(nn.Module):
    def __init__(self, config: ViltConfig):
        super().__init__()
        self.layers = nn.ModuleList(ViltLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x, mask, attn_bias=None, output_attentions=False, output_hidden_states=False,
                first_token_only=False):
        """x: `(B, S, D)`; mask: `(B, S)` valid tokens. Returns the last block's output (only the first token with
        `first_token_only`), every block's output (with the input first) and every block's attention weights (or
        None). On the CPU, with padding, the blocks run on the valid tokens only (see [`TokenPacking`]); outputs
        at padding positions are then zero."""
        # Packing needs the number of valid tokens on the host: skipped on GPUs and under torch.compile.
        cpu_eager = x.device.type == "cpu" and not torch.compiler.is_compiling()
        packing = TokenPacking(mask) if attn_bias is not None and cpu_eager else None
        hidden_states = (x,) if output_hidden_states else None
        attentions = () if output_attentions else None
        if packing is not None:
            x = packing.pack(x)  # (N, D)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            first_only = first_token_only and i == last
            if first_only and packing is not None:  # the last block reads every key but keeps one query each
                x, packing = packing.unpack(x), None
            x, weights = checkpointed_call(layer, x, attn_bias, output_attentions, first_only, packing)
            if output_hidden_states:
                hidden_states += (x if packing is None else packing.unpack(x),)
            if output_attentions:
                attentions += (weights,)
        if packing is not None:
            x = packing.unpack(x)  # (B, S, D)
        return x, hidden_states, attentions


class ViltPooler(nn.Module):
    """Dense + tanh on the first token (the text [CLS])."""

    def __init__(self, config: ViltConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.tanh(linear(hidden_states[:, 0], self.dense))  # (B, D)


class ViltPreTrainedModel(PreTrainedModel):
    config_class = ViltConfig
    base_model_prefix = "vilt"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True  # the transformer blocks, see checkpointed_call
    _no_split_modules = ["ViltEmbeddings", "ViltLayer"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        # The official initialisation (objectives.init_weights) for embeddings, pooler and heads: N(0, 0.02)
        # weights, zero biases, unit LayerNorms; timm's for the ViT part: truncated N(0, 0.02) image positions,
        # and the same normal for the image [CLS], the patch projection and the blocks (which the official
        # model takes from an ImageNet ViT anyway, see `use_pretrained_vit`).
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, ViltEmbeddings):
            nn.init.trunc_normal_(module.position_embeddings, std=std, a=-2 * std, b=2 * std)
            nn.init.normal_(module.cls_token, std=std)


def _check_tensor(name: str, value, ndim: int, shape_text: str) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.ndim != ndim:
        raise ValueError(f"{name} must be {shape_text}, got shape {tuple(value.shape)}")


def check_text_inputs(config: ViltConfig, input_ids, attention_mask, token_type_ids, inputs_embeds) -> tuple[int, int]:
    """Check the text inputs (no device sync); return `(batch_size, text_length)`."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("give exactly one of input_ids and inputs_embeds")
    if input_ids is not None:
        _check_tensor("input_ids", input_ids, 2, "(batch_size, text_length)")
        if input_ids.is_floating_point():
            raise TypeError(f"input_ids must be an integer tensor, got {input_ids.dtype}")
        batch_size, length = input_ids.shape
    else:
        _check_tensor("inputs_embeds", inputs_embeds, 3, "(batch_size, text_length, hidden_size)")
        batch_size, length = inputs_embeds.shape[:2]
        if inputs_embeds.shape[2] != config.hidden_size:
            raise ValueError(
                f"inputs_embeds must have hidden_size={config.hidden_size} features, "
                f"got shape {tuple(inputs_embeds.shape)}"
            )
    name, text = ("input_ids", input_ids) if input_ids is not None else ("inputs_embeds", inputs_embeds)
    if length > config.max_position_embeddings:
        raise ValueError(
            f"{name} has {length} tokens, more than the text position table holds "
            f"(max_position_embeddings={config.max_position_embeddings}); truncate the text"
        )
    if length < 1:
        raise ValueError(f"{name} must hold at least one token ([CLS]), got shape {tuple(text.shape)}")
    for other_name, other in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
        if other is not None:
            _check_tensor(other_name, other, 2, f"(batch_size, text_length) = {(batch_size, length)}")
            if tuple(other.shape) != (batch_size, length):
                raise ValueError(
                    f"{other_name} must be (batch_size, text_length) = {(batch_size, length)} to match {name}, "
                    f"got shape {tuple(other.shape)}"
                )
    return batch_size, length


def check_pixel_inputs(config: ViltConfig, pixel_values, pixel_mask) -> torch.Tensor:
    """Check `pixel_values` `(B, C, H, W)` and `pixel_mask` `(B, H, W)`; return the mask (all ones if None)."""
    _check_tensor("pixel_values", pixel_values, 4, "(batch_size, num_channels, height, width)")
    if not pixel_values.is_floating_point():
        raise TypeError(f"pixel_values must be a float tensor, got {pixel_values.dtype}")
    batch_size, channels, height, width = pixel_values.shape
    if channels != config.num_channels:
        raise ValueError(
            f"pixel_values must have num_channels={config.num_channels} channels, got shape {tuple(pixel_values.shape)}"
        )
    patch = config.patch_size
    if height % patch or width % patch or height == 0 or width == 0:
        raise ValueError(
            f"pixel_values height and width must be positive multiples of patch_size={patch} (pad the images "
            f"bottom/right), got shape {tuple(pixel_values.shape)}"
        )
    if pixel_mask is None:
        return torch.ones((batch_size, height, width), dtype=torch.bool, device=pixel_values.device)
    _check_tensor("pixel_mask", pixel_mask, 3, f"(batch_size, height, width) = {(batch_size, height, width)}")
    if tuple(pixel_mask.shape) != (batch_size, height, width):
        raise ValueError(
            f"pixel_mask must be (batch_size, height, width) = {(batch_size, height, width)} to match pixel_values, "
            f"got shape {tuple(pixel_mask.shape)}"
        )
    return pixel_mask


def attention_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """Additive key mask `(B, 1, 1, S)` from a `(B, S)` validity mask: 0 on valid tokens, the dtype's minimum on
    padding. `None` when every token is valid and the mask lives on the CPU (where checking costs no device sync),
    so that attention runs unmasked; under `torch.compile` always the tensor (no data-dependent branch)."""
    if mask.device.type == "cpu" and not torch.compiler.is_compiling() and bool(mask.all()):
        return None
    return (~mask)[:, None, None, :].to(dtype) * torch.finfo(dtype).min


class ViltModel(ViltPreTrainedModel):
    """Embeddings, the single-stream transformer, the final LayerNorm and the pooler."""

    def __init__(self, config: ViltConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = ViltEmbeddings(config)
        self.encoder = ViltEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = ViltPooler(config) if add_pooling_layer else None
        self.post_init()
        if config.use_pretrained_vit:
            from .timm_vilt import load_pretrained_vit  # only when asked: it creates a timm model

            load_pretrained_vit(self, config.vit)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.text_embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding):
        self.embeddings.text_embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        image_token_type_idx: int | torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        generator: torch.Generator | None = None,
        texts_per_image: int = 1,
        pooled_output_only: bool = False,
    ) -> ViltModelOutput | tuple:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, text_length)`): word-piece ids, `[CLS] ... [SEP]`
                then padding; at most `max_position_embeddings` (40) tokens.
            attention_mask (`torch.Tensor` of shape `(batch_size, text_length)`, *optional*): 1 on real tokens,
                0 on padding (right padding). Defaults to all ones.
            token_type_ids (`torch.LongTensor` of shape `(batch_size, text_length)`, *optional*): BERT's segment
                ids (ViLT uses 0 throughout, the default).
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`): normalized
                images padded bottom/right to a common size; height and width multiples of `patch_size`.
            pixel_mask (`torch.Tensor` of shape `(batch_size, height, width)`, *optional*): 1 on real pixels, 0 on
                padding. Defaults to all ones.
            inputs_embeds (`torch.FloatTensor` of shape `(batch_size, text_length, hidden_size)`, *optional*):
                word embeddings instead of `input_ids`.
            image_token_type_idx (`int` or `torch.LongTensor` of shape `(batch_size,)`, *optional*): modality type
                of the image tokens, 1 (default) or 2 for the second image of an NLVR2 pair.
            output_attentions, output_hidden_states (`bool`, *optional*): also return every block's attention
                weights (explicit attention path) / hidden states.
            generator (`torch.Generator`, *optional*): randomness of the patch sampling (training with
                `max_image_length` > 0); the global RNG of the model's device when `None`.
            texts_per_image (`int`, *optional*, defaults to 1): the text batch holds this many consecutive texts per
                image (`text batch = image batch * texts_per_image`); each image is embedded once and paired with
                each of its texts (retrieval).
            pooled_output_only (`bool`, *optional*, defaults to `False`): compute only what `pooler_output` needs
                (the last block processes the text [CLS] alone; `last_hidden_state` is then `(batch_size, 1,
                hidden_size)`). Ignored when hidden states or attentions are requested.
        """
        config = self.config
        output_attentions = output_attentions if output_attentions is not None else config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else config.return_dict
        text_batch, text_length = check_text_inputs(config, input_ids, attention_mask, token_type_ids, inputs_embeds)
        pixel_mask = check_pixel_inputs(config, pixel_values, pixel_mask)
        if not isinstance(texts_per_image, int) or texts_per_image < 1:
            raise ValueError(f"texts_per_image must be a positive integer, got {texts_per_image!r}")
        if text_batch != pixel_values.shape[0] * texts_per_image:
            text_name = "input_ids" if input_ids is not None else "inputs_embeds"
            expected = "" if texts_per_image == 1 else f" x texts_per_image={texts_per_image}"
            raise ValueError(
                f"{text_name} has batch size {text_batch} but pixel_values has batch size {pixel_values.shape[0]}"
                f"{expected}; every text needs its image"
            )
        if image_token_type_idx is None:
            image_token_type_idx = 1
        if isinstance(image_token_type_idx, int):
            if not 1 <= image_token_type_idx < config.modality_type_vocab_size:
                raise ValueError(
                    f"image_token_type_idx must be in [1, modality_type_vocab_size={config.modality_type_vocab_size}) "
                    f"(0 is the text's), got {image_token_type_idx}"
                )
        elif not isinstance(image_token_type_idx, torch.Tensor) or image_token_type_idx.shape != (text_batch,):
            raise ValueError(
                f"image_token_type_idx must be an int or a LongTensor of shape ({text_batch},), "
                f"got {image_token_type_idx!r}"
            )

        max_image_length = config.max_image_length if self.training else -1
        text, image, image_token_mask, patch_index = self.embeddings(
            input_ids, token_type_ids, inputs_embeds, pixel_values, pixel_mask, max_image_length, generator,
            texts_per_image, image_token_type_idx,
        )  # (B, T, D), (B, 1 + L, D), (B, 1 + L), (B, L)
        x = torch.cat([text, image.to(text.dtype)], dim=1)  # (B, T + 1 + L, D)

        if attention_mask is None:
            text_mask = torch.ones(text_batch, text_length, dtype=torch.bool, device=x.device)
        else:
            text_mask = attention_mask.to(device=x.device, dtype=torch.bool)
        mask = torch.cat([text_mask, image_token_mask], dim=1)  # (B, S)
        device_type = x.device.type
        compute_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype
        bias = attention_bias(mask, compute_dtype)

        first_token_only = pooled_output_only and not (output_attentions or output_hidden_states)
        x, hidden_states, attentions = self.encoder(
            x, mask, bias, output_attentions, output_hidden_states, first_token_only
        )
        x = self.layernorm(x)
        if not first_token_only:  # padding positions carry no information: zero, whatever the device
            x = x * mask[..., None].to(x.dtype)
        pooled = self.pooler(x) if self.pooler is not None else None
        output = ViltModelOutput(
            last_hidden_state=x,
            pooler_output=pooled,
            image_token_mask=image_token_mask,
            patch_index=patch_index,
            hidden_states=hidden_states,
            attentions=attentions,
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "ViltAttention",
    "ViltEncoder",
    "ViltLayer",
    "ViltModel",
    "ViltModelOutput",
    "ViltPooler",
    "ViltPreTrainedModel",
    "ViltTextEmbeddings",
]
