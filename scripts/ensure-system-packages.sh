#!/bin/sh
# Install the Debian packages socnoc's tests run for real: Prometheus (promtool, the server),
# Alertmanager (amtool, the server) and rsyslog. Does nothing when they are all present.
# As root it installs the missing ones with apt-get; otherwise it says what to install and
# exits 1. Services the packages would start are not needed: the tests start their own.
set -eu

# package:program that proves it is installed
REQUIRED="prometheus:/usr/bin/promtool prometheus:/usr/bin/prometheus
prometheus-alertmanager:/usr/bin/prometheus-alertmanager prometheus-alertmanager:/usr/bin/amtool
rsyslog:/usr/sbin/rsyslogd"

missing=""
for entry in $REQUIRED; do
    package=${entry%%:*}
    program=${entry#*:}
    if [ ! -x "$program" ]; then
        case " $missing " in
            *" $package "*) ;;
            *) missing="$missing $package" ;;
        esac
    fi
done
missing=${missing# }

if [ -z "$missing" ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "socnoc's tests need these Debian packages, which are missing: $missing" >&2
    echo "Install them as root:  sudo apt-get update && sudo apt-get install -y --no-install-recommends $missing" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "socnoc's tests need: $missing (Debian/Ubuntu package names); no apt-get here, install them by hand" >&2
    exit 1
fi

echo "installing Debian packages: $missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086  # word splitting of the package list is intended
apt-get install -y -q --no-install-recommends $missing
for entry in $REQUIRED; do
    program=${entry#*:}
    if [ ! -x "$program" ]; then
        echo "installed $missing but $program is still missing" >&2
        exit 1
    fi
done
