"""The paper's published numbers, as data: what ``report --published`` shows beside measured
runs, labelled as published. Nothing here was measured by this project.

Source: Y. Wang, Z. Huang, X. Hong, "OpenSDI: Spotting Diffusion-Generated Images in the Open
World", CVPR 2025: Table 3 (pixel IoU / F1 on the partial fakes) and Table 4 (image F1 /
accuracy), every model trained on OpenSDID SD1.5. The paper gives no AUC.
"""
from .datasets.opensdid import OPENSDID_SPLITS

CITATION = ("Wang, Huang, Hong, OpenSDI: Spotting Diffusion-Generated Images in the Open World, CVPR 2025, "
            "Tables 3 and 4")
# Per method, per split in OPENSDID_SPLITS order: (pixel IoU, pixel F1) and (image F1, image accuracy).
TABLE_3 = {
    "CAT-Net": ((.6636, .7480), (.5458, .6232), (.2550, .3074), (.3555, .4207), (.0497, .0658)),
    "TruFor": ((.6342, .7100), (.5467, .6188), (.2655, .3185), (.3229, .3852), (.0760, .0970)),
    "IML-ViT": ((.6651, .7362), (.4479, .5063), (.2149, .2597), (.2363, .2835), (.0611, .0791)),
    "MaskCLIP": ((.6712, .7563), (.5550, .6289), (.3098, .3700), (.4375, .5121), (.1622, .2034)),
}
TABLE_4 = {
    "CAT-Net": ((.9615, .9615), (.7932, .8246), (.6476, .7334), (.6526, .7361), (.2266, .5526)),
    "TruFor": ((.9012, .9773), (.3593, .5562), (.5804, .6641), (.5973, .6751), (.4912, .6162)),
    "IML-ViT": ((.9447, .7573), (.6970, .6119), (.4098, .4995), (.4469, .5125), (.1820, .4362)),
    "MaskCLIP": ((.9264, .9272), (.8871, .8945), (.7802, .8122), (.7307, .7801), (.5649, .6850)),
}


def results():
    """{paper method name: {split: {metric key: value}}}; AUC and counts are absent."""
    return {method: {split: {"pixel_iou": pixel[0], "pixel_f1": pixel[1], "image_f1": image[0],
                             "image_acc": image[1]}
                     for split, pixel, image in zip(OPENSDID_SPLITS, TABLE_3[method], TABLE_4[method])}
            for method in TABLE_3}
