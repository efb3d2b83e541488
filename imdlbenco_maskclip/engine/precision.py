"""``--dtype`` of test, test-robust and predict: the model's forward in reduced precision.

The model runs under ``torch.autocast`` (bf16 or fp16, on CPU or CUDA); every floating
tensor it returns (masks, probabilities, losses) is handed on in fp32, so evaluators,
thresholds and metrics always compute in fp32. Training keeps BenCo's own AMP switch.
"""
import torch
from torch import nn

from ..errors import UserError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Autocast(nn.Module):
    """``model`` with its forward under ``torch.autocast(device_type, dtype)``; outputs in fp32.

    The wrapped model stays ``self.model`` (its weights stay fp32: autocast casts them per
    operation, so parts written to run in fp32 can still do so).
    """

    def __init__(self, model: nn.Module, device_type: str, dtype: torch.dtype):
        super().__init__()
        self.model, self.device_type, self.dtype = model, device_type, dtype

    def forward(self, *args, **kwargs):
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            output = self.model(*args, **kwargs)
        return to_fp32(output)


def to_fp32(value):
    """Floating tensors in nested dicts, lists and tuples -> fp32; anything else as it is."""
    if torch.is_tensor(value):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return {key: to_fp32(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_fp32(item) for item in value)
    return value


def check_supported(dtype_name: str, device: torch.device) -> None:
    """A UserError naming ``--dtype`` where ``device`` cannot run it."""
    if dtype_name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(f"--dtype bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support",
                        hint="use --dtype fp16 on this GPU")
    if device.type not in ("cpu", "cuda") and dtype_name != "fp32":
        raise UserError(f"--dtype {dtype_name}: reduced precision is offered on cpu and cuda devices, "
                        f"not {device.type}", hint="use --dtype fp32")


def for_inference(model: nn.Module, dtype_name: str, device: torch.device) -> nn.Module:
    """``model`` as test, test-robust and predict run it at ``--dtype`` (fp32: unchanged)."""
    check_supported(dtype_name, device)
    if dtype_name == "fp32":
        return model
    return Autocast(model, device.type, DTYPES[dtype_name])
