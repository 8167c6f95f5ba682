"""lt_jax: functional JAX library and CLI for long-tailed image recognition."""
