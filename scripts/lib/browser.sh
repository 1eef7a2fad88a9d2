# Headless Chromium for the dashboard test (tests/tests/dashboard.rs): Debian's chromium
# (installed as root the first time), driven by playwright-core from npm (tests/dashboard,
# `npm ci` from its lock file into tests/dashboard/node_modules, which git ignores).
# Source this file; `install_browser` exports STOWAGE_TEST_CHROMIUM and STOWAGE_TEST_NODE.
# The test starts the browser itself (through node) and it ends with that process.

install_browser() {
  if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "install_browser: chromium is not installed and this is not root" >&2
      return 1
    fi
    echo "Installing chromium from Debian's packages (once per machine)"
    { apt-get install -y -qq chromium >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; } \
      || { echo "install_browser: apt-get install chromium failed" >&2; return 1; }
  fi
  command -v node >/dev/null 2>&1 || { echo "install_browser: node is not installed" >&2; return 1; }
  if [ ! -d tests/dashboard/node_modules/playwright-core ]; then
    npm ci --prefix tests/dashboard --no-audit --no-fund --loglevel=error >&2 \
      || { echo "install_browser: npm ci in tests/dashboard failed" >&2; return 1; }
  fi
  export STOWAGE_TEST_CHROMIUM=/usr/bin/chromium
  STOWAGE_TEST_NODE=$(command -v node)
  export STOWAGE_TEST_NODE
  echo "chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}') and playwright-core for the dashboard test"
}
