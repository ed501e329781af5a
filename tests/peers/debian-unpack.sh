#!/usr/bin/env bash
# Usage: debian-unpack.sh SUITE DIR PACKAGE...
# Downloads the current PACKAGEs of a Debian SUITE (sid, trixie) WITHOUT installing
# anything: apt, with its own state under DIR/.apt and the suite's sources signed by
# Debian's archive keyring, downloads the packages into DIR/debs; dpkg-deb unpacks
# them into DIR/root. For test peers newer than Debian 12 carries (HAProxy 3.x,
# Compose v2).
set -euo pipefail
suite=$1
dir=$2
shift 2
state=$dir/.apt
rm -rf "$state" "$dir/debs" "$dir/root"
mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/parts" "$dir/debs"
cat >"$state/parts/$suite.sources" <<SOURCES
Types: deb
URIs: http://deb.debian.org/debian
Suites: $suite
Components: main
Architectures: amd64
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
apt_opts=(
    -o "Dir::Etc::SourceList=/dev/null"
    -o "Dir::Etc::SourceParts=$state/parts"
    -o "Dir::State::Lists=$state/lists"
    -o "Dir::Cache=$state/cache"
    -o "Debug::NoLocking=1"
    -o "APT::Sandbox::User=$(id -un)"
    -o "Acquire::Languages=none"
    -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
)
apt-get "${apt_opts[@]}" -qq update
(cd "$dir/debs" && apt-get "${apt_opts[@]}" -qq download "$@")
for deb in "$dir"/debs/*.deb; do
    dpkg-deb -x "$deb" "$dir/root"
done
rm -rf "$dir/debs" "$state"
