"""A config file that loads the config its argument names: lt_jax's commands pass
``--config=<this file>:SPEC`` to ml_collections' config flags, which call ``get_config(SPEC)``, so
names, shipped configs and their relative imports (``lt_jax.cli.load_config``) work there too."""

from lt_jax import cli


def get_config(spec: str):
  return cli.loaded_config(spec)
