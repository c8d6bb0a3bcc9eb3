#!/usr/bin/env bash
# Retries wait an exponential backoff with jitter between --backoff-min and
# --backoff-max (decimals allowed): never sooner than the minimum, and the
# waits grow until they reach the maximum.
# shellcheck source=SCRIPTDIR/../lib/pgtest.sh
. "$(dirname "$0")/../lib/pgtest.sh"
require_walq
pg_start
walq init

h=$(handler fail.sh <<HANDLER
cat >/dev/null
echo "\$WALQ_ATTEMPT \$(date +%s.%N)" >>"$WORK/attempts.log"
exit 1
HANDLER
)
q "INSERT INTO walq.jobs (queue, payload, max_attempts) VALUES ('b', '{}', 5)" >/dev/null
capture timeout 60 "$WALQ_BIN" consume --group bo --queue b --drain \
    --backoff-min 0.3 --backoff-max 1.2 -- "$h"
assert_eq "$CAP_RC" 0 "the consumer drains with the retries"
assert_eq "$(wc -l <"$WORK/attempts.log")" 5 "five attempts"
assert_eq "$(q "SELECT status, attempts FROM walq.outcomes WHERE group_name = 'bo'")" "dead|5" \
    "dead after max_attempts"

# Gap before attempt k+1: base = min(max, min * 2^(k-1)), waited between
# max(min, base/2) and base (plus scheduling slack).
gaps=$(awk 'NR > 1 { printf "%.3f\n", $2 - prev } { prev = $2 }' "$WORK/attempts.log")
echo "gaps between attempts: $(tr '\n' ' ' <<<"$gaps")"
k=1
while read -r gap; do
    base=$(awk -v k="$k" 'BEGIN { b = 0.3; for (i = 1; i < k; i++) b *= 2; if (b > 1.2) b = 1.2; print b }')
    low=$(awk -v b="$base" 'BEGIN { l = b / 2; if (l < 0.3) l = 0.3; print l }')
    ok=$(awk -v g="$gap" -v l="$low" -v b="$base" 'BEGIN { print (g >= l - 0.01 && g <= b + 0.5) ? "yes" : "no" }')
    assert_eq "$ok" yes "retry $k waited ${gap}s, within [$low, $base] s (+0.5 s slack)"
    k=$((k + 1))
done <<<"$gaps"
pass all
