#!/usr/bin/env bash
# Builds every tests/bpf/*.c into tests/bpf/*.o with clang (-O2 -g -target bpf,
# freestanding: no C library headers; include/ and the driver's ../../include).
# Reproducible from any checkout path: the source directory is mapped to "."
# in the debug information.
#
# Every program is also compiled (syntax only) with the driver's
# ebpf_ntos_hooks.h included before anything else, i.e. before the stand-in
# for eBPF for Windows' bpf_helpers.h / ebpf_structs.h (include/), so that the
# header is proven to work in either include order.
#
#   tests/bpf/build.sh           rebuild the committed objects
#   tests/bpf/build.sh --check   rebuild into a temporary directory and fail
#                                if any committed object differs
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
clang="${CLANG:-clang}"
mode="${1:-build}"

case "$mode" in
build) out="$here" ;;
--check) out="$(mktemp -d)"; trap 'rm -rf "$out"' EXIT ;;
*) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

cd "$here"
for src in *.c; do
    obj="${src%.c}.o"
    "$clang" -O2 -g -target bpf -ffreestanding -Wall -Werror \
        -fdebug-prefix-map="$here"=. -Iinclude -I../../include \
        -c "$src" -o "$out/$obj"
    "$clang" -O2 -target bpf -ffreestanding -Wall -Werror \
        -Iinclude -I../../include -include ebpf_ntos_hooks.h \
        -fsyntax-only "$src" ||
        { echo "tests/bpf/$src does not compile with ebpf_ntos_hooks.h included first" >&2; exit 1; }
done

if [ "$mode" = --check ]; then
    status=0
    for src in *.c; do
        obj="${src%.c}.o"
        if [ ! -f "$obj" ]; then
            echo "tests/bpf/$obj is missing: run tests/bpf/build.sh and commit it" >&2
            status=1
        elif ! cmp -s "$obj" "$out/$obj"; then
            echo "tests/bpf/$obj differs from a rebuild of $src with $("$clang" --version | head -1): run tests/bpf/build.sh and commit it" >&2
            status=1
        fi
    done
    for obj in *.o; do
        [ -f "${obj%.o}.c" ] || { echo "tests/bpf/$obj has no source ${obj%.o}.c" >&2; status=1; }
    done
    [ $status -eq 0 ] && echo "tests/bpf: every object matches its source"
    exit $status
fi
