"""OpenSDID for IMDL-BenCo: importing this registers ``OpenSDID`` in ``DATASETS``.

HF ``datasets`` / ``huggingface_hub`` are imported only when a source is opened.
"""
from .opensdid import BadSampleError, ImageDataError, OpenSDID, OpenSDIDWarning, OPENSDID_SPLITS, SourceError

__all__ = ["OpenSDID", "BadSampleError", "ImageDataError", "OpenSDIDWarning", "OPENSDID_SPLITS", "SourceError"]
