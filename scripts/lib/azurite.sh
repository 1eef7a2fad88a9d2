# Azurite (Azure Blob's emulator) on the host, from npm. Source this file; `start_azurite`
# exports STOWAGE_TEST_AZURE_ENDPOINT (the well-known dev account `devstoreaccount1`'s blob
# endpoint) and STOWAGE_TEST_AZURITE_BIN (so a test can start a private Azurite); `stop_azurite`
# stops it by its PID. Installed once per machine into ${STOWAGE_TOOLS_DIR:-~/.cache/stowage}.
# 3.35 is the last Azurite that runs on Node 20; `--skipApiVersionCheck` lets newer clients in.

AZURITE_VERSION="${AZURITE_VERSION:-3.35.0}"
. "$(dirname "${BASH_SOURCE[0]}")/process.sh"

AZ_DIR=""
AZ_PID=""

# Prints the azurite-blob launcher, installing it first if needed.
install_azurite() {
  local dir
  dir="$(tools_dir)/azurite-$AZURITE_VERSION"
  if [ -x "$dir/node_modules/.bin/azurite-blob" ]; then
    echo "$dir/node_modules/.bin/azurite-blob"
    return 0
  fi
  command -v npm >/dev/null 2>&1 || { echo "install_azurite: npm is not installed" >&2; return 1; }
  echo "installing Azurite $AZURITE_VERSION into $dir (once per machine)" >&2
  rm -rf "$dir"
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >&2 \
    || { rm -rf "$dir"; return 1; }
  echo "$dir/node_modules/.bin/azurite-blob"
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
