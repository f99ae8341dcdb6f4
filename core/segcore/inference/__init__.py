"""Inference: the fast path (BN folding, matmul resizes, bf16, int8, compile) and ONNX export."""
