from .maskclip import MaskCLIP  # noqa: F401
from .nfa_vit import NFA_ViT  # noqa: F401
