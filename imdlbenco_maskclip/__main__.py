"""``python -m imdlbenco_maskclip <command> ...`` and ``torchrun ... -m imdlbenco_maskclip <command> ...``."""
import sys

from .cli import main

sys.exit(main())
