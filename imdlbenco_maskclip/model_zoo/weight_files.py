"""Reading a published weight file into a state dict, for every model of the zoo.

Each model's ``pretrained`` module says which files it takes and where each tensor goes; this
one only opens them: OpenAI's TorchScript archives, safetensors, and torch files holding a state
dict bare or under ``model`` / ``state_dict``, on the CPU whatever device saved them.
"""
import zipfile
from typing import Dict

import torch

from ..errors import UserError


class WeightSourceError(UserError):
    """A weight source that cannot be used; the message names the flag and the fix."""


def _unwrap(checkpoint) -> Dict[str, torch.Tensor]:
    for wrapper in ("model", "state_dict"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
    return {key.removeprefix("module."): value for key, value in checkpoint.items()}


def read_weight_file(path: str, flag: str) -> Dict[str, torch.Tensor]:
    """A state dict from a weight file: OpenAI's TorchScript archive, safetensors, or a torch
    file holding a state dict (bare, or under ``model`` / ``state_dict`` as MAE and SAM publish)."""
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path, device="cpu")
        if zipfile.is_zipfile(path) and any(name.endswith("/constants.pkl") for name in zipfile.ZipFile(path).namelist()):
            return dict(torch.jit.load(path, map_location="cpu").state_dict())
        return _unwrap(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as err:  # torch and safetensors raise many types for a file they cannot read
        raise WeightSourceError(f"{flag}: cannot read weight file {path!r} ({type(err).__name__}: "
                                f"{str(err).splitlines()[0][:300]})") from err
