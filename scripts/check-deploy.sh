#!/usr/bin/env bash
# The deployment files hold: `systemd-analyze verify` on deploy/systemd/*.service (with
# ExecStart pointing at the binaries just built), the Grafana dashboard parses as JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-$PWD/target/debug}
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "check-deploy: SKIPPED: systemd-analyze missing (Debian: apt-get install systemd)" >&2
    [ "${CI:-}" = true ] && exit 1
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for unit in deploy/systemd/*.service; do
    sed "s|/usr/local/bin/|$bin/|g" "$unit" > "$work/$(basename "$unit")"
done
systemd-analyze verify "$work"/*.service
python3 -c 'import json,sys; json.load(open(sys.argv[1]))' deploy/grafana/mdi.json
echo "check-deploy: systemd units verified, dashboard parses"
