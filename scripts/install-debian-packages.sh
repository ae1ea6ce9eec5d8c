#!/bin/sh
# Install the Debian packages given as arguments, but only those missing, so
# that `make test` is quick on a machine that already has them and complete
# on a fresh one.  Needs root (CI runs as root).
set -eu
missing=""
for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $pkg"
    fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages:$missing (run as root, or: sudo apt-get install$missing)" >&2
    exit 1
fi
echo "installing Debian packages:$missing"
export DEBIAN_FRONTEND=noninteractive
# Postfix with no system-wide configuration: the lab runs its own instances.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
# Keep the packages' own services (Postfix, Dovecot) from starting on the host
# while they install: the lab starts its instances inside namespaces.
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    made_policy=yes
fi
trap '[ -n "$made_policy" ] && rm -f "$policy"' EXIT
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
