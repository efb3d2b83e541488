"""MaskCLIP (OpenSDI, CVPR 2025), registered in IMDL-BenCo's ``MODELS`` on import."""
from .maskclip import MaskCLIP
from .pretrained import WeightSourceError
from .settings import list_settings, load_setting

__all__ = ["MaskCLIP", "WeightSourceError", "list_settings", "load_setting"]
