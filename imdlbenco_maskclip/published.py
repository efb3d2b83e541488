"""The papers' published numbers, as data: what ``report --published`` shows beside measured
runs, labelled as published. Nothing here was measured by this project.

OpenSDI: Y. Wang, Z. Huang, X. Hong, "OpenSDI: Spotting Diffusion-Generated Images in the Open
World", CVPR 2025: Table 3 (pixel IoU / F1 on the partial fakes) and Table 4 (image F1 /
accuracy), every model trained on OpenSDID SD1.5. The paper gives no AUC.

BR-Gen: L. Cai, H. Wang et al., "Zooming In on Fakes: A Novel Dataset for Localized AI-Generated
Image Detection with Forgery Amplification Approach", AAAI 2026: Table 2 (released models
tested on BR-Gen, cross-domain), Table 3 (trained and tested on BR-Gen), Table 4 (trained on
one type of edit, tested on the other) and Table 7 (generated images' R@50 by mask area,
models trained on BR-Gen). "-" in the paper is None here.
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


BRGEN_CITATION = ("Cai, Wang et al., Zooming In on Fakes: A Novel Dataset for Localized AI-Generated Image "
                  "Detection with Forgery Amplification Approach, AAAI 2026, Tables 2, 3, 4 and 7")
# Tables 2 and 3, per method, in the tables' column order: real R@50, image F1, AUC, generated
# R@50, pixel IoU, GAN, diffusion, background and stuff R@50.
BRGEN_TABLE_2 = {
    "ManTraNet": (.822, .123, None, .069, .008, .074, .061, .077, .058),
    "MVSS-Net": (.862, .183, .344, .122, .029, .154, .098, .154, .092),
    "PSCC-Net": (.806, .253, .284, .164, .052, .166, .161, .170, .155),
    "TruFor": (.881, .295, .319, .194, .048, .195, .194, .199, .187),
    "SparseViT": (.735, .277, None, .203, .049, .214, .186, .205, .202),
    "LGrad": (.974, .165, .635, .088, None, .101, .057, .093, .085),
    "DIRE": (.821, .401, .481, .254, None, .291, .203, .268, .400),
    "FreqNet": (.767, .360, .472, .231, None, .244, .228, .240, .229),
    "NPR": (.894, .443, .501, .300, None, .323, .290, .318, .289),
    "FatFormer": (.989, .493, .606, .331, None, .358, .321, .349, .310),
}
BRGEN_TABLE_3 = {
    "ManTraNet": (.804, .665, None, .596, .618, .630, .559, .603, .585),
    "MVSS-Net": (.903, .892, .924, .883, .671, .913, .846, .889, .856),
    "PSCC-Net": (.935, .894, .937, .861, .705, .898, .840, .867, .844),
    "TruFor": (.944, .918, .942, .896, .779, .915, .865, .903, .871),
    "SparseViT": (.984, .946, None, .911, .824, .958, .872, .931, .907),
    "LGrad": (.937, .831, .872, .755, None, .801, .732, .775, .738),
    "DIRE": (.939, .823, .825, .742, None, .750, .744, .762, .739),
    "FreqNet": (.825, .699, .702, .631, None, .659, .614, .648, .622),
    "NPR": (.946, .922, .933, .902, None, .938, .884, .921, .893),
    "FatFormer": (.990, .961, .971, .935, None, .955, .913, .949, .915),
    "NFA-ViT": (.992, .972, .979, .953, .907, .972, .941, .961, .948),
}
# Table 7: generated images' R@50 per mask-area bin, < 20% ... < 100%.
BRGEN_TABLE_7 = {
    "TruFor": (.899, .897, .895, .891, .887),
    "SparseViT": (.917, .913, .910, .906, .904),
    "NPR": (.882, .896, .900, .902, .906),
    "FatFormer": (.920, .927, .930, .936, .941),
    "NFA-ViT": (.965, .960, .954, .945, .948),
}
# Table 4, cross-type: per (subset trained on, subset tested on), R@50 of the generated and of
# the real images of the tested subset.
BRGEN_TABLE_4 = {
    "TruFor": {("gan", "diffusion"): (.206, .964), ("diffusion", "gan"): (.405, .962),
               ("background", "stuff"): (.709, .904), ("stuff", "background"): (.673, .932)},
    "SparseViT": {("gan", "diffusion"): (.373, .970), ("diffusion", "gan"): (.605, .959),
                  ("background", "stuff"): (.842, .967), ("stuff", "background"): (.883, .959)},
    "NPR": {("gan", "diffusion"): (.225, .962), ("diffusion", "gan"): (.468, .968),
            ("background", "stuff"): (.743, .932), ("stuff", "background"): (.755, .920)},
    "FatFormer": {("gan", "diffusion"): (.412, .967), ("diffusion", "gan"): (.725, .956),
                  ("background", "stuff"): (.795, .971), ("stuff", "background"): (.847, .955)},
    "NFA-ViT": {("gan", "diffusion"): (.466, .980), ("diffusion", "gan"): (.820, .973),
                ("background", "stuff"): (.841, .982), ("stuff", "background"): (.908, .970)},
}
