#!/usr/bin/env bash
# Fetches the full Fashion-MNIST set (70 000 images, MIT licence, Zalando SE) from Debian's
# dataset-fashion-mnist package into a project folder, without installing anything system-wide,
# and checks the package's sha256. Usage: scripts/fetch-data.sh [DEST] (default data/fashion-mnist)
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-data/fashion-mnist}"
version="0.0~git20200523.55506a9-1"
sha256="39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
if ! (cd "$tmp" && apt-get download -q "dataset-fashion-mnist=$version" 2>&1 >/dev/null | { grep -v unsandboxed >&2 || true; }); then
  echo "error: apt-get could not download dataset-fashion-mnist=$version." >&2
  echo "       Run 'apt-get update' once (as root) and try again." >&2
  exit 1
fi
deb="$(ls "$tmp"/dataset-fashion-mnist_*_all.deb)"
echo "$sha256  $deb" | sha256sum -c --quiet - || {
  echo "error: $deb does not have the expected sha256 $sha256" >&2
  exit 1
}
dpkg -x "$deb" "$tmp/root"
mkdir -p "$dest"
cp "$tmp"/root/usr/share/datasets/fashion-mnist/*-ubyte.gz "$dest/"
cp "$tmp"/root/usr/share/doc/dataset-fashion-mnist/copyright "$dest/COPYRIGHT"
echo "Fashion-MNIST in $dest:"
ls -l "$dest"
