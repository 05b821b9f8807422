"""Pictures of a ViLT: word-patch alignment and the text [CLS] attention over the patches (`alignment.py`)."""
