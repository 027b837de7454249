#!/usr/bin/env bash
# The one place that prepares a machine for mdi's tests. Every test script calls it
# first with the parts it needs; it installs only what is missing, and prints nothing
# but one line when all is there.
#
#   scripts/prepare.sh [PART ...]      (default: tests)
#
# Parts:
#   tests   the default test suite (scripts/test.sh): iproute2 and nftables for the
#           network-namespace tests, prometheus (server and promtool) for the metrics
#           tests, cargo-nextest, cargo-deny for the dependency policy,
#           and the Python venv `.venv` with `websockets` (the independent venue server),
#           maturin, pytest, polars, pyarrow and pycapnp (the Python package's tests and
#           benchmark)
#   fuzz    cargo-fuzz (scripts/fuzz.sh)
#   dpdk    DPDK 22.11 from Debian, pkg-config, clang and libclang (feature `dpdk`)
#   aeron   clang, libclang, libbsd, libuuid and CMake >= 3.30 from PyPI (feature `aeron`)
#   rocksdb librocksdb-dev from Debian (feature `rocksdb`: mdbench archive's peer)
#
# Where it cannot install (not root and no password-less sudo, no apt-get), it says
# exactly what is missing and how to get it, once, before any test runs; under CI=true
# that is an error, elsewhere the tests that need the missing part say so loudly.
set -euo pipefail

export PATH="$PATH:/usr/sbin:/sbin"
if ! command -v cargo >/dev/null 2>&1; then
    echo "prepare: cargo not found: install the Rust toolchain (1.95, rustup) first" >&2
    exit 1
fi

parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(tests)

apt_missing=()     # Debian packages to install
cargo_missing=()   # cargo tools to install (crate names)
pip_missing=()     # PyPI requirements to install
venv_missing=()    # PyPI requirements for the repository's venv (.venv)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$ROOT/.venv

need_deb() { # need_deb PACKAGE [COMMAND]: the package, unless its command (or it) is there
    local pkg=$1 cmd=${2:-}
    if [ -n "$cmd" ]; then
        command -v "$cmd" >/dev/null 2>&1 && return
        # Installed, but a login shell without /usr/sbin on PATH does not see it.
        if [ -x "/usr/sbin/$cmd" ]; then export PATH="$PATH:/usr/sbin"; return; fi
    else
        dpkg -s "$pkg" >/dev/null 2>&1 && return
    fi
    apt_missing+=("$pkg")
}
need_cargo() { # need_cargo CRATE SUBCOMMAND
    cargo "$2" --version >/dev/null 2>&1 || cargo_missing+=("$1")
}

need_venv() { # need_venv MODULE REQUIREMENT: importable in the venv, else install it
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import $1" 2>/dev/null && return
    venv_missing+=("$2")
}

cmake_ok() {
    command -v cmake >/dev/null 2>&1 || return 1
    local v
    v=$(cmake --version | head -1 | awk '{print $3}')
    [ "$(printf '%s\n3.30\n' "$v" | sort -V | head -1)" = "3.30" ]
}

for part in "${parts[@]}"; do
    case "$part" in
        tests)
            need_deb iproute2 ip
            need_deb nftables nft
            # a real Prometheus server and promtool for the metrics tests
            need_deb prometheus promtool
            need_cargo cargo-nextest nextest
            need_cargo cargo-deny deny
            need_venv websockets "websockets>=12,<16"
            # the Python package (python/): built with maturin, tested with pytest
            # against polars and pyarrow; pycapnp for its benchmark peer
            need_venv maturin "maturin>=1.7,<2"
            need_venv pytest "pytest>=7"
            need_venv polars "polars>=1.0"
            need_venv pyarrow "pyarrow>=14"
            need_venv capnp "pycapnp>=2"
            ;;
        fuzz)
            need_cargo cargo-fuzz fuzz
            ;;
        dpdk)
            for pkg in dpdk libdpdk-dev pkg-config libclang-dev; do need_deb "$pkg"; done
            need_deb clang clang
            ;;
        aeron)
            for pkg in libclang-dev libbsd-dev uuid-dev python3-pip; do need_deb "$pkg"; done
            need_deb clang clang
            cmake_ok || pip_missing+=("cmake>=3.30")
            ;;
        rocksdb)
            need_deb librocksdb-dev
            ;;
        *)
            echo "prepare.sh: unknown part '$part' (tests, fuzz, dpdk, aeron, rocksdb)" >&2
            exit 2
            ;;
    esac
done

if [ ${#apt_missing[@]} -eq 0 ] && [ ${#cargo_missing[@]} -eq 0 ] && [ ${#pip_missing[@]} -eq 0 ] \
    && [ ${#venv_missing[@]} -eq 0 ]; then
    echo "prepare: ${parts[*]}: everything needed is installed"
    exit 0
fi

# How to become root for apt-get: we are, or sudo without a password.
as_root=()
can_apt=false
if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        can_apt=true
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        can_apt=true
        as_root=(sudo -n)
    fi
fi

cannot=()
if [ ${#apt_missing[@]} -gt 0 ]; then
    if $can_apt; then
        echo "prepare: installing Debian packages: ${apt_missing[*]}"
        "${as_root[@]}" apt-get update -qq
        "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
    else
        cannot+=("Debian packages ${apt_missing[*]}: as root, apt-get install ${apt_missing[*]}")
    fi
fi

for tool in "${cargo_missing[@]}"; do
    # Built from crates.io with the locked dependency versions its authors tested.
    echo "prepare: cargo install --locked $tool (a few minutes, once)"
    cargo install --locked --quiet "$tool" || cannot+=("$tool: cargo install --locked $tool")
done

for req in "${pip_missing[@]}"; do
    echo "prepare: pip install '$req'"
    pip install --quiet --break-system-packages "$req" 2>/dev/null \
        || pip install --quiet "$req" \
        || cannot+=("$req: pip install '$req'")
    hash -r
done

if [ ${#venv_missing[@]} -gt 0 ]; then
    if [ ! -x "$VENV/bin/python" ]; then
        echo "prepare: creating the Python venv $VENV"
        python3 -m venv "$VENV" || cannot+=("the venv: python3 -m venv $VENV (Debian: apt-get install python3-venv)")
    fi
    if [ -x "$VENV/bin/python" ]; then
        echo "prepare: $VENV: pip install ${venv_missing[*]}"
        "$VENV/bin/pip" install --quiet "${venv_missing[@]}" \
            || cannot+=("${venv_missing[*]}: $VENV/bin/pip install ${venv_missing[*]}")
    fi
fi

if [ ${#cannot[@]} -gt 0 ]; then
    {
        echo
        echo "prepare: MISSING — cannot install here (not root, no password-less sudo, or no apt-get):"
        for line in "${cannot[@]}"; do echo "  - $line"; done
        echo "  the tests that need these will fail (CI=true) or say SKIPPED loudly"
        echo
    } >&2
    [ "${CI:-}" = true ] && exit 1
    exit 0
fi
echo "prepare: ${parts[*]}: ready"
