"""What the conversions share: loading a renamed state dict into a freshly built model, strictly."""

import torch


def load_converted_weights(model: torch.nn.Module, state_dict: dict, source: str, allowed_missing=()) -> None:
    """Load `state_dict` into `model`; raise `ValueError` naming the keys if anything is missing or left over.

    Args:
        source: the converted class's name, for the error message.
        allowed_missing: keys the source model does not have and that keep their fresh initialisation.
    """
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = set(missing) - set(allowed_missing)
    if missing or unexpected:
        raise ValueError(
            f"the {source} weights do not map onto detrvilt's model: missing {sorted(missing)[:10]}, "
            f"unexpected {sorted(unexpected)[:10]}"
        )
