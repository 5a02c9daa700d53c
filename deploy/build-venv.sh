#!/bin/sh
# Builds oomhero's venv: a wheel of this source tree, installed with its dependencies into a fresh
# venv made from Debian's /usr/bin/python3. The Dockerfile runs this script, and so does
# tests/deploy/test_deploy.py: a broken install step fails CI, not only an image build.
#
#   deploy/build-venv.sh [--system-site-packages] [--require-probe] DEST
#
# --system-site-packages: a venv that sees Debian's python3-bpfcc (bcc, the probe's fallback).
# --require-probe: fail unless the wheel carries the prebuilt CO-RE probe (the wheel's build hook
#   compiles it only when clang is there, and says so otherwise): the image build must not ship
#   without it unnoticed.
# Writes build/ and *.egg-info into the source tree (setuptools builds in place): run it on a copy.
set -eu

venv_flags= require_probe=
while [ $# -gt 1 ]; do
    case "$1" in
        --system-site-packages) venv_flags=$1 ;;
        --require-probe) require_probe=1 ;;
        *) break ;;
    esac
    shift
done
if [ $# -ne 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: $0 [--system-site-packages] [--require-probe] DEST" >&2
    exit 2
fi
dest=$1
src=$(cd "$(dirname "$0")/.." && pwd)
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1

# Debian's python3, not a python.org build: the final images run the venv on Debian's python3,
# and bcc's bindings exist only for it.
/usr/bin/python3 -m venv $venv_flags "$dest"
"$dest/bin/python" -m pip wheel -q --no-deps --wheel-dir "$wheels" "$src"
"$dest/bin/python" -m pip install -q "$wheels"/oomhero-*.whl
# No package installer in the image: nothing at run time needs it.
"$dest/bin/python" -m pip uninstall -q -y pip setuptools

if [ -n "$require_probe" ]; then
    probe=$(echo "$dest"/lib/python3*/site-packages/oomhero/sources/ebpf/memcg_threshold.bpf.o)
    if [ ! -s "$probe" ]; then
        echo "$0: the wheel has no CO-RE probe ($probe): are clang and libbpf-dev installed?" >&2
        exit 1
    fi
fi

# The smoke test: the entry point starts and its imports resolve.
"$dest/bin/oomhero" --version
"$dest/bin/oomhero" --help >/dev/null
