#!/usr/bin/env bash
# Installs what EfficientLLM needs to build, test and run, from Debian/Ubuntu
# packages only (Debian 12 and Ubuntu 24.04). Idempotent: installs only what
# is missing, and runs apt-get only then. Works as root or through sudo.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libfmt-dev libyaml-cpp-dev nlohmann-json3-dev libcli11-dev
  libopenblas-dev libsentencepiece-dev libssl-dev
  libpcre2-dev libutf8proc-dev   # tokenizer.json (byte-level BPE): pre-tokenizer regex, NFC
  libgtest-dev libbenchmark-dev
  python3-doc   # the built-in corpus: the Python documentation's reST sources (real English prose)
)
# Headless Chromium for the browser test of the HTML report
# (tests/cli/report_dom_test.sh). Debian only: Ubuntu 24.04's `chromium` is a
# transitional package that installs a snap, which needs snapd and does not run
# in containers; there the test skips itself.
os_id=$( (. /etc/os-release 2>/dev/null && echo "${ID:-}") || true)
if [ "$os_id" = "debian" ]; then
  packages+=(chromium)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "setup: need root or sudo to install: ${missing[*]}" >&2
  exit 1
fi

echo "setup: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
