"""Export a trained run as a self-contained classifier that loads without the workdir.

  python -m lt_jax.export --workdir=DIR --output=OUT [--epoch=N] [--replica=R] [--torchvision]

``OUT/`` holds ``model.json`` (the model's config, class names, normalisation mean / std, input
size H x W x C, how images are resized, the lt_jax version and where it came from) and
``variables.msgpack`` (``flax.serialization.msgpack_serialize`` of {'params', 'batch_stats'}: the
network w and its BatchNorm statistics). What is exported is what inference uses: the plain
network (MFM's modulator M_phi is absent at test time; a two-phase run's phase-II head is folded
into its classifier; BBN's network mixes both branches as at evaluation). ``--torchvision`` also
writes ``torchvision.npz``, the torchvision state dict of an ImageNet ResNet / VGG
(``convert_torchvision.to_torchvision``; ``torch.nn.Module.load_state_dict({k:
torch.from_numpy(v) ...})``).

In Python::

  model = lt_jax.export.load("OUT")
  logits = model.logits(images)  # uint8 (N, H, W, C), prepared as model.prepare(path) does
"""

import dataclasses
import functools
import io
import os
import sys

from absl import app
from absl import flags
import ml_collections
import numpy as np

import lt_jax
from lt_jax import cli as cli_lib
from lt_jax import files

SPEC_FILE = "model.json"
VARIABLES_FILE = "variables.msgpack"
TORCHVISION_FILE = "torchvision.npz"
FORMAT = 1  # the artifact's layout version


@dataclasses.dataclass
class Model:
  """A trained classifier: ``spec`` (what ``model.json`` holds) and ``variables`` (numpy
  {'params', 'batch_stats'})."""
  spec: dict
  variables: dict
  _compiled: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

  @property
  def class_names(self) -> tuple[str, ...]:
    return tuple(self.spec["class_names"])

  @property
  def input_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of the images ``logits`` takes."""
    return tuple(self.spec["input_shape"])

  @functools.cached_property
  def network(self):
    """The flax module (``models.get_model`` of the exported model config)."""
    from lt_jax import models  # pylint: disable=g-import-not-at-top
    from lt_jax import train  # pylint: disable=g-import-not-at-top
    config = ml_collections.ConfigDict({"model": self.spec["model"]})
    return models.get_model(config.model, len(self.class_names), dtype=train.compute_dtype(config))

  def _predict_fn(self, batch_size: int):
    """jit(programs.predict) for chunks of ``batch_size``, compiled once per size."""
    import jax  # pylint: disable=g-import-not-at-top
    from lt_jax import programs  # pylint: disable=g-import-not-at-top
    if batch_size not in self._compiled:
      self._compiled[batch_size] = jax.jit(functools.partial(
          programs.predict, model=self.network, mean=np.asarray(self.spec["mean"], np.float32),
          std=np.asarray(self.spec["std"], np.float32), batch_size=batch_size))
    return self._compiled[batch_size]

  def device_logits(self, images, batch_size: int = 256):
    """``logits`` left on the device (asynchronous: fetch with ``np.asarray``)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] != self.input_shape:
      raise ValueError(f"images are {images.dtype} {images.shape}; expected uint8 (N, "
                       f"{', '.join(map(str, self.input_shape))}) as Model.prepare makes them")
    fn = self._predict_fn(max(1, min(batch_size, len(images))))
    return fn(self.variables["params"], self.variables.get("batch_stats", {}), images)

  def logits(self, images, batch_size: int = 256) -> np.ndarray:
    """Eval-mode logits z (N, C) of uint8 images (N, H, W, C), normalised with the run's mean /
    std on the device, in chunks of ``batch_size``."""
    return np.asarray(self.device_logits(images, batch_size))

  def prepare(self, path: str) -> np.ndarray:
    """The uint8 (H, W, C) image at ``path`` as the run's evaluation pipeline prepares test images
    (``spec['preprocess']``); ValueError naming ``path`` when it cannot be read."""
    from PIL import Image  # pylint: disable=g-import-not-at-top
    from lt_jax.data import folder_builder  # pylint: disable=g-import-not-at-top
    from lt_jax.data import grain_loader  # pylint: disable=g-import-not-at-top
    height, width, channels = self.input_shape
    try:
      with open(path, "rb") as f:
        data = f.read()
    except OSError as e:
      raise ValueError(f"cannot read image {path}: {e.strerror or e}") from None
    preprocess = self.spec["preprocess"]
    if preprocess["resize"] == "center_crop":  # the streamed eval: shorter side S / ratio, crop S
      ratio = preprocess["crop_ratio"]
      try:
        return grain_loader.decode_crop_resize(
            data, lambda w, h: grain_loader.center_crop_box(w, h, ratio), height)
      except ValueError as e:
        raise ValueError(f"cannot decode image {path}: {e}") from None
    image = folder_builder.open_image(data, path)  # in-memory sources: the whole image, squashed
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (width, height):
      image = image.resize((width, height), Image.BILINEAR)
    return np.asarray(image, np.uint8).reshape(height, width, channels)


def from_workdir(workdir: str, epoch: int | None = None, replica: int = 0) -> Model:
  """The network of ``workdir``'s checkpoint (``epoch``, default the latest; replica ``replica``)."""
  from lt_jax import evaluate  # pylint: disable=g-import-not-at-top
  return from_loaded(evaluate.load(workdir, epoch), replica)


def from_loaded(loaded, replica: int = 0) -> Model:
  """The ``Model`` of replica ``replica`` of an ``evaluate.Loaded`` run."""
  import jax  # pylint: disable=g-import-not-at-top
  from lt_jax import report  # pylint: disable=g-import-not-at-top
  run, workdir = loaded.run, loaded.workdir
  replicas = run.config.replicas
  if not 0 <= replica < replicas:
    raise ValueError(f"--replica={replica}: {workdir} has replicas 0..{replicas - 1}")
  state = jax.device_get(report.replica(run.state, replica, replicas))
  if run.streamed is not None:
    size = run.config.dataset.image_size or 224
    input_shape = (size, size, 3)
    preprocess = {"resize": "center_crop", "crop_ratio": float(run.config.loader.eval_crop_ratio)}
  else:
    input_shape = tuple(int(d) for d in run.data.train.images.shape[1:])
    preprocess = {"resize": "squash"}
  spec = {
      "format": FORMAT,
      "model": run.config.model.to_dict(),
      "class_names": list(run.class_names),
      "mean": [float(m) for m in run.mean],
      "std": [float(s) for s in run.std],
      "input_shape": list(input_shape),
      "preprocess": preprocess,
      "lt_jax_version": lt_jax.__version__,
      "source": {"workdir": os.path.abspath(workdir), "epoch": loaded.epoch, "replica": replica,
                 "method": loaded.config.method, "dataset": run.config.dataset.name,
                 "train_counts": [int(n) for n in run.ctx.class_counts]},
  }
  variables = {"params": state.params, "batch_stats": state.batch_stats or {}}
  return Model(spec, jax.tree.map(np.asarray, variables))


def torchvision_state_dict(model: Model) -> dict:
  """{torchvision name: numpy array} of an exported ImageNet ResNet / VGG (``to_torchvision``)."""
  from lt_jax import models  # pylint: disable=g-import-not-at-top
  from lt_jax.models import convert_torchvision  # pylint: disable=g-import-not-at-top
  name = model.spec["model"]["name"]
  if name not in models.IMAGENET_MODEL_NAMES or model.spec["model"].get("classifier") != "linear":
    raise ValueError(f"--torchvision: model.name={name!r} (classifier "
                     f"{model.spec['model'].get('classifier')!r}) has no torchvision counterpart; "
                     f"expected a linear-classifier {list(models.IMAGENET_MODEL_NAMES)}")
  return convert_torchvision.to_torchvision(model.variables, "vgg" if name.startswith("vgg") else "resnet")


def save(model: Model, path: str, torchvision: bool = False) -> str:
  """Writes ``path/model.json`` and ``path/variables.msgpack`` (and ``torchvision.npz``); returns path."""
  from flax import serialization  # pylint: disable=g-import-not-at-top
  files.check_writable_dir(path, "--output")
  if torchvision:
    buffer = io.BytesIO()
    np.savez(buffer, **torchvision_state_dict(model))
    files.write_atomic(os.path.join(path, TORCHVISION_FILE), buffer.getvalue())
  files.write_atomic(os.path.join(path, VARIABLES_FILE),
                     serialization.msgpack_serialize(model.variables))
  files.write_json_atomic(os.path.join(path, SPEC_FILE), model.spec)  # last: marks it complete
  return path


def load(path: str) -> Model:
  """The ``Model`` exported to ``path`` (a folder holding model.json and variables.msgpack)."""
  from flax import serialization  # pylint: disable=g-import-not-at-top
  spec = files.read_json(os.path.join(path, SPEC_FILE), "an lt_jax export (lt_jax.export)")
  if spec.get("format") != FORMAT:
    raise ValueError(f"{path}/{SPEC_FILE} has format {spec.get('format')!r}; this lt_jax reads "
                     f"format {FORMAT}")
  variables_path = os.path.join(path, VARIABLES_FILE)
  if not os.path.exists(variables_path):
    raise FileNotFoundError(f"{variables_path} is missing; expected the exported variables")
  with open(variables_path, "rb") as f:
    variables = serialization.msgpack_restore(f.read())
  variables.setdefault("batch_stats", {})
  return Model(spec, variables)


# --- command line ----------------------------------------------------------------------------------

def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from lt_jax import evaluate  # pylint: disable=g-import-not-at-top
  evaluate.quiet_orbax()
  f = flags.FLAGS
  try:
    model = from_workdir(f.workdir, f.epoch, f.replica)
    save(model, f.output, f.torchvision)
  except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
    sys.exit(f"error: {e}")
  from lt_jax import models  # pylint: disable=g-import-not-at-top
  count = models.count_params(model.variables["params"])
  print(f"wrote {f.output}: {model.spec['model']['name']}, {count:,} parameters, "
        f"{len(model.class_names)} classes, input {'x'.join(map(str, model.input_shape))}, "
        f"epoch {model.spec['source']['epoch']}" + (" (+ torchvision.npz)" if f.torchvision else ""))


def cli():
  """``lt-jax-export``: the console-script entry point."""
  flags.DEFINE_string("workdir", None, "A trained run's directory.")
  flags.DEFINE_string("output", None, "Folder to write model.json and variables.msgpack to.")
  flags.DEFINE_integer("epoch", None, "Checkpoint to export (default: the latest).")
  flags.DEFINE_integer("replica", 0, "Which replica of a replicas=R run.")
  flags.DEFINE_bool("torchvision", False, "Also write torchvision.npz (ImageNet ResNets / VGG).")
  flags.mark_flags_as_required(["workdir", "output"])
  cli_lib.run_command(main, __doc__)


if __name__ == "__main__":
  cli()
