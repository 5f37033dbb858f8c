"""Calibration and int8 quantization: observers, range algorithms, the quantizer, the
quantized model format and the golden integer simulator every backend is checked
against (DESIGN section 2)."""
