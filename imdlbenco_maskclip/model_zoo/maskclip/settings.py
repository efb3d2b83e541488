"""MaskCLIP settings: the architecture, one JSON file per setting in ``model_configs/``.

A setting names the CLIP tower (an open_clip model name, or an open_clip config written out),
says whether it trains (``train_clip``: only for a CLIP without pretrained weights; the
paper's settings keep it frozen), and sizes the pixel encoder and the parts between the two
towers. A file may start from
another with ``"base": NAME`` and replace some of its top-level keys. Weight sources are not
part of a setting: they are data in ``pretrained.py``.
"""
import json
from pathlib import Path
from typing import Dict, List

SETTINGS_DIR = Path(__file__).parent / "model_configs"
DEFAULT_SETTING = "vitl14_mae"


def list_settings() -> List[str]:
    """Names of the available settings, sorted."""
    return sorted(path.stem for path in SETTINGS_DIR.glob("*.json"))


def load_setting(name: str) -> Dict:
    """The setting ``name`` with its base applied; an unknown name raises ValueError listing the known ones."""
    path = SETTINGS_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"--model_setting: unknown setting {name!r}; available: {', '.join(list_settings())}")
    with open(path, encoding="utf-8") as handle:
        overrides = json.load(handle)
    base = overrides.pop("base", None)
    setting = load_setting(base) if base else {}
    setting.update(overrides)
    setting["name"] = name
    return setting
