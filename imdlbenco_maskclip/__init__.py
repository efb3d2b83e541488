"""MaskCLIP and OpenSDID for IMDL-BenCo.

Importing this package registers ``MaskCLIP`` in ``IMDLBenCo.registry.MODELS`` and
``OpenSDID`` in ``IMDLBenCo.registry.DATASETS``. BenCo has no plugin discovery, so any
entry script that builds them by name must import this package first. Heavy
dependencies (open_clip, HF datasets) are imported only when a model or dataset is built.
"""
from . import model_zoo, datasets  # noqa: F401  (registration happens on import)

__version__ = "0.1.0"
