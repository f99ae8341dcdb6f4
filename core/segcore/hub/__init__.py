"""The hub: the zoo manifest, model folders (config.json + model.safetensors + card), the Hugging Face Hub."""

from segcore.hub.folder import *  # noqa: F403
from segcore.hub.folder import __all__  # noqa: F401
