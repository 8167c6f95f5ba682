"""The shipped configs, one file per paper row; installed as the package ``lt_jax_configs``
(``--config=NAME`` finds them from any directory, see ``lt_jax.cli``)."""
