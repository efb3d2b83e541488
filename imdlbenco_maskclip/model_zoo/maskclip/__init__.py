"""MaskCLIP (OpenSDI, CVPR 2025), registered in IMDL-BenCo's ``MODELS`` on import, with the
checkpoint format of the authors' ``train.py`` in ``model_zoo.checkpoint_formats``."""
from ..checkpoint_formats import ForeignFormat, register
from .maskclip import (MaskCLIP, authors_checkpoint_filter, authors_model_flags, is_authors_state_dict)
from .pretrained import WeightSourceError
from .settings import list_settings, load_setting


def _authors_hint(exc):
    if "--clip_layers" in str(exc):
        return ("the tapped CLIP layers cannot be read from the tensors: pass the --clip_layers it was trained "
                "with (their ViTL setting taps 2,4,8,12,16,20,23)")
    return "give the file their train.py wrote, as it wrote it"


register(ForeignFormat(
    model="MaskCLIP", source="a checkpoint of the authors' train.py", recognises=is_authors_state_dict,
    model_flags=authors_model_flags, convert=authors_checkpoint_filter,
    fixed_flags=("model_setting", "image_size"), hint=_authors_hint))

__all__ = ["MaskCLIP", "WeightSourceError", "is_authors_state_dict", "list_settings", "load_setting"]
