from .maskclip import MaskCLIP  # noqa: F401
