"""caffe-lite: a Caffe-compatible CNN training engine in pure Python."""
__version__ = "0.1.0"
