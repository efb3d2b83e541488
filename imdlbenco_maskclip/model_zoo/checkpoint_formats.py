"""Checkpoint formats of other codebases that a model of ours loads (the papers' own files).

A model package registers its format here on import; ``engine.checkpoints`` finds it by
the state dict's key names and rebuilds the model from it. Adding a model's format is one
:func:`register` call in that model's package: the reader does not change.
"""
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple


@dataclass(frozen=True)
class ForeignFormat:
    """How to rebuild a model from another codebase's state dict.

    ``model``: the name in ``MODELS`` it builds. ``source``: what wrote it, for messages.
    ``recognises(state_dict)``: whether a state dict is in this format (its key names).
    ``model_flags(state_dict)``: constructor arguments read from its tensors. ``convert(state_dict)``:
    the same weights under the model's key names. ``fixed_flags``: constructor arguments the
    file decides, so a value the user gives for them is not used. ``hint(exc)``: the fix to
    print when the model cannot be built or loaded from it.
    """

    model: str
    source: str
    recognises: Callable[[Dict], bool]
    model_flags: Callable[[Dict], Dict]
    convert: Callable[[Dict], Dict]
    fixed_flags: Tuple[str, ...] = ()
    hint: Callable[[Exception], str] = lambda exc: "give the file as its codebase wrote it"


FORMATS = []


def register(fmt: ForeignFormat) -> None:
    FORMATS.append(fmt)


def find(state_dict: Dict) -> Optional[ForeignFormat]:
    """The registered format ``state_dict`` is in, or None (ours, or unknown)."""
    return next((fmt for fmt in FORMATS if fmt.recognises(state_dict)), None)
