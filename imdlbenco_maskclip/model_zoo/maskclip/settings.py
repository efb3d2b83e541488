"""MaskCLIP settings: one JSON file per setting in ``model_configs/``.

A setting names the CLIP tower, the pixel encoder, their weight sources and the sizes of
the parts between them; ``MaskCLIP(model_setting=NAME)`` builds from it.
"""
import json
from pathlib import Path
from typing import Dict, List

SETTINGS_DIR = Path(__file__).parent / "model_configs"


def list_settings() -> List[str]:
    """Names of the available settings, sorted."""
    return sorted(path.stem for path in SETTINGS_DIR.glob("*.json"))


def load_setting(name: str) -> Dict:
    """The setting ``name`` as a dict; an unknown name raises ValueError listing the known ones."""
    path = SETTINGS_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(
            f"--model_setting: unknown setting {name!r}; available: {', '.join(list_settings())}")
    with open(path, encoding="utf-8") as handle:
        setting = json.load(handle)
    setting["name"] = name
    return setting
