#!/usr/bin/env bash
# An arm64 Node.js to run under qemu-user, from Debian's packages, for testing the linux-arm64
# prebuild on an x64 machine. Installs qemu-user-static if missing; downloads Debian's arm64
# nodejs and the libraries it needs with a private apt state (the machine's dpkg architectures
# and package lists are left alone) and unpacks them into a root for `qemu-aarch64-static -L`.
# Cached in ~/.cache/ivshmem-arm64-node; prints the root's path.
set -euo pipefail

cache="${XDG_CACHE_HOME:-$HOME/.cache}/ivshmem-arm64-node"
root="$cache/root"
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"

if ! command -v qemu-aarch64-static >/dev/null; then
  echo "Installing qemu-user-static (apt-get)" >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq qemu-user-static >/dev/null
fi

if [ ! -x "$root/usr/bin/node" ]; then
  apt_dir="$cache/apt"
  mkdir -p "$apt_dir/state/lists/partial" "$apt_dir/cache/archives/partial"
  touch "$apt_dir/state/status"
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  cat > "$apt_dir/sources.list" <<EOF
deb [arch=arm64 signed-by=$keyring] http://deb.debian.org/debian $codename main
deb [arch=arm64 signed-by=$keyring] http://deb.debian.org/debian-security $codename-security main
EOF
  opts=(-o APT::Architecture=arm64 -o APT::Architectures::=arm64
    -o Dir::State="$apt_dir/state" -o Dir::State::status="$apt_dir/state/status"
    -o Dir::Cache="$apt_dir/cache" -o Dir::Etc::SourceList="$apt_dir/sources.list"
    -o Dir::Etc::SourceParts=/nonexistent -o Debug::NoLocking=1 -o APT::Sandbox::User="$(id -un)")
  echo "Downloading Debian's arm64 nodejs (apt-get)" >&2
  apt-get "${opts[@]}" -qq update >&2
  apt-get "${opts[@]}" -qq -y --no-install-recommends install --download-only nodejs >&2
  rm -rf "$root.tmp" && mkdir -p "$root.tmp"
  for deb in "$apt_dir/cache/archives/"*.deb; do dpkg-deb -x "$deb" "$root.tmp"; done
  rm -rf "$root" && mv "$root.tmp" "$root"
  rm -rf "$apt_dir/cache/archives/"*.deb "$apt_dir/state/lists"
fi

echo "$root"
