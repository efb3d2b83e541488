"""--augment: the training augmentation lists of the paper, the authors' train.py and BenCo."""
import types

import numpy as np
import pytest

from imdlbenco_maskclip.engine.data import train_transform


def steps(augment, if_padding=False, image_size=64):
    transform = train_transform(types.SimpleNamespace(augment=augment, if_padding=if_padding, image_size=image_size))
    return None if transform is None else [type(step).__name__ for step in transform.transforms]


def test_authors_list_is_their_train_py():
    assert steps("authors") == ["RandomScale", "HorizontalFlip", "VerticalFlip", "RandomBrightnessContrast",
                                "ImageCompression", "RandomRotate90", "GaussianBlur"]


def test_paper_list_crops_at_random_when_padding():
    assert steps("paper") == ["RandomScale", "HorizontalFlip", "VerticalFlip", "ImageCompression", "GaussianBlur"]
    assert steps("paper", if_padding=True)[-2:] == ["PadIfNeeded", "RandomCrop"]


def test_benco_list_adds_manipulations_and_none_adds_nothing():
    assert {"RandomCopyMove", "RandomInpainting"} <= set(steps("benco"))
    assert steps("none") is None


@pytest.mark.parametrize("augment", ["paper", "authors", "benco"])
def test_each_list_keeps_image_and_mask_aligned(augment):
    transform = train_transform(types.SimpleNamespace(augment=augment, if_padding=True, image_size=64))
    image = np.zeros((80, 80, 3), np.uint8)
    image[20:50, 30:60] = 255
    mask = (image[..., :1] > 0).astype(np.uint8).repeat(3, axis=2) * 255
    for seed in range(5):
        np.random.seed(seed)
        out = transform(image=image, mask=mask)
        assert out["image"].shape[:2] == out["mask"].shape[:2]
        if augment != "benco":  # BenCo's copy-move and inpainting mark new regions in the mask
            bright = out["image"].mean(axis=2) > 127
            assert np.mean(bright == (out["mask"].mean(axis=2) > 127)) > 0.95
