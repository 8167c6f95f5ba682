"""Writes MFM's imbalanced 60/40 train/test split of MIT-67 (MFM Table 4) from a user's copy.

  python -m lt_jax.data.mit67 MIT67_ROOT [--seed=0] [--out=DIR]

``MIT67_ROOT/Images/<class>/*.jpg`` holds all 15,620 images (the paper: "the complete dataset with
imbalanced train/test splits of 60%/40%", MFM line 204; the split itself was never published).
Per class, a seeded permutation puts round(0.6 n_c) images in ``MIT67_train_60.txt`` and the rest
in ``MIT67_test_40.txt`` (path-only lines, the class is the parent folder), written to ``DIR``
(default ``MIT67_ROOT``), which ``configs/{ce,mfm}_mit67.py`` read. Prints a JSON summary.
"""

import json
import sys

from lt_jax.data import split_lists


def main(argv: list[str]) -> int:
  options = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv if a.startswith("--") and "=" in a}
  args = [a for a in argv if not a.startswith("--")]
  unknown = sorted(set(options) - {"--seed", "--out"})
  if len(args) != 1 or unknown or len(options) + len(args) != len(argv):
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2
  summary = split_lists.write_mit67_split(args[0], options.get("--out", ""),
                                          int(options.get("--seed", "0")))
  print(json.dumps(summary))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
