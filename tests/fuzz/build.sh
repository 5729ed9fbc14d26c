#!/usr/bin/env bash
# Build the libFuzzer target of the snapshot loader, with AddressSanitizer
# and UndefinedBehaviorSanitizer: tests/fuzz/build.sh OUT [PYTHON]
# Needs clang with compiler-rt (Debian: apt-get install clang
# libclang-rt-14-dev) and a Python built with a shared libpython.
set -euo pipefail
out=${1:?usage: tests/fuzz/build.sh OUT [PYTHON]}
py=${2:-python3}
root=$(cd "$(dirname "$0")/../.." && pwd)
core=$root/src/ctracemalloc/_core
inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
ldflags=$("$py"-config --ldflags --embed 2>/dev/null \
          || "$(dirname "$(command -v "$py")")/python3-config" --ldflags --embed)
clang -std=c11 -g -O1 -Wall -Wextra -Werror \
    -Wno-missing-field-initializers -Wno-cast-function-type \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -fno-omit-frame-pointer \
    -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION \
    -I"$inc" -I"$core" \
    "$root/tests/fuzz/fuzz_load.c" \
    "$core/mem.c" "$core/index.c" "$core/pyutil.c" "$core/snapdata.c" \
    "$core/fileio.c" "$core/xxh64.c" "$core/ffwrite.c" "$core/ffitems.c" \
    "$core/ffread.c" "$core/pklvm.c" "$core/pklread.c" "$core/pklwrite.c" \
    "$core/load.c" \
    $ldflags -o "$out"
