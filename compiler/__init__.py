"""mfnc: an edge deployment compiler for MobileFaceNet face-verification networks."""

__version__ = "0.1.0"
