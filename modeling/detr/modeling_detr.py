"""DETR: a CNN backbone, a transformer encoder-decoder and set prediction with the Hungarian loss.

Carion et al., 2020, "End-to-End Object Detection with Transformers". The architecture follows
facebookresearch/detr (``models/transformer.py``, ``models/detr.py``): post-norm layers by default (pre-norm
as an option), sine positions added to queries and keys of every attention over the image, learned object
queries whose embeddings are added to queries (and keys, in self-attention) of every decoder layer, a decoder
input of zeros, and the decoder's final LayerNorm applied to each layer's output before the shared heads.

Parameter names follow transformers' ``DetrForObjectDetection`` so that its checkpoints convert by renaming
(``detrvilt.conversion.convert_transformers_detr``). Attention runs through
``torch.nn.functional.scaled_dot_product_attention``; ``output_attentions=True`` switches to an explicit
softmax path that also returns the weights.

Training-only queries (Group DETR's extra query groups and H-DETR's one-to-many branch, see [`DetrConfig`]) decode
next to the model's own queries in training mode only, in one decoder pass whose self-attention is masked block by
block ([`query_group_ids`]); their outputs go to the loss and never to the predictions, so the inference model is a
plain DETR ([`DetrForObjectDetection.to_plain_detr`]).

Gradient (activation) checkpointing: `model.gradient_checkpointing_enable()` (transformers' API) recomputes every
encoder and decoder layer in the backward instead of keeping its activations ([`checkpointed_call`]).
"""

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .backbone_detr import (
    DetrConvBackbone,
    DetrLearnedPositionEmbedding,
    build_position_embedding,
    use_onednn_convolutions,
)
from .configuration_detr import DetrConfig
from .loss_detr import DetrLoss, check_detection_labels
from .onednn_detr import linear, onednn_linear

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu}


@dataclass
class DetrModelOutput(ModelOutput):
    """Outputs of [`DetrModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, num_queries, d_model)`):
            Output of the last decoder layer, after the decoder's final LayerNorm.
        intermediate_hidden_states (`torch.FloatTensor` of shape `(decoder_layers, batch_size, num_queries, d_model)`):
            The normalized output of every decoder layer (the last one equals `last_hidden_state`).
        encoder_last_hidden_state (`torch.FloatTensor` of shape `(batch_size, H*W, d_model)`): the encoder memory.
        feature_mask (`torch.BoolTensor` of shape `(batch_size, H, W)`): valid cells of the feature map.
        encoder_hidden_states, decoder_hidden_states (`tuple(torch.FloatTensor)`, with `output_hidden_states=True`):
            Input of the first layer and output of every layer (decoder: before the final LayerNorm).
        encoder_attentions (`tuple(torch.FloatTensor)` of shape `(batch_size, heads, H*W, H*W)`),
        decoder_attentions (`(batch_size, heads, num_queries, num_queries)`) and
        cross_attentions (`(batch_size, heads, num_queries, H*W)`), with `output_attentions=True`:
            Softmax attention weights of every layer (rows sum to 1 over the valid cells).
        backbone_features (`tuple(torch.FloatTensor)`, with `output_backbone_features=True`): the four backbone
            feature maps, strides 4, 8, 16, 32 (`(batch_size, C_i, H_i, W_i)`), for the panoptic mask head.
        projected_features (`torch.FloatTensor` of shape `(batch_size, d_model, H, W)`, with
            `output_backbone_features=True`): the last feature map after the 1x1 input projection (the encoder's input
            before flattening).
        training_hidden_states (`torch.FloatTensor` of shape `(decoder_layers, batch_size, T, d_model)`, in training
            mode with `config.num_training_queries` = T > 0): the normalized decoder outputs of the training-only
            queries (Group DETR's extra groups, then the hybrid branch). In that mode the decoder's attention maps and
            hidden states also cover all `num_queries + T` queries; `last_hidden_state` and
            `intermediate_hidden_states` keep the model's own `num_queries`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    intermediate_hidden_states: torch.FloatTensor | None = None
    encoder_last_hidden_state: torch.FloatTensor | None = None
    feature_mask: torch.BoolTensor | None = None
    encoder_hidden_states: tuple | None = None
    decoder_hidden_states: tuple | None = None
    encoder_attentions: tuple | None = None
    decoder_attentions: tuple | None = None
    cross_attentions: tuple | None = None
    backbone_features: tuple | None = None
    projected_features: torch.FloatTensor | None = None
    training_hidden_states: torch.FloatTensor | None = None


@dataclass
class DetrObjectDetectionOutput(ModelOutput):
    """Outputs of [`DetrForObjectDetection`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, with `labels`): weighted Hungarian loss over all decoder layers.
        loss_dict (`dict[str, torch.FloatTensor]`, with `labels`): every term (`loss_ce`, `loss_bbox`,
            `loss_giou`, `cardinality_error`, and `..._{i}` for auxiliary layer `i`), unweighted.
        logits (`torch.FloatTensor` of shape `(batch_size, num_queries, num_labels + 1)`):
            Class logits of the final layer; the last class is "no object".
        pred_boxes (`torch.FloatTensor` of shape `(batch_size, num_queries, 4)`):
            Boxes as (cx, cy, w, h) in [0, 1], relative to each image's **unpadded** size.
        auxiliary_outputs (`list[dict]`, when `config.auxiliary_loss`, with `labels` or in training mode, see
            [`auxiliary_outputs_wanted`]): `{"logits", "pred_boxes"}` of every decoder layer but the last.
        group_logits (`torch.FloatTensor` of shape `(num_query_groups - 1, L, batch_size, num_queries, num_labels + 1)`)
            and group_pred_boxes (`(num_query_groups - 1, L, batch_size, num_queries, 4)`), in training mode with
            `config.num_query_groups > 1`: the predictions of Group DETR's extra query groups, for every decoder layer
            whose loss is used (`L` = `decoder_layers` with auxiliary losses, else 1; the final layer last).
        hybrid_logits (`torch.FloatTensor` of shape `(L, batch_size, hybrid_queries, num_labels + 1)`) and
            hybrid_pred_boxes (`(L, batch_size, hybrid_queries, 4)`), in training mode with `config.hybrid_queries > 0`:
            the predictions of the one-to-many branch.
        The remaining fields are those of [`DetrModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    loss_dict: dict | None = None
    logits: torch.FloatTensor | None = None
    pred_boxes: torch.FloatTensor | None = None
    auxiliary_outputs: list | None = None
    last_hidden_state: torch.FloatTensor | None = None
    encoder_last_hidden_state: torch.FloatTensor | None = None
    feature_mask: torch.BoolTensor | None = None
    encoder_hidden_states: tuple | None = None
    decoder_hidden_states: tuple | None = None
    encoder_attentions: tuple | None = None
    decoder_attentions: tuple | None = None
    cross_attentions: tuple | None = None
    group_logits: torch.FloatTensor | None = None
    group_pred_boxes: torch.FloatTensor | None = None
    hybrid_logits: torch.FloatTensor | None = None
    hybrid_pred_boxes: torch.FloatTensor | None = None


class DetrAttention(nn.Module):
    """Multi-head attention whose callers add positions to queries and keys (never to values)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)  # (B, heads, T, head_dim)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_bias: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            query (`(B, T, D)`), key (`(B, S, D)`), value (`(B, S, D)`): inputs, positions already added. Pass the
                same tensor as query and key for self-attention (their projections then share one matmul).
            attn_bias (`(B, 1, 1, S)`, optional): additive mask, 0 on valid keys and a large negative value on padding.
            output_attentions: return the attention weights `(B, heads, T, S)` (explicit path) instead of `None`.
        """
        if key is query:  # self-attention: one matmul for queries and keys
            weight = torch.cat([self.q_proj.weight, self.k_proj.weight])
            q, k = onednn_linear(query, weight, torch.cat([self.q_proj.bias, self.k_proj.bias])).chunk(2, dim=-1)
            q, k = self._split_heads(q), self._split_heads(k)  # (B, h, T, d) each
        else:
            q = self._split_heads(linear(query, self.q_proj))  # (B, h, T, d)
            k = self._split_heads(linear(key, self.k_proj))  # (B, h, S, d)
        v = self._split_heads(linear(value, self.v_proj))  # (B, h, S, d)
        dropout = self.dropout if self.training else 0.0
        if output_attentions:
            scores = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)  # (B, h, T, S)
            if attn_bias is not None:
                scores = scores + attn_bias
            weights = scores.softmax(-1)
            out = F.dropout(weights, p=dropout, training=self.training) @ v
        else:
            weights = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=dropout)
        out = out.transpose(1, 2).flatten(2)  # (B, T, D)
        return linear(out, self.out_proj), weights


class DetrFeedForward(nn.Module):
    def __init__(self, config: DetrConfig, ffn_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, config.d_model)
        self.activation = _ACTIVATIONS[config.activation_function]
        self.activation_dropout = config.activation_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.dropout(self.activation(linear(x, self.fc1)), p=self.activation_dropout, training=self.training)
        return linear(x, self.fc2)


def checkpointed_call(layer: nn.Module, *args):
    """`layer(*args)`; with the layer's `gradient_checkpointing` flag on (set by transformers'
    `gradient_checkpointing_enable`, with `_gradient_checkpointing_func`), in training with gradients, through that
    function: the layer's activations are recomputed in the backward instead of kept. Arguments are positional, as
    `use_reentrant=True` needs. The default `torch.utils.checkpoint.checkpoint(use_reentrant=False)` restores the RNG
    state before recomputing, so the dropout masks and the gradients are those of the plain path. The oneDNN linear
    (`onednn_detr.py`, a custom autograd Function) needs no bypass: it is recomputed like any other op. (ViLT's folder
    has the same function: each folder travels to the Hub alone.)

    Not transformers' `GradientCheckpointingLayer`: its wrapping changed between 5.17 (`__call__`, also without
    gradients) and later versions (`forward`); the flag and function `gradient_checkpointing_enable` sets did not.
    """
    if layer.gradient_checkpointing and layer.training and torch.is_grad_enabled():
        return layer._gradient_checkpointing_func(layer.__call__, *args)
    return layer(*args)


class DetrEncoderLayer(nn.Module):
    gradient_checkpointing = False  # see checkpointed_call

    def __init__(self, config: DetrConfig):
        super().__init__()
        self.pre_norm = config.pre_norm
        self.dropout = config.dropout
        self.self_attn = DetrAttention(config.d_model, config.encoder_attention_heads, config.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.mlp = DetrFeedForward(config, config.encoder_ffn_dim)
        self.final_layer_norm = nn.LayerNorm(config.d_model)

    def forward(self, x, pos, attn_bias, output_attentions=False):
        """x, pos: `(B, H*W, D)`; attn_bias: `(B, 1, 1, H*W)`. Returns the new `x` and the attention weights."""
        y = self.self_attn_layer_norm(x) if self.pre_norm else x
        query = y + pos
        y, weights = self.self_attn(query, query, y, attn_bias, output_attentions)
        x = x + F.dropout(y, p=self.dropout, training=self.training)
        if not self.pre_norm:
            x = self.self_attn_layer_norm(x)
        y = self.final_layer_norm(x) if self.pre_norm else x
        x = x + F.dropout(self.mlp(y), p=self.dropout, training=self.training)
        if not self.pre_norm:
            x = self.final_layer_norm(x)
        return x, weights


class DetrDecoderLayer(nn.Module):
    gradient_checkpointing = False  # see checkpointed_call

    def __init__(self, config: DetrConfig):
        super().__init__()
        self.pre_norm = config.pre_norm
        self.dropout = config.dropout
        heads, dim = config.decoder_attention_heads, config.d_model
        self.self_attn = DetrAttention(dim, heads, config.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.encoder_attn = DetrAttention(dim, heads, config.attention_dropout)
        self.encoder_attn_layer_norm = nn.LayerNorm(dim)
        self.mlp = DetrFeedForward(config, config.decoder_ffn_dim)
        self.final_layer_norm = nn.LayerNorm(dim)

    def _residual(self, x, y, norm):
        x = x + F.dropout(y, p=self.dropout, training=self.training)
        return x if self.pre_norm else norm(x)

    def forward(self, x, query_pos, memory, memory_with_pos, memory_bias, output_attentions=False, self_bias=None):
        """x, query_pos: `(B, Q, D)`; memory, memory_with_pos: `(B, H*W, D)`; memory_bias: `(B, 1, 1, H*W)`;
        self_bias (`(1, 1, Q, Q)`, optional): additive mask of the queries' self-attention (query groups)."""
        y = self.self_attn_layer_norm(x) if self.pre_norm else x
        query = y + query_pos
        y, self_weights = self.self_attn(query, query, y, self_bias, output_attentions)
        x = self._residual(x, y, self.self_attn_layer_norm)
        y = self.encoder_attn_layer_norm(x) if self.pre_norm else x
        y, cross_weights = self.encoder_attn(y + query_pos, memory_with_pos, memory, memory_bias, output_attentions)
        x = self._residual(x, y, self.encoder_attn_layer_norm)
        y = self.final_layer_norm(x) if self.pre_norm else x
        x = self._residual(x, self.mlp(y), self.final_layer_norm)
        return x, self_weights, cross_weights


class DetrEncoder(nn.Module):
    def __init__(self, config: DetrConfig):
        super().__init__()
        self.layers = nn.ModuleList(DetrEncoderLayer(config) for _ in range(config.encoder_layers))
        self.layernorm = nn.LayerNorm(config.d_model) if config.pre_norm else None

    def forward(self, x, pos, attn_bias, output_attentions=False, output_hidden_states=False):
        hidden_states = (x,) if output_hidden_states else None
        attentions = () if output_attentions else None
        for layer in self.layers:
            x, weights = checkpointed_call(layer, x, pos, attn_bias, output_attentions)
            if output_hidden_states:
                hidden_states += (x,)
            if output_attentions:
                attentions += (weights,)
        if self.layernorm is not None:
            x = self.layernorm(x)
        return x, hidden_states, attentions


class DetrDecoder(nn.Module):
    def __init__(self, config: DetrConfig):
        super().__init__()
        self.chained_norm = config.decoder_chained_norm
        self.layers = nn.ModuleList(DetrDecoderLayer(config) for _ in range(config.decoder_layers))
        self.layernorm = nn.LayerNorm(config.d_model)

    def forward(self, query_pos, memory, pos, memory_bias, output_attentions=False, output_hidden_states=False,
                self_bias=None):
        """Returns the normalized output of every layer, `(decoder_layers, B, Q, D)`, and the optional extras.
        `self_bias` (`(1, 1, Q, Q)`, optional) masks the queries' self-attention in every layer."""
        x = torch.zeros_like(query_pos)  # (B, Q, D): the queries' content starts empty
        memory_with_pos = memory + pos  # the same keys for every layer
        hidden_states = (x,) if output_hidden_states else None
        self_attentions = () if output_attentions else None
        cross_attentions = () if output_attentions else None
        normalized = []
        for layer in self.layers:
            x, self_weights, cross_weights = checkpointed_call(
                layer, x, query_pos, memory, memory_with_pos, memory_bias, output_attentions, self_bias
            )
            if output_hidden_states:
                hidden_states += (x,)
            if output_attentions:
                self_attentions += (self_weights,)
                cross_attentions += (cross_weights,)
            if self.chained_norm:
                x = self.layernorm(x)
                normalized.append(x)
            else:
                normalized.append(self.layernorm(x))
        if self.chained_norm:
            normalized[-1] = self.layernorm(x)
        return torch.stack(normalized), hidden_states, self_attentions, cross_attentions


class DetrTrainingQueryEmbeddings(nn.Embedding):
    """The training-only query embeddings (Group DETR's extra groups, then the hybrid branch): `(T, d_model)`.

    Initialised N(0, 1) like the object queries, but from a generator of their own seeded by `torch.initial_seed()`:
    they draw nothing from the global random stream, so the rest of a model built with them gets the same initial
    weights as a plain DETR built from the same seed (method and baseline start from the same model).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int):
        super().__init__(num_embeddings, embedding_dim, _weight=torch.empty(num_embeddings, embedding_dim))

    def reset_parameters(self) -> None:
        if self.weight.device.type == "meta":
            return
        generator = torch.Generator(device=self.weight.device).manual_seed((torch.initial_seed() + 20) % 2**63)
        nn.init.normal_(self.weight, generator=generator)


def query_group_ids(config: DetrConfig, training: bool = True) -> torch.Tensor:
    """The group of every decoder query: `torch.LongTensor` of shape `(num_queries + T,)`, T the training-only
    queries in training (0 otherwise): 0 for the model's own queries, 1 .. `num_query_groups - 1` for Group DETR's
    extra groups, `num_query_groups` for the hybrid branch. A query attends only to queries of its own group."""
    ids = torch.arange(config.num_query_groups if training else 1).repeat_interleave(config.num_queries)
    if training and config.hybrid_queries:
        ids = torch.cat([ids, torch.full((config.hybrid_queries,), config.num_query_groups)])
    return ids


def group_attention_bias(group_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive self-attention mask `(1, 1, T, T)`: 0 between queries of one group, the dtype's minimum across
    groups (block diagonal: no information passes between groups)."""
    across = group_ids[:, None] != group_ids[None, :]  # (T, T)
    return (across.to(dtype) * torch.finfo(dtype).min)[None, None]


class DetrPreTrainedModel(PreTrainedModel):
    config_class = DetrConfig
    base_model_prefix = "model"
    main_input_name = "pixel_values"
    # The encoder and decoder layers (see checkpointed_call); the backbone keeps its activations.
    supports_gradient_checkpointing = True
    _no_split_modules = ["DetrConvBackbone", "DetrEncoderLayer", "DetrDecoderLayer"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        # The official initialisation: Xavier-uniform for the transformer's and the heads' linear layers,
        # N(0, 1) object queries, U(0, 1) learned positions. Convolutions keep their own initialisation
        # (timm's for the backbone, PyTorch's for the input projection).
        if isinstance(module, DetrTrainingQueryEmbeddings):
            module.reset_parameters()
        elif isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight, gain=self.config.init_xavier_std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, DetrLearnedPositionEmbedding):  # visited after its two nn.Embedding children
            nn.init.uniform_(module.row_embeddings.weight)
            nn.init.uniform_(module.column_embeddings.weight)
        elif isinstance(module, nn.Embedding):  # the object queries
            nn.init.normal_(module.weight)


def check_pixel_inputs(pixel_values, pixel_mask, num_channels: int) -> torch.Tensor:
    """Check `pixel_values` `(B, C, H, W)` and `pixel_mask` `(B, H, W)`; return the mask (all ones if `None`)."""
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
    if pixel_values.ndim != 4:
        raise ValueError(
            f"pixel_values must be (batch_size, num_channels, height, width), got shape {tuple(pixel_values.shape)}"
        )
    if pixel_values.shape[1] != num_channels:
        raise ValueError(
            f"pixel_values must have num_channels={num_channels} channels, got shape {tuple(pixel_values.shape)}"
        )
    if not pixel_values.is_floating_point():
        raise TypeError(f"pixel_values must be a float tensor, got {pixel_values.dtype}")
    batch_size, _, height, width = pixel_values.shape
    if pixel_mask is None:
        return torch.ones((batch_size, height, width), dtype=torch.bool, device=pixel_values.device)
    if not isinstance(pixel_mask, torch.Tensor):
        raise TypeError(f"pixel_mask must be a torch.Tensor, got {type(pixel_mask).__name__}")
    if tuple(pixel_mask.shape) != (batch_size, height, width):
        raise ValueError(
            f"pixel_mask must be (batch_size, height, width) = {(batch_size, height, width)} to match pixel_values, "
            f"got shape {tuple(pixel_mask.shape)}"
        )
    return pixel_mask


class DetrModel(DetrPreTrainedModel):
    """Backbone, 1x1 input projection, transformer encoder and decoder; returns the decoded query embeddings."""

    def __init__(self, config: DetrConfig):
        super().__init__(config)
        self.backbone = DetrConvBackbone(config)
        self.position_embedding = build_position_embedding(config)
        # A DetrConv2d (a class change, same parameter names): a matrix product on the channels-last feature map.
        self.input_projection = use_onednn_convolutions(
            nn.Conv2d(self.backbone.channels[-1], config.d_model, kernel_size=1)
        )
        self.query_position_embeddings = nn.Embedding(config.num_queries, config.d_model)
        self.encoder = DetrEncoder(config)
        self.decoder = DetrDecoder(config)
        # Training only (Group DETR's extra query groups, the hybrid branch); never used in evaluation.
        self.training_query_position_embeddings = (
            DetrTrainingQueryEmbeddings(config.num_training_queries, config.d_model)
            if config.num_training_queries else None
        )
        self.post_init()

    def freeze_backbone(self):
        self.backbone.requires_grad_(False)

    def forward(
        self,
        pixel_values: torch.FloatTensor,
        pixel_mask: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        output_backbone_features: bool = False,
    ) -> DetrModelOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
                Normalized images, padded bottom/right to a common size.
            pixel_mask (`torch.Tensor` of shape `(batch_size, height, width)`, *optional*):
                1 on real pixels, 0 on padding. Defaults to all ones.
            output_attentions (`bool`, *optional*): also return every attention map (explicit attention path).
            output_hidden_states (`bool`, *optional*): also return every layer's hidden states.
            output_backbone_features (`bool`, *optional*): also return the backbone's four feature maps and the
                projected last one (what the panoptic mask head reads).

        In training mode with training-only queries (`config.num_query_groups > 1` or `config.hybrid_queries > 0`)
        they decode in the same pass, masked off from the model's own queries, into `training_hidden_states`.
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        pixel_mask = check_pixel_inputs(pixel_values, pixel_mask, self.config.num_channels)

        features = self.backbone(pixel_values, pixel_mask)
        feature_map, mask = features[-1]  # (B, C, H, W), (B, H, W)
        projected = self.input_projection(feature_map)  # (B, D, H, W)
        source = projected.flatten(2).transpose(1, 2)  # (B, H*W, D)
        pos = self.position_embedding(mask, dtype=source.dtype)  # (B, H*W, D)
        # Additive key mask: 0 on valid cells, the dtype's minimum on padding (a fully padded row stays finite).
        attn_bias = (~mask.flatten(1))[:, None, None, :].to(source.dtype) * torch.finfo(source.dtype).min

        memory, encoder_states, encoder_attentions = self.encoder(
            source, pos, attn_bias, output_attentions, output_hidden_states
        )
        queries = self.query_position_embeddings.weight  # (Q, D)
        self_bias = None
        with_training_queries = self.training and self.training_query_position_embeddings is not None
        if with_training_queries:
            queries = torch.cat([queries, self.training_query_position_embeddings.weight])  # (Q + T, D)
            self_bias = group_attention_bias(query_group_ids(self.config).to(memory.device), memory.dtype)
        query_pos = queries[None].expand(source.shape[0], -1, -1)  # (B, Q [+ T], D)
        intermediate, decoder_states, decoder_attentions, cross_attentions = self.decoder(
            query_pos.to(memory.dtype), memory, pos, attn_bias, output_attentions, output_hidden_states, self_bias
        )  # intermediate (L, B, Q [+ T], D)
        training_states = None
        if with_training_queries:
            num_queries = self.config.num_queries
            intermediate, training_states = intermediate[:, :, :num_queries], intermediate[:, :, num_queries:]
        output = DetrModelOutput(
            last_hidden_state=intermediate[-1],
            intermediate_hidden_states=intermediate,
            encoder_last_hidden_state=memory,
            feature_mask=mask,
            encoder_hidden_states=encoder_states,
            decoder_hidden_states=decoder_states,
            encoder_attentions=encoder_attentions,
            decoder_attentions=decoder_attentions,
            cross_attentions=cross_attentions,
            backbone_features=tuple(f for f, _ in features) if output_backbone_features else None,
            projected_features=projected if output_backbone_features else None,
            training_hidden_states=training_states,
        )
        return output if return_dict else output.to_tuple()


class DetrMLPPredictionHead(nn.Module):
    """A small MLP (ReLU between layers, none after the last): DETR's box head."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = linear(x, layer) if i == len(self.layers) - 1 else F.relu(linear(x, layer))
        return x


class DetrForObjectDetection(DetrPreTrainedModel):
    """DETR with its class head (`num_labels + 1` outputs, the last is "no object") and its 3-layer box MLP."""

    # Training-only query embeddings of a model trained with query groups or hybrid matching: a plain DETR config
    # loads such a checkpoint without them (they never reach the predictions).
    _keys_to_ignore_on_load_unexpected = [r"model\.training_query_position_embeddings\.weight"]

    def __init__(self, config: DetrConfig):
        super().__init__(config)
        self.model = DetrModel(config)
        self.class_labels_classifier = nn.Linear(config.d_model, config.num_labels + 1)
        self.bbox_predictor = DetrMLPPredictionHead(config.d_model, config.d_model, 4, num_layers=3)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.FloatTensor,
        pixel_mask: torch.Tensor | None = None,
        labels: list[dict] | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        output_auxiliary_outputs: bool | None = None,
    ) -> DetrObjectDetectionOutput | tuple:
        r"""
        Args:
            pixel_values, pixel_mask: see [`DetrModel.forward`].
            labels (`list[dict]`, *optional*): one dict per image with `class_labels` (`torch.LongTensor` of shape
                `(n,)`, values in `[0, num_labels)`) and `boxes` (`torch.FloatTensor` of shape `(n, 4)`, cx, cy, w,
                h normalized by the **unpadded** image size). `n` may be 0. When given, the Hungarian loss is
                returned in `loss` and its terms in `loss_dict`.
            output_attentions, output_hidden_states (`bool`, *optional*): see [`DetrModel.forward`].
            output_auxiliary_outputs (`bool`, *optional*): return `auxiliary_outputs` (with `config.auxiliary_loss`);
                by default with `labels` or in training mode, see [`auxiliary_outputs_wanted`].
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs, all_logits, all_boxes = self.forward_detection(
            pixel_values, pixel_mask, labels, output_attentions, output_hidden_states
        )
        training_predictions = self.predict_training_queries(outputs)
        loss, loss_dict = hungarian_loss(self.config, all_logits, all_boxes, labels, **training_predictions)
        auxiliary = auxiliary_outputs_wanted(output_auxiliary_outputs, labels, self.training)
        output = DetrObjectDetectionOutput(
            loss=loss, loss_dict=loss_dict, **self.detection_fields(outputs, all_logits, all_boxes, auxiliary),
            **training_predictions,
        )
        return output if return_dict else output.to_tuple()

    def forward_detection(
        self,
        pixel_values: torch.FloatTensor,
        pixel_mask: torch.Tensor | None,
        labels: list[dict] | None,
        output_attentions: bool | None,
        output_hidden_states: bool | None,
        output_backbone_features: bool = False,
    ) -> tuple[DetrModelOutput, torch.Tensor, torch.Tensor]:
        """What the detector and the panoptic model both run first: check `labels`, run [`DetrModel`], then the
        class and box heads. Returns the model's outputs and [`predict`]'s logits `(L, B, Q, C+1)` and boxes
        `(L, B, Q, 4)`."""
        if labels is not None:
            check_detection_labels(labels, pixel_values.shape[0] if isinstance(pixel_values, torch.Tensor) else 0)
        outputs = self.model(
            pixel_values, pixel_mask, output_attentions, output_hidden_states, return_dict=True,
            output_backbone_features=output_backbone_features,
        )
        all_logits, all_boxes = self.predict(outputs)
        return outputs, all_logits, all_boxes

    def detection_fields(self, outputs: DetrModelOutput, all_logits: torch.Tensor, all_boxes: torch.Tensor,
                         auxiliary: bool = True) -> dict:
        """The output fields after `loss` and `loss_dict` that the detector and the panoptic model share: the final
        layer's `logits` and `pred_boxes`, `auxiliary_outputs` (`None` unless `auxiliary`) and the
        [`DetrModelOutput`] fields passed through."""
        return dict(
            logits=all_logits[-1],
            pred_boxes=all_boxes[-1],
            auxiliary_outputs=self.auxiliary_outputs(all_logits, all_boxes) if auxiliary else None,
            **passed_through(outputs),
        )

    def predict(self, outputs: DetrModelOutput, all_layers: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits `(L, B, Q, C+1)` and boxes `(L, B, Q, 4)` of every decoder layer whose loss is used (all of
        them with auxiliary losses, else the last one only; all of them with `all_layers`, e.g. to measure each
        layer's AP), from the normalized decoder outputs."""
        every_layer = self.config.auxiliary_loss or all_layers
        states = outputs.intermediate_hidden_states if every_layer else outputs.last_hidden_state[None]
        return self.class_labels_classifier(states), self.bbox_predictor(states).sigmoid()

    def predict_training_queries(self, outputs: DetrModelOutput) -> dict:
        """The class and box heads on the training-only queries' outputs (`{}` when there are none, e.g. in
        evaluation): `group_logits` `(G-1, L, B, Q, C+1)`, `group_pred_boxes` `(G-1, L, B, Q, 4)` with query groups,
        `hybrid_logits` `(L, B, H, C+1)`, `hybrid_pred_boxes` `(L, B, H, 4)` with the hybrid branch; `L` as in
        [`predict`]."""
        states = outputs.training_hidden_states  # (decoder_layers, B, T, D)
        if states is None:
            return {}
        if not self.config.auxiliary_loss:
            states = states[-1:]
        logits, boxes = self.class_labels_classifier(states), self.bbox_predictor(states).sigmoid()  # (L, B, T, .)
        predictions = {}
        num_groups, num_queries = self.config.num_query_groups - 1, self.config.num_queries
        if num_groups:
            grouped = num_groups * num_queries

            def by_group(x):  # (L, B, (G-1)*Q, K) -> (G-1, L, B, Q, K)
                return x[:, :, :grouped].unflatten(2, (num_groups, num_queries)).permute(2, 0, 1, 3, 4)

            predictions.update(group_logits=by_group(logits), group_pred_boxes=by_group(boxes))
        if self.config.hybrid_queries:
            start = num_groups * num_queries
            predictions.update(hybrid_logits=logits[:, :, start:], hybrid_pred_boxes=boxes[:, :, start:])
        return predictions

    def to_plain_detr(self) -> "DetrForObjectDetection":
        """This model as a plain DETR: the config without query groups and hybrid branch, the same weights without the
        training-only query embeddings (a new model; `self` is left as it is). Its outputs equal `self`'s in
        evaluation mode; save it to ship the inference model alone."""
        config = copy.deepcopy(self.config)
        config.num_query_groups, config.hybrid_queries = 1, 0
        config.use_pretrained_backbone = False  # the weights come from this model
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("model.training_query_position_")}
        parameter = next(self.parameters())
        with torch.random.fork_rng(devices=[]):  # building the new model leaves the global random stream alone
            plain = type(self)(config)
        plain.to(device=parameter.device, dtype=parameter.dtype).load_state_dict(state)
        return plain.train(self.training)

    def auxiliary_outputs(self, all_logits: torch.Tensor, all_boxes: torch.Tensor) -> list | None:
        """`[{"logits", "pred_boxes"}]` of every decoder layer but the last, with auxiliary losses (else `None`)."""
        if not self.config.auxiliary_loss:
            return None
        return [{"logits": a, "pred_boxes": b} for a, b in zip(all_logits[:-1], all_boxes[:-1], strict=True)]


def auxiliary_outputs_wanted(output_auxiliary_outputs: bool | None, labels: list | None, training: bool) -> bool:
    """Whether a forward returns `auxiliary_outputs`: as asked, else with `labels` or in training mode. In training
    the loss may be computed outside the model from its outputs (Trainer's `compute_loss_func=DetrLoss`, which gets no
    labels through the model) and needs them; in evaluation without labels they are left out, as transformers' DETR
    does, because batched pipelines split every list of an output by image and a list per decoder layer breaks that."""
    if output_auxiliary_outputs is not None:
        return output_auxiliary_outputs
    return labels is not None or training


def hungarian_loss(
    config: DetrConfig, all_logits: torch.Tensor, all_boxes: torch.Tensor, labels: list | None,
    pred_masks: torch.Tensor | None = None, **training_predictions,
) -> tuple[torch.Tensor | None, dict | None]:
    """`(loss, loss_dict)` of [`DetrLoss.compute`] with the loss `config` sets (the mask losses too, given
    `pred_masks`; the query groups' and the hybrid branch's losses, given the outputs of
    [`DetrForObjectDetection.predict_training_queries`]); `(None, None)` without `labels`."""
    if labels is None:
        return None, None
    return DetrLoss.from_config(config).compute(all_logits, all_boxes, labels, pred_masks, **training_predictions)


def passed_through(outputs: DetrModelOutput) -> dict:
    """The [`DetrModelOutput`] fields that the task models return unchanged."""
    names = ("last_hidden_state", "encoder_last_hidden_state", "feature_mask", "encoder_hidden_states",
             "decoder_hidden_states", "encoder_attentions", "decoder_attentions", "cross_attentions")
    return {name: getattr(outputs, name) for name in names}
