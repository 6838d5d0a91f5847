"""TensorFlow/Keras backend."""
