"""ViLT checkpoints into detrvilt: transformers' five ViLT classes (`from_transformers.py`) and dandelin/ViLT
`.ckpt` files (`from_official.py`)."""
