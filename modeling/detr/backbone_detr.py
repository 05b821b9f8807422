"""DETR's convolutional backbone and its 2-D position embeddings.

The backbone is any timm CNN created with ``features_only=True``. Its batch norms are frozen (DETR trains with
small per-GPU batches, where batch statistics are noise; ``torchvision.ops.FrozenBatchNorm2d``'s buffers, folded
into the convolution before each of them; `freeze_batch_norm=False` keeps them trainable for backbones trained
from scratch) and, as in the paper, its stem and first stage are frozen. It runs channels-last, and its fp32 CPU
convolutions call oneDNN directly (`DetrConv2d`). The image mask follows each feature map by nearest-neighbour
downsampling.

The position embeddings follow facebookresearch/detr (``models/position_encoding.py``): the sine version
normalizes each image's cumulative row/column index by its own unpadded extent, so an image's positions do
not depend on how much padding its batch adds.
"""

import math

import timm
import torch
from timm.models import FeatureListNet
from timm.models.resnet import BasicBlock, Bottleneck
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from .configuration_detr import DetrConfig
from .onednn_detr import pointwise_convolution, use_onednn


class DetrFrozenBatchNorm2d(FrozenBatchNorm2d):
    """torchvision's `FrozenBatchNorm2d` (same buffers and state dict) applied in one fused pass, or folded into the
    convolution before it.

    torchvision computes `x * scale + shift` (two passes over the activation and a temporary); `addcmul` does it
    in one, which makes a ResNet-50 forward on the CPU about 7% faster. Folded (`folded=True`, set by
    [`fold_frozen_batch_norms`]), the norm is the identity and the convolution before it applies it instead.
    """

    folded = False

    def scale_and_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-channel affine map this norm applies: `(scale, shift)`, each of shape `(num_features,)`."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.folded:
            return x
        scale, shift = self.scale_and_shift()
        return torch.addcmul(shift[:, None, None], x, scale[:, None, None])


class DetrConv2d(nn.Conv2d):
    """`nn.Conv2d` (same parameters and state dict) whose fp32 CPU forward always runs oneDNN's convolution, and
    which can apply the frozen batch norm that follows it.

    PyTorch sends 1x1 convolutions at batch 1 to its generic GEMM fallback (`_slow_conv2d_forward`), which on an
    AVX-512 AMD EPYC is up to 1.7x slower than oneDNN's kernel for the early ResNet stages. Here 1x1 convolutions
    of channels-last inputs are matrix products (`onednn_detr.pointwise_convolution`, which also makes their
    backward faster) and the others call `torch.mkldnn_convolution`; both have a backward, so training uses them
    too. GPUs, other dtypes, autocast, `torch.compile` and export keep the standard convolution.

    With a folded norm (see [`fold_frozen_batch_norms`]) the forward computes `conv(x, weight * scale) + shift`,
    which equals `norm(conv(x, weight))` and saves the norm's pass over the activation, forward and backward;
    gradients still reach `weight` (through the product with the constant scale).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias, scale = self.weight, self.bias, None
        norm = self.__dict__.get("folded_norm")  # a plain attribute, not a submodule: see fold_frozen_batch_norms
        if norm is not None:
            scale, shift = norm.scale_and_shift()
            bias = shift if bias is None else torch.addcmul(shift, bias, scale)
        if use_onednn(x, weight) and self.padding_mode == "zeros" and not isinstance(self.padding, str):
            pointwise = self.kernel_size == (1, 1) and self.padding == (0, 0) and self.groups == 1
            if pointwise and x.is_contiguous(memory_format=torch.channels_last):
                # Scales inside, keeping the parameter rather than a scaled copy for the backward.
                return pointwise_convolution(x, weight, bias, self.stride, scale)
            weight = weight if scale is None else weight * scale[:, None, None, None]
            return torch.mkldnn_convolution(x, weight, bias, self.padding, self.stride, self.dilation, self.groups)
        weight = weight if scale is None else weight * scale[:, None, None, None]
        return self._conv_forward(x, weight, bias)


def use_onednn_convolutions(module: nn.Module) -> nn.Module:
    """Turn every plain `nn.Conv2d` below `module` into a [`DetrConv2d`] in place (a class change only: parameters,
    names and hooks stay)."""
    for child in module.modules():
        if type(child) is nn.Conv2d:
            child.__class__ = DetrConv2d
    return module


class DetrFrozenBatchNormAct2d(DetrFrozenBatchNorm2d):
    """A frozen timm `BatchNormAct2d` (EfficientNet-style backbones): the frozen norm, then the original's dropout
    and activation (`drop`, `act`: modules without state, so the state dict keeps the norm's names)."""

    def __init__(self, num_features: int, eps: float, drop: nn.Module, act: nn.Module):
        super().__init__(num_features, eps=eps)
        self.drop, self.act = drop, act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


def freeze_batch_norms(module: nn.Module) -> nn.Module:
    """Replace every `nn.BatchNorm2d` below `module` (in place) by a frozen one with the same statistics; timm's
    `BatchNormAct2d` (a `BatchNorm2d` subclass that also applies an activation) keeps its activation."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            if hasattr(child, "act") and hasattr(child, "drop"):  # timm.layers.BatchNormAct2d
                frozen = DetrFrozenBatchNormAct2d(child.num_features, child.eps, child.drop, child.act)
            else:
                frozen = DetrFrozenBatchNorm2d(child.num_features, eps=child.eps)
            if child.weight is not None and child.weight.device.type != "meta":
                frozen.weight.copy_(child.weight.detach())
                frozen.bias.copy_(child.bias.detach())
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batch_norms(child)
    return module


# Modules whose forward applies `bn{k}` right after `conv{k}`: timm's ResNet blocks and its stem (FeatureListNet).
_NAMED_PAIR_PARENTS = (BasicBlock, Bottleneck, FeatureListNet)

# Fold every frozen batch norm into the convolution before it (see `fold_frozen_batch_norms`); a module switch so
# tests and benchmarks can compare both paths. Read when the backbone is built.
FOLD_FROZEN_BATCH_NORMS = True


def fold_frozen_batch_norms(module: nn.Module) -> int:
    """Let each [`DetrConv2d`] below `module` apply the frozen batch norm that directly follows it; returns how many.

    A convolution and a norm are a pair when they are consecutive children of an `nn.Sequential` (which runs its
    children in order) or the consecutive `conv{k}` / `bn{k}` children of a timm ResNet block or feature network
    (whose forward applies `bn{k}` right after `conv{k}`); anything else keeps its separate norm. Parameters,
    buffers and the state dict do not change: the norm keeps its buffers, `folded=True` makes its forward the
    identity and the convolution holds a reference to it, read at every forward (so loading new weights needs no
    re-folding).
    """
    count = 0
    for parent in module.modules():
        children = list(parent.named_children())
        for (conv_name, conv), (norm_name, norm) in zip(children, children[1:], strict=False):
            if not (isinstance(conv, DetrConv2d) and type(norm) is DetrFrozenBatchNorm2d):
                continue
            named_pair = (isinstance(parent, _NAMED_PAIR_PARENTS) and conv_name.startswith("conv")
                          and norm_name == "bn" + conv_name[len("conv"):])
            if not (isinstance(parent, nn.Sequential) or named_pair) or norm.weight.shape[0] != conv.out_channels:
                continue
            # Through __dict__, not nn.Module.__setattr__: as a submodule the norm's buffers would appear twice in
            # the state dict. The norm stays registered (and moved, cast, loaded) where it is.
            conv.__dict__["folded_norm"] = norm
            norm.folded = True
            count += 1
    return count


def _revive_zero_initialized_norms(module: nn.Module) -> None:
    """Set to one the scale of frozen norms that start at exactly zero.

    timm zero-initialises the last norm of every residual block so that a *trainable* block starts as the
    identity. Frozen, that zero would stay forever: the block's branch would output nothing and its
    convolutions would never receive a gradient. Random-weight backbones therefore start those norms at one.
    """
    for norm in module.modules():
        # On the meta device (from_pretrained builds there first) the loaded weights will replace these anyway.
        if isinstance(norm, FrozenBatchNorm2d) and norm.weight.device.type != "meta" and not norm.weight.any():
            norm.weight.fill_(1.0)


class DetrConvBackbone(nn.Module):
    """A timm CNN returning the feature maps of its last four stages, each with its downsampled pixel mask.

    Attributes:
        model: the timm `FeatureListNet` (its parameter names are those of the timm model).
        channels (`list[int]`): channels of the four returned feature maps.
    """

    out_indices = (1, 2, 3, 4)

    def __init__(self, config: DetrConfig):
        super().__init__()
        kwargs = {"output_stride": 16} if config.dilation else {}
        try:
            model = timm.create_model(
                config.backbone,
                pretrained=config.use_pretrained_backbone,
                features_only=True,
                out_indices=self.out_indices,
                in_chans=config.num_channels,
                **kwargs,
            )
        except (RuntimeError, OSError) as error:
            if config.use_pretrained_backbone:  # timm raises OSError when the weights are neither cached nor reachable
                raise RuntimeError(
                    f"could not load timm's pretrained weights for backbone={config.backbone!r} (no local copy and no "
                    "connection?); build with use_pretrained_backbone=False to start from random weights"
                ) from error
            raise
        if config.freeze_batch_norm:
            with torch.no_grad():
                model = freeze_batch_norms(model)
                if not config.use_pretrained_backbone:
                    _revive_zero_initialized_norms(model)
        self.model = model
        # Channels-last lets oneDNN (CPU) and cuDNN (GPU) skip layout conversions around every convolution:
        # about 10% faster on the CPU, and the layout bf16 tensor cores want.
        self.model.to(memory_format=torch.channels_last)
        use_onednn_convolutions(self.model)
        if config.freeze_batch_norm and FOLD_FROZEN_BATCH_NORMS:
            fold_frozen_batch_norms(self.model)
        self.channels = list(model.feature_info.channels())
        if config.freeze_backbone_stem:
            self._freeze_stem_and_first_stage()

    def _freeze_stem_and_first_stage(self):
        # FeatureListNet holds the stem modules, then the stages, as ordered children; the first returned feature
        # map (out index 1) is the output of the first stage. Freeze every child up to and including it.
        first_stage = self.model.feature_info.module_name()[0].replace(".", "_")
        names = [name for name, _ in self.model.named_children()]
        if first_stage not in names:
            raise ValueError(f"cannot find the first stage {first_stage!r} of the backbone among {names}")
        for name in names[: names.index(first_stage) + 1]:
            getattr(self.model, name).requires_grad_(False)

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`): padded images.
            pixel_mask (`torch.Tensor` of shape `(batch_size, height, width)`): 1 on real pixels, 0 on padding.

        Returns:
            `list` of `(feature_map, mask)`, one per stage: `feature_map` of shape `(batch_size, C_i, H_i, W_i)` and
            `mask` (`torch.BoolTensor`) of shape `(batch_size, H_i, W_i)`, True on cells that cover real pixels.
        """
        features = self.model(pixel_values.contiguous(memory_format=torch.channels_last))
        mask = pixel_mask[None].float()  # (1, B, H, W): interpolate treats B as channels
        return [
            (feature_map, nn.functional.interpolate(mask, size=feature_map.shape[-2:]).to(torch.bool)[0])
            for feature_map in features
        ]


class DetrSinePositionEmbedding(nn.Module):
    """Fixed 2-D sine/cosine positions: half of the channels encode the row, half the column.

    Row (column) indices are counted only over real pixels and divided by the image's own number of valid rows
    (columns), then scaled to [0, 2*pi]; padding cells get position 0.
    """

    def __init__(self, embedding_dim: int, temperature: float = 10000.0, scale: float = 2 * math.pi):
        super().__init__()
        self.num_position_features = embedding_dim // 2
        self.temperature = temperature
        self.scale = scale

    def forward(self, mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """
        Args:
            mask (`torch.BoolTensor` of shape `(batch_size, height, width)`): True on valid feature cells.

        Returns:
            `torch.Tensor` of shape `(batch_size, height * width, 2 * num_position_features)`, in `dtype`.
        """
        valid = mask.to(torch.float32)  # positions are always computed in fp32, then cast
        y_embed = valid.cumsum(1)
        x_embed = valid.cumsum(2)
        eps = 1e-6
        y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
        x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale

        dim_t = torch.arange(self.num_position_features, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_position_features)
        pos_x = x_embed[..., None] / dim_t  # (B, H, W, F)
        pos_y = y_embed[..., None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).flatten(1, 2).to(dtype)  # (B, H*W, 2F)


class DetrLearnedPositionEmbedding(nn.Module):
    """Learned absolute positions: a column table and a row table of 50 entries each (at most 50x50 cells)."""

    max_positions = 50

    def __init__(self, embedding_dim: int):
        super().__init__()
        self.row_embeddings = nn.Embedding(self.max_positions, embedding_dim // 2)
        self.column_embeddings = nn.Embedding(self.max_positions, embedding_dim // 2)

    def forward(self, mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Same contract as [`DetrSinePositionEmbedding.forward`]; only the mask's shape is used."""
        batch_size, height, width = mask.shape
        if height > self.max_positions or width > self.max_positions:
            raise ValueError(
                f"learned position embeddings cover at most {self.max_positions}x{self.max_positions} feature cells, "
                f"got a {height}x{width} feature map; use smaller images or position_embedding_type='sine'"
            )
        x_emb = self.column_embeddings(torch.arange(width, device=mask.device))  # (W, F)
        y_emb = self.row_embeddings(torch.arange(height, device=mask.device))  # (H, F)
        pos = torch.cat([x_emb[None].expand(height, -1, -1), y_emb[:, None].expand(-1, width, -1)], dim=-1)
        return pos.flatten(0, 1)[None].expand(batch_size, -1, -1).to(dtype)  # (B, H*W, 2F)


def build_position_embedding(config: DetrConfig) -> nn.Module:
    if config.position_embedding_type == "sine":
        return DetrSinePositionEmbedding(config.d_model)
    return DetrLearnedPositionEmbedding(config.d_model)
