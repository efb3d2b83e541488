"""Building a model of ``MODELS`` from the flags, and which of its flags are weight sources."""
import inspect
import types

from IMDLBenCo.registry import MODELS

from ..errors import UserError

# Per model, its constructor arguments that name pretrained weights to read or download,
# and the value that reads nothing. A model whose weights all come from a checkpoint is
# built with these values. Models not listed (BenCo's Cat_Net, TruFor, SPAN, MVSSNet's
# pretrained_base, the timm backbones ...) may still read their weight files or download
# theirs: those sources are not constructor flags that can be switched off here.
WEIGHT_SOURCES = {
    "MaskCLIP": {"clip_pretrained": "none", "pixel_pretrained": "none"},
    "IML_ViT": {"vit_pretrain_path": None},
    "ObjectFormer": {"init_weight_path": None},
    "PSCC_Net": {"pretrain_path": None},
    "SparseViT": {"pretrained_path": None},
    "Mesorch": {"seg_pretrain_path": None, "conv_pretrain": False},
}


def model_class(name):
    if not MODELS.has(name):
        raise UserError(f"--model {name!r} is not registered in IMDLBenCo MODELS",
                        hint=f"choose one of {sorted(MODELS.module_dict)}")
    return MODELS.get(name)


def build_model(args, model_args):
    """The model from MODELS, given arguments the way BenCo's scripts combine them: main
    flags of the same name (e.g. image_size) first, then the model's own flags."""
    model = model_class(args.model)
    target = model if isinstance(model, (types.FunctionType, types.MethodType)) else model.__init__
    params = inspect.signature(target).parameters
    combined = {k: v for k, v in vars(args).items() if k in params}
    for k, v in vars(model_args).items():
        if k in params and k not in combined:
            combined[k] = v
    try:
        return model(**combined)
    except ValueError as exc:  # constructors refuse flag values with ValueError (MaskCLIP's name the flag)
        raise UserError(f"--model {args.model}: {exc}") from exc


def without_weight_sources(model_name, model_args):
    """-> (model flags with every weight source of ``model_name`` set to read nothing, a line
    saying what that means for this model)."""
    off = {k: v for k, v in WEIGHT_SOURCES.get(model_name, {}).items() if hasattr(model_args, k)}
    flags = types.SimpleNamespace(**{**vars(model_args), **off})
    if model_name not in WEIGHT_SOURCES:
        return flags, (f"--model {model_name} has no weight-source flags known here: it may read or download "
                       f"pretrained weights that the checkpoint's then replace")
    shown = " ".join(f"--{k} {v}" for k, v in off.items())
    return flags, f"all weights from the checkpoint, nothing downloaded ({shown})"
