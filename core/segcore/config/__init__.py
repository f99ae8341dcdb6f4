"""Pipeline configuration: the attrs schema, the cattrs converter with TOML-path messages, loading and dumping."""

from segcore.config.schema import *  # noqa: F403
from segcore.config.schema import __all__, read_toml, structure_table  # noqa: F401
