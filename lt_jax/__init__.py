"""lt_jax: functional JAX library and CLI for long-tailed image recognition."""

__version__ = "0.1.0"
