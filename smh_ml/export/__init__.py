"""Shipping a trained classifier: ONNX export with parity, int8 quantization."""
