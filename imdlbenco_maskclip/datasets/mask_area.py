"""The edited area of each sample, measured on its full-size mask before any resizing.

The BR-Gen paper reports results by the share of the image a fake's mask covers (its
Table 7). BenCo resizes or pads the mask before a model sees it, so the share is taken
where the dataset decodes the mask: :class:`MaskAreaMixin` adds ``mask_area`` (a float in
[0, 1]; 0 for a real image) to BenCo's sample dict. A pixel counts as edited when the mean of
its channels is above 127.5, BenCo's own binarisation.

Datasets whose ``_get_image`` is BenCo's (``JsonDataset``, ``ManiDataset``) get it by the
mixin's ``_get_image``; a dataset with its own ``_get_image`` (``OpenSDID``) passes its
result through :meth:`MaskAreaMixin._with_mask_area`.
"""
import numpy as np

from IMDLBenCo.datasets import JsonDataset, ManiDataset


def mask_area(mask):
    """Share of the pixels of an HxW(xC) mask that are edited (mean over channels > 127.5)."""
    mask = np.asarray(mask, dtype=np.float32)
    if mask.ndim == 3:
        mask = mask.mean(axis=2)
    return float((mask > 127.5).mean()) if mask.size else 0.0


class MaskAreaMixin:
    """Put before the dataset class in the bases: ``class X(MaskAreaMixin, JsonDataset)``.

    ``_get_image`` and ``__getitem__`` run in turn in one process (a DataLoader worker holds
    its own copy of the dataset), so the area read by the one is the other's sample.
    """

    _mask_area = float("nan")

    def _with_mask_area(self, raw):
        """BenCo's raw tuple (image, mask, label, ...) unchanged; its mask's area kept."""
        self._mask_area = mask_area(raw[1])
        return raw

    def _get_image(self, index):
        return self._with_mask_area(super()._get_image(index))

    def __getitem__(self, index):
        sample = super().__getitem__(index)
        sample["mask_area"] = self._mask_area
        return sample


class JsonDatasetWithArea(MaskAreaMixin, JsonDataset):
    """BenCo's ``JsonDataset`` whose samples also carry ``mask_area``."""


class ManiDatasetWithArea(MaskAreaMixin, ManiDataset):
    """BenCo's ``ManiDataset`` whose samples also carry ``mask_area``."""


WITH_AREA = {JsonDataset: JsonDatasetWithArea, ManiDataset: ManiDatasetWithArea}
