"""Pipeline configuration: the attrs schema (`schema`), the cattrs converter with TOML-path messages (`convert`),
loading (`load`) and dumping (`dump`)."""

from segcore.config.convert import make_converter
from segcore.config.dump import dump_pipeline, unstructure
from segcore.config.load import (load_pipeline, pipeline_as_today, read_toml, resolve_bases, structure_pipeline,
                                 structure_table)  # fmt: skip
from segcore.config.schema import *  # noqa: F403
from segcore.config.schema import __all__ as _schema_all

__all__ = [
    *_schema_all, "dump_pipeline", "load_pipeline", "make_converter", "pipeline_as_today", "read_toml", "resolve_bases",
    "structure_pipeline", "structure_table", "unstructure",
]  # fmt: skip
