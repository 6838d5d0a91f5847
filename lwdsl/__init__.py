"""lwdsl: compression recipes for PyTorch and TensorFlow."""
