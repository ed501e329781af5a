#!/usr/bin/env bash
# Usage: sid-unpack.sh DIR PACKAGE...
# Downloads Debian unstable's current PACKAGEs WITHOUT installing anything: apt, with
# its own state under DIR/.apt and unstable's sources signed by Debian's archive
# keyring, downloads the packages into DIR/debs; dpkg-deb unpacks them into DIR/root.
# Used for test peers newer than Debian 12 carries (HAProxy 3.x, Compose v2).
set -euo pipefail
dir=$1
shift
state=$dir/.apt
rm -rf "$state" "$dir/debs" "$dir/root"
mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/parts" "$dir/debs"
cat >"$state/parts/unstable.sources" <<SOURCES
Types: deb
URIs: http://deb.debian.org/debian
Suites: sid
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
