"""tvq: Transformer-VQ training in JAX, from one CPU process to many Kubernetes hosts."""

__version__ = "0.1.0"
