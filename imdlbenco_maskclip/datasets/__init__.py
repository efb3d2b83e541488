"""OpenSDID and BR-Gen for IMDL-BenCo: importing this registers ``OpenSDID`` and ``BRGen`` in
``DATASETS``.

HF ``datasets`` / ``huggingface_hub`` are imported only when a source is opened.
"""
from .brgen import BRGen, BRGenWarning
from .opensdid import BadSampleError, ImageDataError, OpenSDID, OpenSDIDWarning, OPENSDID_SPLITS, SourceError

__all__ = ["OpenSDID", "BRGen", "BadSampleError", "ImageDataError", "OpenSDIDWarning", "BRGenWarning",
           "OPENSDID_SPLITS", "SourceError"]
