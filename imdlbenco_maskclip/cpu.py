"""The one import line for BenCo's stock scripts (``benco init``) on a machine without CUDA.

``import imdlbenco_maskclip.cpu`` in place of ``from mymodel import MyModel`` registers
MaskCLIP and OpenSDID (as ``import imdlbenco_maskclip`` does) and applies the stand-ins in
:mod:`imdlbenco_maskclip.compat` for what BenCo's scripts take from CUDA: ``set_device`` and
NCCL, DDP's ``device_ids``, ``SmoothedValue``'s CUDA tensor, ``all_reduce_mean`` and
``torch.cuda.synchronize``. Each one defers to BenCo (and torch) for a CUDA ``--device``.
"""
import imdlbenco_maskclip  # noqa: F401  (registers MaskCLIP and OpenSDID)

from .compat import apply_patches

apply_patches()
