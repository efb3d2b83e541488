"""NFA-ViT (BR-Gen, AAAI 2026), registered in IMDL-BenCo's ``MODELS`` on import."""
from .nfa_vit import NFA_ViT
from .pretrained import WeightSourceError, authors_checkpoint_filter, is_authors_state_dict

__all__ = ["NFA_ViT", "WeightSourceError", "authors_checkpoint_filter", "is_authors_state_dict"]
