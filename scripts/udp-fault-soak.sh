#!/usr/bin/env bash
# The UDP fault soak (issue 19): a publisher and three receivers as network namespaces on
# a bridge; 5 %, 30 % and burst loss; a receiver and the publisher killed and restarted,
# a link down for 2 s; every replica must equal its source. Needs root.
#
#   scripts/udp-fault-soak.sh            one short round (what CI runs in the test suite)
#   scripts/udp-fault-soak.sh --soak     10 rounds of 60 s of writing (about 15 minutes)
#   MDI_SOAK_SECONDS=N MDI_SOAK_ROUNDS=R scripts/udp-fault-soak.sh   your own
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--soak" ]]; then
    export MDI_SOAK_SECONDS="${MDI_SOAK_SECONDS:-60}" MDI_SOAK_ROUNDS="${MDI_SOAK_ROUNDS:-10}"
fi
cargo build --workspace --quiet
exec cargo nextest run -p mdi-tools --test udp_fault_soak --no-capture \
    -E 'test(replicas_survive_loss_bursts_kills_and_a_link_down_on_a_bridge)'
