#!/bin/sh
# Installs the Debian 12 packages appfront needs to build, run and test.
# Only what is missing is installed; run as root or with sudo available.
set -e
PKGS="build-essential pkg-config libevent-dev libhttp-parser-dev libprotobuf-c-dev
protobuf-c-compiler libyaml-dev libsqlite3-dev libpcre2-dev libcmocka-dev libssl-dev zlib1g-dev
python3 python3-pytest python3-requests golang-go golang-google-appengine-dev curl openssl
clang libclang-rt-14-dev"
missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "Installing:$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
