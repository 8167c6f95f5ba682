"""Networks by name: CIFAR ResNet-{6n+2}, CIFAR ResNet-18 / 34, MFM's LeNet; init and size helpers.

Every model is a flax.linen Module called as ``model.apply(variables, x, train=..., modulation=None,
return_features=False)`` on NHWC float images, and has ``modulation_points() -> {point: channels}``.
Models without BatchNorm (LeNet) have no ``batch_stats`` collection: read it as
``variables.get('batch_stats', {})`` and pass ``mutable=['batch_stats']`` only when it is non-empty.
"""

import re
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lt_jax import files
from lt_jax import parallel
from lt_jax.models import bbn
from lt_jax.models import layers
from lt_jax.models import lenet
from lt_jax.models import resnet_cifar
from lt_jax.models import resnet_imagenet
from lt_jax.models import vgg

MODEL_NAMES = ("resnet{6n+2} (resnet8, resnet20, resnet32, resnet56, ...)", "resnet18", "resnet34", "lenet",
               "bbn_resnet{6n+2} (BBN's bilateral-branch ResNet, e.g. bbn_resnet32)")
# 224-pixel backbones (resnet_imagenet, vgg): ImageNet ResNets and VGG-11, torchvision layout.
IMAGENET_MODEL_NAMES = tuple(f"resnet{d}_imagenet" for d in resnet_imagenet.RESNET_DEPTHS) + (
    "vgg11", "vgg11_bn", "vgg11_gap")
# Modules of a converted torchvision checkpoint that a model does not have (dropped at load), and
# the torchvision constructor whose ImageNet weights a model starts from (model.pretrained).
PRETRAINED_UNUSED = {"vgg11_gap": ("fc6", "fc7")}
TORCHVISION_NAMES = {"vgg11_gap": "vgg11"}  # otherwise the name less "_imagenet" (resnet152, vgg11_bn)


def validate_pretrained(model_config) -> None:
  """``model.pretrained=True`` (a row that fine-tunes ImageNet weights) needs ``model.init_checkpoint``
  naming an existing converted file; ValueError / FileNotFoundError saying how to make it."""
  pretrained, path = model_config.get("pretrained", False), model_config.get("init_checkpoint", "")
  if path and not files.exists(path):
    raise FileNotFoundError(f"model.init_checkpoint={path!r} does not exist; expected converted "
                            "torchvision weights (lt_jax.models.convert_torchvision)")
  if pretrained and not path:
    name = model_config.name
    torchvision = TORCHVISION_NAMES.get(name, name.removesuffix("_imagenet"))
    raise ValueError(
        f"model.pretrained=True: this config fine-tunes ImageNet-pretrained {name} weights, but "
        f"model.init_checkpoint is empty. Make them once with the torchvision converter: save "
        f"torchvision.models.{torchvision}(weights='DEFAULT').state_dict() with torch.save (or "
        f"np.savez), run `python -m lt_jax.models.convert_torchvision {torchvision}.pth "
        f"{torchvision}.msgpack --arch={name}`, then pass "
        f"--config.model.init_checkpoint={torchvision}.msgpack (or --config.model.pretrained="
        "False to train from scratch, which is not the paper's row)")
DEFAULT_WIDTHS = {"resnet_cifar": 16, "resnet18": 64, "resnet34": 64, "lenet": lenet.BASE_WIDTH}


def get_model(model_config, num_classes: int, dtype: Optional[Any] = None) -> nn.Module:
  """The network named ``model_config.name``, with ``num_classes`` outputs.

  Args:
    model_config: ``config.model``: ``name``, ``width`` (> 0 overrides the base width, 0 keeps the
      model's own) and ``classifier`` (``linear`` or ``cosine``); for ``bbn_resnet*`` also
      ``bbn_branch_blocks`` and ``bbn_mix_scale`` (``lt_jax.models.bbn``); ``sync_batch_norm``
      (BatchNorm statistics over the global batch of the ``data`` mesh axis, not each device's
      share; the model must then run under ``lt_jax.parallel``'s ``shard_map`` in training).
    num_classes: C.
    dtype: compute dtype (None: that of the inputs and parameters, float32 normally).
  """
  name, width = model_config.name, model_config.get("width", 0)
  classifier = model_config.get("classifier", "linear")
  if classifier not in layers.CLASSIFIERS:
    raise ValueError(f"model.classifier={classifier!r} is unknown; expected one of "
                     f"{list(layers.CLASSIFIERS)}")
  if not isinstance(width, (int, np.integer)) or width < 0:
    raise ValueError(f"model.width={width!r} must be an integer >= 0 (0 = the model's own width)")
  if num_classes < 1:
    raise ValueError(f"num_classes={num_classes} must be >= 1")
  kwargs = dict(num_classes=num_classes, classifier=classifier, dtype=dtype)
  if name == "lenet":  # no BatchNorm
    return lenet.LeNet(width=width or DEFAULT_WIDTHS["lenet"], **kwargs)
  sync = model_config.get("sync_batch_norm", False)
  if not isinstance(sync, bool):
    raise ValueError(f"model.sync_batch_norm={sync!r} must be True or False")
  kwargs["bn_axis"] = parallel.AXIS if sync else None
  if name in ("resnet18", "resnet34"):
    build = resnet_cifar.resnet18 if name == "resnet18" else resnet_cifar.resnet34
    return build(width=width or DEFAULT_WIDTHS[name], **kwargs)
  imagenet = re.fullmatch(r"resnet(\d+)_imagenet", name)
  if imagenet and int(imagenet.group(1)) in resnet_imagenet.RESNET_DEPTHS:
    return resnet_imagenet.imagenet_resnet(int(imagenet.group(1)), width=width or 64, **kwargs)
  if name in ("vgg11", "vgg11_bn", "vgg11_gap"):
    return vgg.vgg11(width=width or 64, batch_norm=name == "vgg11_bn",
                     head="gap" if name == "vgg11_gap" else "fc", **kwargs)
  match = re.fullmatch(r"bbn_resnet(\d+)", name)
  if match:
    return bbn.bbn_resnet(int(match.group(1)), width=width or DEFAULT_WIDTHS["resnet_cifar"],
                          branch_blocks=model_config.get("bbn_branch_blocks", 1),
                          mix_scale=model_config.get("bbn_mix_scale", 2.0), **kwargs)
  match = re.fullmatch(r"resnet(\d+)", name)
  if match:
    return resnet_cifar.cifar_resnet(int(match.group(1)), width=width or DEFAULT_WIDTHS["resnet_cifar"],
                                     **kwargs)
  raise ValueError(f"model.name={name!r} is unknown; expected one of {list(MODEL_NAMES + IMAGENET_MODEL_NAMES)}")


def _init(model: nn.Module, rng: jax.Array, input_shape: tuple[int, ...]):
  return model.init(rng, jnp.zeros(input_shape, jnp.float32), train=False)


_jitted_init = jax.jit(_init, static_argnums=(0, 2))
# Init runs once per run: on the CPU, XLA's backend optimisations cost ~10x its compile time
# (ResNet-32: 5 s -> 0.5 s) and change the values by at most an ulp.
_jitted_init_fast_compile = jax.jit(_init, static_argnums=(0, 2),
                                    compiler_options={"xla_backend_optimization_level": 0})


def init_variables(model: nn.Module, rng: jax.Array, input_shape) -> dict:
  """{'params': ..., 'batch_stats': ... (BatchNorm models only)} from a train=False dummy forward.

  ``input_shape`` is (N, H, W, channels); N = 1 is enough.
  """
  init = _jitted_init_fast_compile if jax.default_backend() == "cpu" else _jitted_init
  return dict(init(model, rng, tuple(input_shape)))


def count_params(params) -> int:
  """Number of scalars in a parameter pytree (arrays or ``jax.eval_shape`` structs)."""
  return int(sum(np.prod(leaf.shape, dtype=np.int64) for leaf in jax.tree.leaves(params)))
