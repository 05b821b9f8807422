"""DETR for panoptic segmentation: a mask head on top of the detector.

Carion et al., 2020, section 4.4 and figure 8. For every decoder output (object query), a multi-head attention
map over the encoder memory (`DetrMHAttentionMap`: softmax over heads and positions together, no values) is
concatenated to the projected last backbone feature map, and a small FPN-like convolutional head
(`DetrMaskHeadSmallConv`: 3x3 convolutions with GroupNorm and ReLU, upsampled x2 three times with the backbone's
stride-16, -8 and -4 feature maps added through 1x1 adapters) turns it into one mask logit map per query at a quarter
of the padded input resolution. The class and box heads are the detector's.

Follows facebookresearch/detr (``models/segmentation.py``). Parameter names follow transformers 5.x
(``DetrForSegmentation``: ``detr.*``, ``bbox_attention.*``, ``mask_head.*``) so that its checkpoints convert by
renaming (``detrvilt.conversion.convert_transformers_detr_segmentation``). As in transformers, a layer's GroupNorm
uses ``min(8, channels)`` groups, so small test models can be built.

The paper's two-stage recipe (train the detector, then freeze it and train the head only) is
``DetrForSegmentation.from_detector(detector, freeze_detector=True)``.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from .configuration_detr_segmentation import DetrSegmentationConfig, mask_head_channels
from .modeling_detr import DetrForObjectDetection, DetrPreTrainedModel, auxiliary_outputs_wanted, hungarian_loss


@dataclass
class DetrSegmentationOutput(ModelOutput):
    """Outputs of [`DetrForSegmentation`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, with `labels`): the Hungarian loss of all decoder layers plus the
            weighted focal and dice losses of the final layer's matched masks.
        loss_dict (`dict[str, torch.FloatTensor]`, with `labels`): every term, unweighted (`loss_ce`, `loss_bbox`,
            `loss_giou`, `cardinality_error`, `loss_mask`, `loss_dice`, and `..._{i}` for auxiliary layer `i`).
        logits (`torch.FloatTensor` of shape `(batch_size, num_queries, num_labels + 1)`): class logits, the last
            class "no object".
        pred_boxes (`torch.FloatTensor` of shape `(batch_size, num_queries, 4)`): (cx, cy, w, h) in [0, 1] of each
            image's **unpadded** size.
        pred_masks (`torch.FloatTensor` of shape `(batch_size, num_queries, height / 4, width / 4)`): mask logits per
            query over the **padded** input (rounded up by the backbone's strides).
        auxiliary_outputs (`list[dict]`, when `config.auxiliary_loss`, with `labels` or in training mode, see
            [`auxiliary_outputs_wanted`]): `{"logits", "pred_boxes"}` of the other decoder layers.
        The remaining fields are those of [`DetrModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    loss_dict: dict | None = None
    logits: torch.FloatTensor | None = None
    pred_boxes: torch.FloatTensor | None = None
    pred_masks: torch.FloatTensor | None = None
    auxiliary_outputs: list | None = None
    last_hidden_state: torch.FloatTensor | None = None
    encoder_last_hidden_state: torch.FloatTensor | None = None
    feature_mask: torch.BoolTensor | None = None
    encoder_hidden_states: tuple | None = None
    decoder_hidden_states: tuple | None = None
    encoder_attentions: tuple | None = None
    decoder_attentions: tuple | None = None
    cross_attentions: tuple | None = None


def _group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, channels), channels)


class DetrMaskConvBlock(nn.Module):
    """3x3 convolution, GroupNorm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, groups: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = _group_norm(out_channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class DetrFPNFusionStage(nn.Module):
    """Upsample (nearest) to the next backbone feature map, add it through a 1x1 adapter, refine with a conv block."""

    def __init__(self, fpn_channels: int, in_channels: int, out_channels: int, groups: int = 8):
        super().__init__()
        self.fpn_adapter = nn.Conv2d(fpn_channels, in_channels, kernel_size=1)
        self.refine = DetrMaskConvBlock(in_channels, out_channels, groups)

    def forward(self, x: torch.Tensor, fpn_features: torch.Tensor, num_queries: int) -> torch.Tensor:
        """x: `(B*Q, C_in, h, w)`; fpn_features: `(B, C_fpn, H, W)`, shared by the `num_queries` queries of an image."""
        adapted = self.fpn_adapter(fpn_features)  # (B, C_in, H, W): once per image, not per query
        adapted = adapted.repeat_interleave(num_queries, dim=0)  # (B*Q, C_in, H, W)
        x = F.interpolate(x, size=adapted.shape[-2:], mode="nearest")
        return self.refine(adapted + x)


class DetrMaskHeadSmallConv(nn.Module):
    """The FPN-like mask head: attention maps + projected features in, one mask logit map per query out.

    Args:
        hidden_size (`int`): `d_model`, the channels of the projected feature map.
        num_heads (`int`): attention heads of the attention map (extra input channels).
        fpn_channels (`list[int]`): channels of the stride-16, -8 and -4 backbone feature maps, in that order.
        groups (`int`): GroupNorm groups (at most; fewer when a layer has fewer channels).
    """

    def __init__(self, hidden_size: int, num_heads: int, fpn_channels: list[int], groups: int = 8):
        super().__init__()
        channels = mask_head_channels(hidden_size, num_heads)
        self.conv1 = DetrMaskConvBlock(channels[0], channels[0], groups)
        self.conv2 = DetrMaskConvBlock(channels[0], channels[1], groups)
        self.fpn_stages = nn.ModuleList(
            DetrFPNFusionStage(fpn, channels[i + 1], channels[i + 2], groups) for i, fpn in enumerate(fpn_channels)
        )
        self.output_conv = nn.Conv2d(channels[-1], 1, kernel_size=3, padding=1)

    def forward(self, features: torch.Tensor, attention_maps: torch.Tensor, fpn_features: list) -> torch.Tensor:
        """
        Args:
            features (`torch.FloatTensor` of shape `(B, d_model, H, W)`): the projected last feature map.
            attention_maps (`torch.FloatTensor` of shape `(B, Q, heads, H, W)`): see [`DetrMHAttentionMap`].
            fpn_features (`list[torch.FloatTensor]`): the stride-16, -8 and -4 backbone feature maps
                `(B, C_i, H_i, W_i)`.

        Returns:
            `torch.FloatTensor` of shape `(B, Q, H_4, W_4)`: mask logits at the stride-4 resolution.
        """
        batch_size, num_queries = attention_maps.shape[:2]
        x = torch.cat([features.repeat_interleave(num_queries, dim=0), attention_maps.flatten(0, 1)], dim=1)
        x = self.conv2(self.conv1(x))  # (B*Q, d_model / 2, H, W)
        for stage, fpn in zip(self.fpn_stages, fpn_features, strict=True):
            x = stage(x, fpn, num_queries)
        masks = self.output_conv(x)  # (B*Q, 1, H_4, W_4)
        return masks.view(batch_size, num_queries, *masks.shape[-2:])


class DetrMHAttentionMap(nn.Module):
    """Multi-head attention weights of each query over the encoder memory (no values, no output projection).

    The softmax runs over heads and positions together (as the official code), so a query's map sums to one.
    """

    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            queries (`torch.FloatTensor` of shape `(B, Q, D)`): decoder outputs.
            memory (`torch.FloatTensor` of shape `(B, D, H, W)`): encoder memory as a feature map (no positions).
            mask (`torch.BoolTensor` of shape `(B, H, W)`, *optional*): True on valid cells.

        Returns:
            `torch.FloatTensor` of shape `(B, Q, heads, H, W)`.
        """
        batch_size, _, height, width = memory.shape
        q = self.q_proj(queries).unflatten(-1, (self.num_heads, self.head_dim))  # (B, Q, h, d)
        k = self.k_proj(memory.flatten(2).transpose(1, 2))  # (B, HW, D)
        k = k.unflatten(-1, (self.num_heads, self.head_dim))  # (B, HW, h, d)
        scores = torch.einsum("bqnd,bpnd->bqnp", q * self.head_dim**-0.5, k)  # (B, Q, h, HW)
        if mask is not None:
            scores = scores.masked_fill(~mask.flatten(1)[:, None, None, :], torch.finfo(scores.dtype).min)
        weights = scores.flatten(2).softmax(-1)  # over heads and positions together
        return weights.view(batch_size, -1, self.num_heads, height, width)


class DetrForSegmentation(DetrPreTrainedModel):
    """DETR with the panoptic mask head: the detector's class and box heads plus one mask per query.

    Attributes:
        detr ([`DetrForObjectDetection`]): the detector (backbone, transformer, class and box heads).
        bbox_attention ([`DetrMHAttentionMap`]): the attention of the decoder outputs over the encoder memory.
        mask_head ([`DetrMaskHeadSmallConv`]): the FPN-like convolutional head.
    """

    config_class = DetrSegmentationConfig
    _no_split_modules = ["DetrConvBackbone", "DetrEncoderLayer", "DetrDecoderLayer", "DetrMaskHeadSmallConv"]

    def __init__(self, config: DetrSegmentationConfig):
        # By model type, not isinstance: loaded as remote code, the config class can come from another copy of this
        # folder than the model class (transformers loads config.json's code and the model's code separately).
        if getattr(config, "model_type", None) != DetrSegmentationConfig.model_type:
            raise TypeError(f"config must be a DetrSegmentationConfig, got {type(config).__name__} with model_type "
                            f"{getattr(config, 'model_type', None)!r}")
        super().__init__(config)
        self.detr = DetrForObjectDetection(config)
        backbone_channels = self.detr.model.backbone.channels  # strides 4, 8, 16, 32
        self.bbox_attention = DetrMHAttentionMap(config.d_model, config.encoder_attention_heads)
        self.mask_head = DetrMaskHeadSmallConv(
            config.d_model, config.encoder_attention_heads, backbone_channels[2::-1], config.mask_head_groups
        )
        self.post_init()
        if config.freeze_detector:
            self.freeze_detector()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        # The official initialisation of the head: Kaiming-uniform (a=1) convolutions with zero biases; the
        # attention map's projections are linear layers and get the detector's Xavier initialisation.
        if isinstance(module, DetrMaskHeadSmallConv):
            for conv in module.modules():
                if isinstance(conv, nn.Conv2d):
                    nn.init.kaiming_uniform_(conv.weight, a=1)
                    nn.init.zeros_(conv.bias)
        elif isinstance(module, nn.GroupNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    @classmethod
    def from_detector(cls, detector: DetrForObjectDetection, freeze_detector: bool = True,
                      **config_overrides) -> "DetrForSegmentation":
        """A panoptic model whose detector is a copy of a trained `detector` and whose mask head is new.

        Args:
            detector ([`DetrForObjectDetection`]): the trained detector.
            freeze_detector (`bool`): train the mask head only (the paper's second stage).
            config_overrides: other [`DetrSegmentationConfig`] fields (loss weights, mask costs).
        """
        if not isinstance(detector, DetrForObjectDetection):
            raise TypeError(f"detector must be a DetrForObjectDetection, got {type(detector).__name__}")
        fields = detector.config.to_dict()
        for key in ("model_type", "architectures", "transformers_version", "auto_map"):
            fields.pop(key, None)
        fields.update(config_overrides, freeze_detector=freeze_detector, use_pretrained_backbone=False)
        model = cls(DetrSegmentationConfig(**fields))
        parameter = next(detector.parameters())
        model.to(device=parameter.device, dtype=parameter.dtype)
        model.detr.load_state_dict(detector.state_dict())
        if freeze_detector:
            model.freeze_detector()
        return model

    def freeze_detector(self):
        """Freeze the backbone, the transformer and the class and box heads: only the mask head trains."""
        self.detr.requires_grad_(False)
        self.config.freeze_detector = True

    def forward(
        self,
        pixel_values: torch.FloatTensor,
        pixel_mask: torch.Tensor | None = None,
        labels: list[dict] | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        output_auxiliary_outputs: bool | None = None,
    ) -> DetrSegmentationOutput | tuple:
        r"""
        Args:
            pixel_values, pixel_mask: see [`DetrModel.forward`].
            labels (`list[dict]`, *optional*): the detection labels of [`DetrForObjectDetection.forward`] plus
                `masks` (`(n, h, w)`, 0/1, top-left aligned with the padded input, e.g. at the unpadded resized image
                size as the image processor returns them). Adds the focal and dice losses of the matched masks.
            output_attentions, output_hidden_states (`bool`, *optional*): see [`DetrModel.forward`].
            output_auxiliary_outputs (`bool`, *optional*): see [`DetrForObjectDetection.forward`].
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs, all_logits, all_boxes = self.detr.forward_detection(
            pixel_values, pixel_mask, labels, output_attentions, output_hidden_states, output_backbone_features=True
        )  # all_logits (L, B, Q, C+1), all_boxes (L, B, Q, 4)

        projected = outputs.projected_features  # (B, D, H, W)
        memory = outputs.encoder_last_hidden_state.transpose(1, 2).reshape(projected.shape)  # (B, D, H, W)
        attention_maps = self.bbox_attention(outputs.last_hidden_state, memory, outputs.feature_mask)  # (B, Q, h, H, W)
        stride16, stride8, stride4 = outputs.backbone_features[2::-1]
        pred_masks = self.mask_head(projected, attention_maps, [stride16, stride8, stride4])  # (B, Q, H/4, W/4)

        loss, loss_dict = hungarian_loss(self.config, all_logits, all_boxes, labels, pred_masks)
        auxiliary = auxiliary_outputs_wanted(output_auxiliary_outputs, labels, self.training)
        output = DetrSegmentationOutput(
            loss=loss, loss_dict=loss_dict, pred_masks=pred_masks,
            **self.detr.detection_fields(outputs, all_logits, all_boxes, auxiliary),
        )
        return output if return_dict else output.to_tuple()
