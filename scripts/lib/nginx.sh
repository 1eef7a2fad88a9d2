# nginx (Debian's package) for the cluster balancer: infra/nginx/run and the test that drives
# it. An nginx on PATH or in /usr/sbin is used as it is; otherwise the package is fetched with
# `apt-get download` and unpacked with `dpkg -x` into ~/.cache/stowage/nginx, once per
# machine: no root needed (but for a first `apt-get update`), and no nginx service installed or
# started behind our back. Source this file; `install_nginx` exports STOWAGE_TEST_NGINX.

. "$(dirname "${BASH_SOURCE[0]}")/process.sh"

install_nginx() {
  local found dir
  for found in "$(command -v nginx 2>/dev/null)" /usr/sbin/nginx; do
    if [ -n "$found" ] && [ -x "$found" ]; then
      export STOWAGE_TEST_NGINX="$found"
      echo "nginx at $STOWAGE_TEST_NGINX"
      return 0
    fi
  done
  dir="$(tools_dir)/nginx"
  if ! "$dir/root/usr/sbin/nginx" -v >/dev/null 2>&1; then
    echo "fetching nginx from Debian's packages into $dir (once per machine)" >&2
    debian_unpack nginx "$dir" || return 1
    "$dir/root/usr/sbin/nginx" -v >/dev/null 2>&1 || {
      echo "install_nginx: the unpacked nginx does not run: $dir/root/usr/sbin/nginx -v" >&2
      return 1
    }
  fi
  export STOWAGE_TEST_NGINX="$dir/root/usr/sbin/nginx"
  echo "nginx at $STOWAGE_TEST_NGINX"
}
