"""OpenSDID for IMDL-BenCo: importing this registers ``OpenSDID`` in ``DATASETS``.

HF ``datasets`` / ``huggingface_hub`` are imported only when a source is opened.
"""
from .opensdid import BadSampleError, OpenSDID, OpenSDIDWarning, OPENSDID_SPLITS

__all__ = ["OpenSDID", "BadSampleError", "OpenSDIDWarning", "OPENSDID_SPLITS"]
