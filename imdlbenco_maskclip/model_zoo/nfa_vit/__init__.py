"""NFA-ViT (BR-Gen, AAAI 2026), registered in IMDL-BenCo's ``MODELS`` on import, with the
checkpoint format of the authors' ``train.py`` in ``model_zoo.checkpoint_formats``."""
from ..checkpoint_formats import ForeignFormat, register
from .nfa_vit import NFA_ViT
from .pretrained import WeightSourceError, authors_checkpoint_filter, is_authors_state_dict

# Their model has no flags but its weight files, which the checkpoint replaces.
register(ForeignFormat(
    model="NFA_ViT", source="a checkpoint of the authors' train.py", recognises=is_authors_state_dict,
    model_flags=lambda state_dict: {}, convert=authors_checkpoint_filter))

__all__ = ["NFA_ViT", "WeightSourceError", "authors_checkpoint_filter", "is_authors_state_dict"]
