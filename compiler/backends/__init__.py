"""Backends: from the quantized IR to code for a target (c today; tvm and rknn to come)."""
