#!/usr/bin/env bash
# What `cargo build -p mdi-benches --features aeron` needs: rusteron builds Aeron's C
# client and media driver from source with CMake >= 3.30 (from PyPI; Debian 12 has 3.25)
# and generates bindings with libclang; the driver links libbsd and libuuid.
set -euo pipefail

need_apt=()
command -v clang >/dev/null 2>&1 || need_apt+=(clang)
for pkg in libclang-dev libbsd-dev uuid-dev python3-pip; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

cmake_ok() {
    command -v cmake >/dev/null 2>&1 || return 1
    local v
    v=$(cmake --version | head -1 | awk '{print $3}')
    [ "$(printf '%s\n3.30\n' "$v" | sort -V | head -1)" = "3.30" ]
}
if ! cmake_ok; then
    pip install --quiet --break-system-packages 'cmake>=3.30' 2>/dev/null \
        || pip install --quiet 'cmake>=3.30'
    hash -r
fi
cmake_ok || { echo "CMake >= 3.30 is still missing after pip install" >&2; exit 1; }
echo "aeron build dependencies ready: $(cmake --version | head -1), $(clang --version | head -1)"
