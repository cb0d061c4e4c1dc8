#!/usr/bin/env bash
# Install the Debian packages listed in FILE (one per line, '#' comments) that are not installed yet.
set -euo pipefail
list=${1:?usage: apt-install.sh FILE}
mapfile -t wanted < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$list" | grep -v '^$' || true)
[ ${#wanted[@]} -eq 0 ] && exit 0
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "apt-install: apt-get not found; please install: ${missing[*]}" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "apt-install: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# The tests run their own unbound/named on free loopback ports: keep the packages from starting
# system daemons (a resolver on port 53, fail2ban) — and from failing the install when one cannot
# start — unless the machine already has a policy of its own (Docker images ship one).
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod 755 /usr/sbin/policy-rc.d
  trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
fi
# Answers to install-time questions (postfix asks how to configure itself): PRESEED, default
# packaging/debconf-preseed.txt next to the list.
preseed=${PRESEED:-$(dirname "$list")/debconf-preseed.txt}
if [ -f "$preseed" ] && command -v debconf-set-selections >/dev/null; then
  sed -e '/^#/d' -e '/^[[:space:]]*$/d' "$preseed" | $sudo debconf-set-selections
fi
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
