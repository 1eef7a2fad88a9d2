# libfaketime (Debian's package) for the clock-skew test: it runs a cluster node whose wall
# clock is hours off. Fetched with `apt-get download` and unpacked into
# ~/.cache/stowage/faketime once per machine (no root needed, nothing installed system-wide).
# Source this file; `install_faketime` exports STOWAGE_TEST_LIBFAKETIME (the library to
# LD_PRELOAD).

. "$(dirname "${BASH_SOURCE[0]}")/process.sh"

install_faketime() {
  local dir lib
  dir="$(tools_dir)/faketime"
  lib=$(find "$dir/root" -name 'libfaketime.so.1' 2>/dev/null | head -n 1)
  if [ -z "$lib" ]; then
    echo "fetching libfaketime from Debian's packages into $dir (once per machine)" >&2
    debian_unpack libfaketime "$dir" || return 1
    lib=$(find "$dir/root" -name 'libfaketime.so.1' | head -n 1)
  fi
  # An hour ahead, as the test runs a node: the shifted clock must read at least 3500 s on.
  if [ -z "$lib" ] \
    || [ $(( $(LD_PRELOAD="$lib" FAKETIME="+1h" date +%s) - $(date +%s) )) -lt 3500 ]; then
    echo "install_faketime: libfaketime does not shift the clock ($lib)" >&2
    return 1
  fi
  export STOWAGE_TEST_LIBFAKETIME="$lib"
  echo "libfaketime at $STOWAGE_TEST_LIBFAKETIME"
}
