"""ViLT's input embeddings: BERT-style text embeddings, ViT-style patch embeddings and modality types.

Text: word + position + token-type embeddings, LayerNorm, dropout (BERT's ``BertEmbeddings``, as the official
code uses it). Image: a ``patch_size`` x ``patch_size`` convolution with the same stride (the patch projection),
an image [CLS] token, and the ViT position table interpolated to each image's **own** patch grid. Each token then
gets its modality-type embedding (0 text, 1 image, 2 the second image of an NLVR2 pair).

Follows dandelin/ViLT (``vision_transformer.py``: ``visual_embed``) in these facts: a patch is valid when its
top-left pixel is (nearest-neighbour downsampling of the pixel mask); the (h, w) valid patch grid of an image
receives the 12 x 12 table resampled bilinearly with ``align_corners=True``, and padding patches receive zero
positions; dropout follows the positions; the modality type is added after that dropout. Changes:

- the interpolation is one batched contraction with per-image interpolation matrices, not a Python loop with one
  ``F.interpolate`` per image, so it needs no host synchronisation;
- patch sampling (``max_image_length`` > 0) happens only in training, always yields exactly that many patches per
  image (fewer only when the padded grid itself is smaller), draws from a ``torch.Generator`` when one is given,
  and keeps the chosen patches in grid order. Padding patches, needed only to fill up small images, are drawn
  without replacement. In eval every patch of the padded grid is kept, in grid order (the official code and
  transformers shuffle them, and sample even in eval when ``max_image_len`` > 0);
- the pixel mask is an input (``pixel_mask``), as in transformers; the official code derives it from pixels whose
  channel sum is exactly zero.
"""

import torch
from torch import nn

from .configuration_vilt import ViltConfig


class ViltTextEmbeddings(nn.Module):
    """BERT's embeddings: word + learned position + token type, then LayerNorm and dropout."""

    def __init__(self, config: ViltConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.text_layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`input_ids` `(B, T)` (or `inputs_embeds` `(B, T, D)`), `token_type_ids` `(B, T)` or None (all 0).
        Returns `(B, T, D)`."""
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)  # (B, T, D)
        length = inputs_embeds.shape[1]
        if token_type_ids is None:  # one broadcast row instead of a gather of zeros
            types = self.token_type_embeddings.weight[0]
        else:
            types = self.token_type_embeddings(token_type_ids)
        x = inputs_embeds + types + self.position_embeddings.weight[:length]  # (B, T, D)
        return self.dropout(self.layer_norm(x))


def interpolation_matrix(lengths: torch.Tensor, out_size: int, table_size: int, dtype: torch.dtype) -> torch.Tensor:
    """Linear interpolation with `align_corners=True` along one axis, as a matrix per image.

    Output index `i < length` samples the table at `i * (table_size - 1) / (length - 1)` (0 when `length == 1`),
    as `F.interpolate(..., mode="bilinear", align_corners=True)` does; rows `i >= length` are zero (padding).

    Args:
        lengths (`torch.LongTensor` of shape `(B,)`): valid patches of each image along this axis.
        out_size (`int`): patches of the padded grid along this axis.
        table_size (`int`): entries of the position table along this axis.

    Returns:
        `torch.Tensor` of shape `(B, out_size, table_size)` in `dtype`.
    """
    index = torch.arange(out_size, device=lengths.device, dtype=torch.float32)  # (out,)
    length = lengths.to(torch.float32)[:, None]  # (B, 1)
    scale = (table_size - 1) / (length - 1).clamp(min=1.0)
    source = index * scale  # (B, out), computed in fp32 like F.interpolate's source index
    low = source.floor().clamp(max=table_size - 1)
    fraction = source - low
    low = low.long()
    high = (low + 1).clamp(max=table_size - 1)
    weights = torch.zeros(lengths.shape[0], out_size, table_size, device=lengths.device, dtype=torch.float32)
    weights.scatter_add_(2, low[..., None], (1 - fraction)[..., None])
    weights.scatter_add_(2, high[..., None], fraction[..., None])
    weights = weights * (index < length)[..., None]  # zero rows beyond each image's grid
    return weights.to(dtype)


class ViltEmbeddings(nn.Module):
    """Text, patch and modality-type embeddings of [`ViltModel`].

    Attributes:
        text_embeddings ([`ViltTextEmbeddings`]): BERT's embeddings.
        patch_projection (`nn.Conv2d`): `patch_size` x `patch_size` kernel and stride, `num_channels` -> `hidden_size`.
        cls_token (`nn.Parameter` of shape `(1, 1, hidden_size)`): the image [CLS] token.
        position_embeddings (`nn.Parameter` of shape `(1, 1 + G*G, hidden_size)`): the image [CLS] position, then a
            `G` x `G` table of patch positions (`G = image_size // patch_size`), resampled per image.
        modality_type_embeddings (`nn.Embedding`): one row per modality type (0 text, 1 image, 2 second image).
    """

    def __init__(self, config: ViltConfig):
        super().__init__()
        grid = config.position_grid_size
        self.patch_size = config.patch_size
        self.grid_size = grid
        self.text_embeddings = ViltTextEmbeddings(config)
        self.patch_projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, 1 + grid * grid, config.hidden_size))
        self.modality_type_embeddings = nn.Embedding(config.modality_type_vocab_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def patch_positions(self, patch_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The position table resampled to each image's valid patch grid, zero on padding patches.

        Args:
            patch_mask (`torch.BoolTensor` of shape `(B, H', W')`): valid patches (bottom/right padding).

        Returns:
            `torch.Tensor` of shape `(B, H' * W', D)`.
        """
        _, height, width = patch_mask.shape
        rows = patch_mask[:, :, 0].sum(1)  # (B,) valid patch rows of each image (counted on its first column)
        columns = patch_mask[:, 0, :].sum(1)  # (B,) valid patch columns (counted on its first row)
        grid = self.grid_size
        table = self.position_embeddings[0, 1:].to(dtype).view(grid, grid, -1)  # (G, G, D)
        row_weights = interpolation_matrix(rows, height, grid, dtype)  # (B, H', G)
        column_weights = interpolation_matrix(columns, width, grid, dtype)  # (B, W', G)
        positions = torch.einsum("bhg,gkd->bhkd", row_weights, table)  # (B, H', G, D)
        positions = torch.einsum("bwk,bhkd->bhwd", column_weights, positions)  # (B, H', W', D)
        return positions.flatten(1, 2)  # (B, H'*W', D)

    def sample_patches(
        self, patch_valid: torch.Tensor, max_image_length: int, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Indices of the patches an image keeps in training: random valid ones first, padding ones to fill up.

        Args:
            patch_valid (`torch.BoolTensor` of shape `(B, N)`): valid patches of the flattened padded grid.
            max_image_length (`int`): patches to keep per image; capped at `N`.
            generator (`torch.Generator`, *optional*): source of randomness; the global RNG of the patches' device
                when `None`.

        Returns:
            `torch.LongTensor` of shape `(B, min(max_image_length, N))`, increasing (grid order) along each row.
        """
        batch_size, num_patches = patch_valid.shape
        keep = min(max_image_length, num_patches)
        device = patch_valid.device
        noise_device = generator.device if generator is not None else device
        noise = torch.rand(batch_size, num_patches, generator=generator, device=noise_device).to(device)
        # Valid patches score in [0, 1), padding ones in [1, 2): the `keep` lowest scores are random valid patches
        # when an image has enough of them, else all its valid patches plus random padding ones.
        scores = noise + (~patch_valid).to(noise.dtype)
        chosen = scores.topk(keep, dim=1, largest=False, sorted=False).indices  # (B, keep)
        return chosen.sort(dim=1).values

    def image_embeddings(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor,
        max_image_length: int = -1,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image [CLS] and patch embeddings with positions (before the modality type).

        Args:
            pixel_values (`torch.FloatTensor` of shape `(B, C, H, W)`): `H` and `W` multiples of `patch_size`.
            pixel_mask (`torch.Tensor` of shape `(B, H, W)`): 1 on real pixels, 0 on padding (bottom/right).
            max_image_length (`int`): > 0 to keep that many patches per image (training); -1 keeps them all.
            generator (`torch.Generator`, *optional*): randomness of the patch sampling.

        Returns:
            `embeddings` `(B, 1 + L, D)`, `token_mask` (`torch.BoolTensor` `(B, 1 + L)`, True on the [CLS] and
            valid patches) and `patch_index` (`torch.LongTensor` `(B, L)`, each token's index in the row-major
            flattened `(H // patch_size, W // patch_size)` grid), with `L = H*W / patch_size**2` or the sample size.
        """
        weight = self.patch_projection.weight
        patches = self.patch_projection(pixel_values.to(weight.dtype))  # (B, D, H', W')
        patch_mask = pixel_mask[:, :: self.patch_size, :: self.patch_size] != 0  # (B, H', W'): top-left pixels
        patches = patches.flatten(2).transpose(1, 2)  # (B, N, D)
        patches = patches + self.patch_positions(patch_mask, patches.dtype)  # (B, N, D)
        patch_valid = patch_mask.flatten(1)  # (B, N)
        batch_size, num_patches, dim = patches.shape
        if max_image_length > 0:
            patch_index = self.sample_patches(patch_valid, max_image_length, generator)  # (B, L)
            patches = patches.gather(1, patch_index[..., None].expand(-1, -1, dim))  # (B, L, D)
            patch_valid = patch_valid.gather(1, patch_index)  # (B, L)
        else:
            patch_index = torch.arange(num_patches, device=patches.device).expand(batch_size, -1)  # (B, N)
        cls = (self.cls_token + self.position_embeddings[:, :1]).to(patches.dtype).expand(batch_size, -1, -1)
        embeddings = self.dropout(torch.cat([cls, patches], dim=1))  # (B, 1 + L, D)
        token_mask = torch.cat([patch_valid.new_ones(batch_size, 1), patch_valid], dim=1)  # (B, 1 + L)
        return embeddings, token_mask, patch_index

    def forward(
        self,
        input_ids: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None,
        max_image_length: int = -1,
        generator: torch.Generator | None = None,
        texts_per_image: int = 1,
        image_token_type_idx: int | torch.Tensor = 1,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Both modalities' tokens with their modality types, in one call, so that wrappers that act around
        `forward` (FSDP2's parameter gathering, Accelerate's device hooks) see every use of these weights.

        Returns the text tokens `(B, T, D)`, the image tokens `(B, 1 + L, D)` (each image repeated for its
        `texts_per_image` texts), the image token mask `(B, 1 + L)` and the kept patches' indices `(B, L)`.
        """
        text = self.add_modality_type(self.text_embeddings(input_ids, token_type_ids, inputs_embeds), 0)
        image, image_token_mask, patch_index = self.image_embeddings(
            pixel_values, pixel_mask, max_image_length, generator
        )  # (B_img, 1 + L, D), (B_img, 1 + L), (B_img, L)
        if texts_per_image > 1:
            image = image.repeat_interleave(texts_per_image, dim=0)  # (B, 1 + L, D)
            image_token_mask = image_token_mask.repeat_interleave(texts_per_image, dim=0)
            patch_index = patch_index.repeat_interleave(texts_per_image, dim=0)
        return text, self.add_modality_type(image, image_token_type_idx), image_token_mask, patch_index

    def add_modality_type(self, embeddings: torch.Tensor, modality: int | torch.Tensor) -> torch.Tensor:
        """Add the modality-type embedding: `modality` an int for all rows, or a `(B,)` LongTensor per row."""
        if isinstance(modality, int):
            return embeddings + self.modality_type_embeddings.weight[modality]
        return embeddings + self.modality_type_embeddings(modality)[:, None, :]
