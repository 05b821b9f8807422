"""Configuration of DETR's panoptic (mask head) variant, Carion et al., 2020, section 4.4 and appendix A.

[`DetrSegmentationConfig`] is a [`DetrConfig`] with the settings of the mask head and its losses. It has its own
`model_type` (``detrvilt_detr_segmentation``) so that the Auto classes can tell a panoptic checkpoint from a
detection one; every detection field keeps its name and meaning, so a trained detector's config converts by
``DetrSegmentationConfig(**detector.config.to_dict())`` (see [`DetrForSegmentation.from_detector`]).
The loss field names are transformers' (`mask_loss_coefficient`, `dice_loss_coefficient`).
"""

from .configuration_detr import DetrConfig


class DetrSegmentationConfig(DetrConfig):
    r"""[`DetrConfig`] plus the mask head's settings (see [`DetrConfig`] for the detection fields).

    Args:
        mask_loss_coefficient (`float`, *optional*, defaults to 1): weight of the sigmoid focal loss on the matched
            masks.
        dice_loss_coefficient (`float`, *optional*, defaults to 1): weight of the dice loss on the matched masks.
        focal_alpha (`float`, *optional*, defaults to 0.25): the focal loss's weight of the positive pixels
            (RetinaNet's alpha); a negative value turns the weighting off.
        focal_gamma (`float`, *optional*, defaults to 2): the focal loss's focusing exponent.
        mask_cost / dice_cost (`float`, *optional*, defaults to 0): weights of a focal and a dice term in the
            Hungarian matching cost of the final decoder layer. The paper matches on classes and boxes only (both 0);
            set them to match on masks too.
        freeze_detector (`bool`, *optional*, defaults to `False`): train the mask head only (the paper's two-stage
            recipe: train DETR for boxes, then freeze it and train the head). The detector's parameters get
            `requires_grad=False` and its class/box losses are still reported.
        mask_head_groups (`int`, *optional*, defaults to 8): GroupNorm groups of the mask head's convolutions (fewer
            when a layer has fewer channels, as transformers does for small models).
    """

    model_type = "detrvilt_detr_segmentation"

    def __init__(
        self,
        mask_loss_coefficient: float = 1.0,
        dice_loss_coefficient: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        mask_cost: float = 0.0,
        dice_cost: float = 0.0,
        freeze_detector: bool = False,
        mask_head_groups: int = 8,
        **kwargs,
    ):
        self.mask_loss_coefficient = mask_loss_coefficient
        self.dice_loss_coefficient = dice_loss_coefficient
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.mask_cost = mask_cost
        self.dice_cost = dice_cost
        self.freeze_detector = freeze_detector
        self.mask_head_groups = mask_head_groups
        super().__init__(**kwargs)
        self.validate_segmentation()

    def validate_segmentation(self):
        """Raise `ValueError` for mask head settings the model cannot be built with (called by `__init__`)."""
        for name in ("mask_loss_coefficient", "dice_loss_coefficient", "focal_gamma", "mask_cost", "dice_cost"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not isinstance(self.focal_alpha, (int, float)) or self.focal_alpha > 1:
            raise ValueError(f"focal_alpha must be <= 1 (negative turns it off), got {self.focal_alpha!r}")
        if not isinstance(self.mask_head_groups, int) or self.mask_head_groups < 1:
            raise ValueError(f"mask_head_groups must be a positive integer, got {self.mask_head_groups!r}")
        widths = mask_head_channels(self.d_model, self.encoder_attention_heads)
        for channels in widths:
            if channels < 1 or channels % min(self.mask_head_groups, channels):
                raise ValueError(
                    f"the mask head's channels {widths} (from d_model={self.d_model} and "
                    f"encoder_attention_heads={self.encoder_attention_heads}) must each be divisible by "
                    f"min(mask_head_groups={self.mask_head_groups}, channels); try d_model a multiple of 128"
                )


def mask_head_channels(d_model: int, num_heads: int) -> list[int]:
    """Output channels of the mask head's five GroupNorm convolutions: `d_model + heads`, `d_model` / 2 ... / 16."""
    return [d_model + num_heads] + [d_model // 2**i for i in range(1, 5)]
