"""The hub: the zoo manifest, the one source resolver, model folders (config.json + model.safetensors + card) and
the Hugging Face Hub.

- `segcore.hub.manifest`: the zoo (`zoo`, `ZooEntry`; package data ``zoo.toml``, ``$SEGCORE_ZOO`` overrides it);
- `segcore.hub.sources`: `resolve_source`, what every caller turns a model/weights string into;
- `segcore.hub.folder`: `from_pretrained`, `save_pretrained`, config.json and the plugins a model needs;
- `segcore.hub.card`: model cards (huggingface_hub's ModelCard);
- `segcore.hub.publish`: `push_to_hub` and `push_folder`; `segcore.hub.datasets`: converting and pushing datasets.

Making a model folder from a finished run (it evaluates through the engine) is `segcore.tools.publish.save_run`.
"""

from segcore.hub.card import render_card
from segcore.hub.folder import from_pretrained, load_for_pipeline, load_source, render_zoo_card, save_pretrained
from segcore.hub.manifest import MANIFEST, ZOO_VAR, ZooEntry, zoo, zoo_dir
from segcore.hub.publish import PushResult, push_folder, push_to_hub
from segcore.hub.sources import KINDS, Source, file_sha256, resolve_source

__all__ = [
    "KINDS", "MANIFEST", "ZOO_VAR", "PushResult", "Source", "ZooEntry", "file_sha256", "from_pretrained",
    "load_for_pipeline", "load_source", "push_folder", "push_to_hub", "render_card", "render_zoo_card",
    "resolve_source", "save_pretrained", "zoo", "zoo_dir",
]  # fmt: skip
