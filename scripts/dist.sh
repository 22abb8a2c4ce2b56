#!/usr/bin/env bash
# Builds the binary to ship: target/dist/weir, without debug info or symbols
# (under 40 MB instead of about 190 MB), and target/dist/weir.debug beside it
# with the line tables and symbols, linked by name (.gnu_debuglink).
#
# Keep weir.debug next to weir (or in a .debug/ directory beside it, or under
# /usr/lib/debug) and a panic's backtrace names every frame with file:line;
# without it, the panic message still says where it happened but the
# backtrace has no frame names. Debuggers (gdb, lldb) and perf find it the same way.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p weir
mkdir -p target/dist
cp target/release/weir target/dist/weir
objcopy --only-keep-debug target/dist/weir target/dist/weir.debug
(cd target/dist && objcopy --strip-all --add-gnu-debuglink=weir.debug weir)
ls -l target/dist/weir target/dist/weir.debug
