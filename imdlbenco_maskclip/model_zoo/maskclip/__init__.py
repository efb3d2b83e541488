"""MaskCLIP (OpenSDI, CVPR 2025), registered in IMDL-BenCo's ``MODELS`` on import."""
from .maskclip import MaskCLIP, is_authors_state_dict
from .pretrained import WeightSourceError
from .settings import list_settings, load_setting

__all__ = ["MaskCLIP", "WeightSourceError", "is_authors_state_dict", "list_settings", "load_setting"]
