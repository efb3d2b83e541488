"""``--config FILE.yaml``: reading it, and BenCo's flags that it or the command line may not use."""
import yaml

from .errors import UserError

# BenCo's flags that have no place here: giving one is an error that says what to do instead.
REMOVED = {"pin_mem": "memory is pinned on CUDA by default; --no_pin_mem turns it off"}


def given_on_command_line(argv):
    """The flag names in ``argv``, without dashes or values."""
    return {a[2:].split("=", 1)[0] for a in argv if a.startswith("--")}


def load_config(path):
    try:
        with open(path) as f:
            config = yaml.safe_load(f) or {}
    except OSError as exc:
        raise UserError(f"--config {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"--config {path}: not valid YAML{where} ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(config, dict):
        raise UserError(f"--config {path}: expected a mapping of flag names to values, got {type(config).__name__}")
    return {str(k).lstrip("-").replace("-", "_"): v for k, v in config.items()}


def check_removed_flags(argv, config, where):
    for name, source in [(name, "") for name in given_on_command_line(argv)] + [(k, f" ({where})") for k in config]:
        if name in REMOVED:
            raise UserError(f"--{name} is not a flag{source}", hint=REMOVED[name])
