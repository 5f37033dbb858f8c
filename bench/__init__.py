"""Benchmarks and heavier checks (`make check-full`, `make bench`)."""
