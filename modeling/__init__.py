"""The model code that travels to the Hub with the weights (installed as ``detrvilt.modeling``)."""
