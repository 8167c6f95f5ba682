"""torchvision ResNet / VGG weights -> lt_jax variables ({'params', 'batch_stats'}), and back.

  python -m lt_jax.models.convert_torchvision IN.pth OUT.msgpack [--arch=resnet152_imagenet]

``IN`` is a torchvision state_dict saved with ``torch.save`` (needs torch; a checkpoint dict with a
``state_dict`` / ``model`` entry and ``module.`` prefixes from DataParallel are accepted), or an
``.npz`` of the same keys (no torch needed: ``np.savez(path, **{k: v.numpy() for k, v in
sd.items()})``). ``OUT`` holds ``flax.serialization.msgpack_serialize`` of the variables; load it
with ``load_pretrained``. The architecture is inferred from the keys unless ``--arch`` names it.

Mapping (``convert_state_dict``, a pure function over a dict of numpy arrays):

- conv ``weight`` (O, I, kh, kw) -> ``kernel`` (kh, kw, I, O); conv ``bias`` -> ``bias``;
- linear ``weight`` (O, I) -> ``kernel`` (I, O); VGG's fc6 input is reordered from torch's (C, 7, 7)
  flattening to our (7, 7, C) one;
- BN ``weight`` / ``bias`` -> params ``scale`` / ``bias``; ``running_mean`` / ``running_var`` ->
  batch_stats ``mean`` / ``var``; ``num_batches_tracked`` is dropped;
- ResNet names: ``conv1``/``bn1`` -> ``stem_conv``/``stem_bn``; ``layerK.i.convJ``/``bnJ`` ->
  ``stageK_blocki/convJ``/``bnJ``; ``layerK.i.downsample.0``/``.1`` -> ``shortcut_conv``/
  ``shortcut_bn``; ``fc`` -> ``classifier``;
- VGG names: ``features.n`` -> ``convK`` (and ``bnK`` for ``vgg11_bn``) in order;
  ``classifier.0`` / ``.3`` / ``.6`` -> ``fc6`` / ``fc7`` / ``classifier``.
"""

import re
import sys

import numpy as np

from lt_jax import files

RESNET_PATTERN = re.compile(r"layer(\d)\.(\d+)\.(conv\d|bn\d|downsample\.[01])\.(\w+)$")
BN_PARAMS = {"weight": "scale", "bias": "bias"}
BN_STATS = {"running_mean": "mean", "running_var": "var"}
POOLED_SIZE = 7  # VGG's adaptive pooling output
VGG_FC = {"classifier.0": "fc6", "classifier.3": "fc7", "classifier.6": "classifier"}


def _conv_kernel(w: np.ndarray) -> np.ndarray:
  return np.transpose(w, (2, 3, 1, 0))


def _put(tree: dict, path: tuple[str, ...], value: np.ndarray) -> None:
  node = tree
  for part in path[:-1]:
    node = node.setdefault(part, {})
  if path[-1] in node:
    raise ValueError(f"two torchvision keys map to {'/'.join(path)}")
  node[path[-1]] = np.asarray(value, np.float32)


def _add_layer(variables: dict, module: str, kind: str, field: str, value: np.ndarray,
               key: str) -> None:
  """One torch tensor of a conv / bn / linear named ``module`` into variables."""
  if field == "num_batches_tracked":
    return
  if kind == "bn":
    if field in BN_PARAMS:
      _put(variables["params"], (*module.split("/"), BN_PARAMS[field]), value)
    elif field in BN_STATS:
      _put(variables["batch_stats"], (*module.split("/"), BN_STATS[field]), value)
    else:
      raise ValueError(f"torchvision key {key!r}: unknown BatchNorm field {field!r}")
    return
  if field == "weight":
    value = _conv_kernel(value) if kind == "conv" else value.T
    _put(variables["params"], (*module.split("/"), "kernel"), value)
  elif field == "bias":
    _put(variables["params"], (*module.split("/"), "bias"), value)
  else:
    raise ValueError(f"torchvision key {key!r}: unknown {kind} field {field!r}")


def infer_arch(state_dict: dict) -> str:
  """``resnet`` or ``vgg`` (with ``_bn`` when its features hold BatchNorm) from the key names."""
  keys = set(state_dict)
  if "conv1.weight" in keys and "fc.weight" in keys:
    return "resnet"
  if any(k.startswith("features.") for k in keys) and "classifier.6.weight" in keys:
    has_bn = any(k.startswith("features.") and k.endswith("running_mean") for k in keys)
    return "vgg_bn" if has_bn else "vgg"
  raise ValueError("the state_dict is neither a torchvision ResNet (conv1.weight, layerK.i.*, "
                   "fc.weight) nor a VGG (features.n.*, classifier.{0,3,6}.*); first keys: "
                   f"{sorted(keys)[:5]}")


def convert_resnet(state_dict: dict) -> dict:
  """Variables of ``resnet_imagenet.ImageNetResNet`` from a torchvision ResNet state_dict."""
  variables = {"params": {}, "batch_stats": {}}
  for key, value in state_dict.items():
    module, _, field = key.rpartition(".")
    if module in ("conv1", "bn1", "fc"):
      name = {"conv1": "stem_conv", "bn1": "stem_bn", "fc": "classifier"}[module]
      kind = {"conv1": "conv", "bn1": "bn", "fc": "linear"}[module]
      _add_layer(variables, name, kind, field, value, key)
      continue
    match = RESNET_PATTERN.match(key)
    if not match:
      raise ValueError(f"torchvision key {key!r} is not part of a ResNet (expected conv1, bn1, "
                       "layerK.i.{convJ,bnJ,downsample.0,downsample.1}.*, fc)")
    stage, block, layer, field = match.groups()
    name = {"downsample.0": "shortcut_conv", "downsample.1": "shortcut_bn"}.get(layer, layer)
    kind = "bn" if name.startswith(("bn", "shortcut_bn")) else "conv"
    _add_layer(variables, f"stage{stage}_block{block}/{name}", kind, field, value, key)
  return variables


def convert_vgg(state_dict: dict, pooled_size: int = POOLED_SIZE) -> dict:
  """Variables of ``vgg.VGG`` from a torchvision ``vgg*`` / ``vgg*_bn`` state_dict."""
  variables = {"params": {}, "batch_stats": {}}
  feature_ids = sorted({int(k.split(".")[1]) for k in state_dict if k.startswith("features.")})
  names, conv = {}, 0
  for i in feature_ids:
    if state_dict[f"features.{i}.weight"].ndim == 4:
      conv += 1
      names[i] = ("conv", f"conv{conv}")
    else:
      names[i] = ("bn", f"bn{conv}")
  for key, value in state_dict.items():
    module, _, field = key.rpartition(".")
    if key.startswith("features."):
      kind, name = names[int(module.split(".")[1])]
    elif module in VGG_FC:
      kind, name = "linear", VGG_FC[module]
      if name == "fc6" and field == "weight":  # torch flattens (C, h, w), we flatten (h, w, C)
        out, size = value.shape[0], value.shape[1] // pooled_size**2
        value = value.reshape(out, size, pooled_size, pooled_size).transpose(0, 2, 3, 1)
        value = value.reshape(out, -1)
    else:
      raise ValueError(f"torchvision key {key!r} is not part of a VGG (expected features.n.*, "
                       "classifier.{0,3,6}.*)")
    _add_layer(variables, name, kind, field, value, key)
  return variables


def convert_state_dict(state_dict: dict, arch: str = "") -> dict:
  """{'params', 'batch_stats'} (nested dicts of float32 numpy) from a torchvision state_dict.

  Args:
    state_dict: torchvision key -> numpy array (``module.`` prefixes are stripped).
    arch: ``resnet``, ``vgg`` or ``vgg_bn`` (also ``resnetN_imagenet``, ``vgg11``, ``vgg11_bn``);
      "" infers it from the keys.
  """
  state_dict = {k.removeprefix("module."): np.asarray(v) for k, v in state_dict.items()}
  arch = arch or infer_arch(state_dict)
  if arch.startswith("resnet"):
    variables = convert_resnet(state_dict)
  elif arch.startswith("vgg"):
    variables = convert_vgg(state_dict)
  else:
    raise ValueError(f"--arch={arch!r} is unknown; expected resnet, vgg or vgg_bn "
                   "(or a model name such as resnet152_imagenet, vgg11)")
  if not variables["batch_stats"]:  # VGG without BatchNorm
    del variables["batch_stats"]
  return variables


def to_torchvision(variables: dict, arch: str) -> dict:
  """The inverse of ``convert_state_dict``: torchvision-named numpy arrays (no num_batches_tracked).

  Used to check the mapping and to hand lt_jax weights to PyTorch users.
  """
  out = {}
  flat = {}

  def walk(tree, prefix, collection):
    for k, v in tree.items():
      path = f"{prefix}/{k}" if prefix else k
      if isinstance(v, dict):
        walk(v, path, collection)
      else:
        flat[(collection, path)] = np.asarray(v)

  walk(variables["params"], "", "params")
  walk(variables.get("batch_stats", {}), "", "batch_stats")
  inverse_bn = {("params", "scale"): "weight", ("params", "bias"): "bias",
                ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}
  vgg_features = {}
  if arch.startswith("vgg"):
    layer = 0
    convs = sorted({int(m.group(1)) for (_, p) in flat for m in [re.match(r"conv(\d+)/", p)] if m})
    has_bn = any(p.startswith("bn") for (_, p) in flat)
    for k in convs:
      vgg_features[f"conv{k}"] = layer
      if has_bn:
        vgg_features[f"bn{k}"] = layer + 1
      layer += 3 if has_bn else 2
      layer += 1 if k in (1, 2, 4, 6, 8) else 0  # the max-pools of configuration A
  for (collection, path), value in flat.items():
    module, field = path.rsplit("/", 1)
    leaf = module.rsplit("/", 1)[-1]
    is_bn = "bn" in leaf
    if arch.startswith("vgg"):
      if module in vgg_features:
        name = f"features.{vgg_features[module]}"
      else:
        name = {v: k for k, v in VGG_FC.items()}[module]
    else:
      name = {"stem_conv": "conv1", "stem_bn": "bn1", "classifier": "fc"}.get(module)
      if name is None:
        stage, block, layer_name = re.match(r"stage(\d)_block(\d+)/(\w+)$", module).groups()
        layer_name = {"shortcut_conv": "downsample.0", "shortcut_bn": "downsample.1"}.get(
            layer_name, layer_name)
        name = f"layer{stage}.{block}.{layer_name}"
    if is_bn:
      out[f"{name}.{inverse_bn[(collection, field)]}"] = value
    elif field == "kernel":
      if value.ndim == 4:
        out[f"{name}.weight"] = np.transpose(value, (3, 2, 0, 1))
      elif module == "fc6":  # our (h, w, C) flattening back to torch's (C, h, w)
        size = POOLED_SIZE
        channels = value.shape[0] // size**2
        out[f"{name}.weight"] = value.reshape(size, size, channels, -1).transpose(3, 2, 0, 1).reshape(
            value.shape[1], -1)
      else:
        out[f"{name}.weight"] = value.T
    else:
      out[f"{name}.bias"] = value
  return out


def load_torch_state_dict(path: str) -> dict:
  """A torchvision state_dict as numpy arrays from a ``.pth`` (needs torch) or ``.npz`` file."""
  if path.endswith(".npz"):
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"reading {path!r} needs torch (pip install torch), or save the state_dict "
                      "as .npz: np.savez(path, **{k: v.numpy() for k, v in sd.items()})") from e
  checkpoint = torch.load(path, map_location="cpu")
  for key in ("state_dict", "model"):
    if isinstance(checkpoint, dict) and key in checkpoint and isinstance(checkpoint[key], dict):
      checkpoint = checkpoint[key]
  return {k: v.detach().cpu().numpy() for k, v in checkpoint.items() if hasattr(v, "detach")}


def save_variables(variables: dict, path: str) -> None:
  """Writes ``flax.serialization.msgpack_serialize(variables)``."""
  from flax import serialization  # pylint: disable=g-import-not-at-top
  files.write_atomic(path, serialization.msgpack_serialize(variables))


def load_pretrained(variables: dict, path: str, skip: tuple[str, ...] = ("classifier",)) -> dict:
  """``variables`` with every entry of the converted checkpoint at ``path`` copied in.

  Top-level modules named in ``skip`` keep their fresh initialisation (the classifier, whose
  class count differs: ImageNet's 1000 against Places-LT's 365). Raises ValueError naming the
  first missing, unexpected or mis-shaped entry.
  """
  from flax import serialization  # pylint: disable=g-import-not-at-top
  with files.open(path, "rb") as f:  # a gs:// URL too
    loaded = serialization.msgpack_restore(f.read())

  def merge(target, source, where):
    if not isinstance(target, dict):
      if tuple(np.shape(source)) != tuple(np.shape(target)):
        raise ValueError(f"{path}: {where} has shape {tuple(np.shape(source))}; the model "
                         f"expects {tuple(np.shape(target))}")
      return np.asarray(source, np.asarray(target).dtype)
    missing = sorted(set(target) - set(source))
    unexpected = sorted(set(source) - set(target))
    if missing or unexpected:
      raise ValueError(f"{path}: under {where or 'the top level'} the checkpoint lacks {missing} "
                       f"and has unexpected {unexpected}; convert the matching architecture")
    return {k: merge(target[k], source[k], f"{where}/{k}".lstrip("/")) for k in target}

  result = {}
  for collection, tree in variables.items():
    source = dict(loaded.get(collection, {}))
    kept = {k: v for k, v in tree.items() if k in skip}
    result[collection] = {
        **merge({k: v for k, v in tree.items() if k not in skip},
                {k: v for k, v in source.items() if k not in skip}, collection), **kept}
  return result


def main(argv: list[str]) -> int:
  args = [a for a in argv if not a.startswith("--arch=")]
  arch = next((a.split("=", 1)[1] for a in argv if a.startswith("--arch=")), "")
  if len(args) != 2:
    print(__doc__.split("\n\n")[0], file=sys.stderr)
    return 2
  variables = convert_state_dict(load_torch_state_dict(args[0]), arch)
  save_variables(variables, args[1])
  count = sum(int(np.prod(v.shape)) for v in _leaves(variables["params"]))
  print(f"wrote {args[1]}: {count:,} parameters")
  return 0


def _leaves(tree):
  for v in tree.values():
    yield from (_leaves(v) if isinstance(v, dict) else [v])


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
