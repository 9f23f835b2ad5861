#!/usr/bin/env bash
# The whole test suite from a fresh Debian machine: system packages, npm ci (builds the addon),
# then every test, including real QEMU guests. Ends with "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."

# gcc builds the C library and its sanitizer tests (libasan, libubsan); flock (util-linux)
# serializes its build between test files.
# libasan8/libubsan1: the addon's sanitizer build. g++-aarch64-linux-gnu and qemu-user-static:
# the arm64 prebuild, built and tried under qemu-user.
packages=(qemu-system-x86 busybox-static xz-utils cpio python3 make g++ gcc util-linux libasan8 libubsan1 g++-aarch64-linux-gnu qemu-user-static)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "Installing ${missing[*]} (apt-get)"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null \
    || { echo "apt-get failed"; echo "0 passed, 1 failed"; exit 1; }
fi

# The lab downloads Debian's kernel package for its guests: apt needs its package lists.
if ! apt-cache depends linux-image-amd64 2>/dev/null | grep -q Depends; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq || true
fi

# Build the addon from this checkout's sources: the install script would otherwise take a
# prebuild left by an earlier run's package tests, and a stale build/Release would win.
npm_config_build_from_source=true npm ci --no-audit --no-fund || { echo "npm ci failed"; echo "0 passed, 1 failed"; exit 1; }

# The addon again under ASan/UBSan (g++ brings libasan and libubsan), for the sanitizer test.
node scripts/build-sanitized.mjs >/dev/null || { echo "sanitized build failed"; echo "0 passed, 1 failed"; exit 1; }

# The prebuilds the package ships (x64, and arm64 cross-compiled), and an arm64 node to try the
# arm64 one under qemu-user (cached in ~/.cache/ivshmem-arm64-node).
npm run prebuild || { echo "prebuild failed"; echo "0 passed, 1 failed"; exit 1; }
bash scripts/arm64-node.sh >/dev/null || { echo "arm64 node failed"; echo "0 passed, 1 failed"; exit 1; }

# The guest kernel and initramfs, once (cached in ~/.cache/ivshmem-lab), before the timed tests.
node dist/cli/main.js lab prepare || { echo "lab prepare failed"; echo "0 passed, 1 failed"; exit 1; }

report=$(mktemp)
npm test -- --reporter=default --reporter=json --outputFile.json="$report"
status=$?
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const failed = r.numFailedTests + (r.testResults || []).filter((f) => f.status === "failed" && f.assertionResults.length === 0).length;
  console.log(`${r.numPassedTests} passed, ${failed} failed` + (r.numPendingTests ? `, ${r.numPendingTests} skipped` : ""));
' "$report" 2>/dev/null || { echo "0 passed, 1 failed"; status=1; }
rm -f "$report"
exit $status
