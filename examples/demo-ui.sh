#!/usr/bin/env bash
# The approvers' desk, to click through: a mock ERP and uapk-proxy stay up
# with the seed's $1.2M entry waiting for the CFO and the controller. You
# enroll a passkey for each in your browser, the entries go into a demo copy
# of the principals file (as a reviewer would add them in Git), the proxy
# restarts with them, and you sign in and approve. Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=./bin
DATA=${UAPK_DEMO_DATA:-./data/demo-ui}
ERP=127.0.0.1:${ERP_PORT:-9090}
SIDECAR=127.0.0.1:${SIDECAR_PORT:-8081}
ADMIN_PORT=${ADMIN_PORT:-8090}
ADMIN=127.0.0.1:$ADMIN_PORT
UI=http://localhost:$ADMIN_PORT
PRINCIPALS=$DATA/principals.yaml
mkdir -p "$DATA"
[ -f "$PRINCIPALS" ] || sed 's#: keys/#: '"$PWD"'/examples/keys/#' examples/principals.yaml > "$PRINCIPALS"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_for() {
  for _ in $(seq 1 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "demo-ui: $1 did not come up; logs in $DATA" >&2; exit 1
}
start_proxy() {
  $BIN/uapk-proxy serve --manifest examples/manifests/sox-financial.json --principals "$PRINCIPALS" \
    --upstream "http://$ERP" --sidecar-addr "$SIDECAR" --admin-addr "$ADMIN" --proxy-addr "" \
    --data-dir "$DATA" 2>>"$DATA/proxy.log" & proxy=$!
  wait_for "http://$ADMIN/readyz"
}

$BIN/erp-mock -addr "$ERP" 2>"$DATA/erp.log" & pids+=($!)
wait_for "http://$ERP/_mock/stats"
start_proxy

echo "== the seed's \$1.2M ASC 606 adjustment, held for the CFO and the controller"
curl -sS -o /dev/null -D "$DATA/headers" -X POST "http://$SIDECAR/api/v1/journal-entries" \
  -H 'Content-Type: application/json' -H 'X-UAPK-Justification: contracts meet ASC 606 criteria before quarter end' \
  --data '{"account":"4000-Revenue","amount":1200000,"currency":"USD","description":"ASC 606 revenue recognition adjustment","supporting_docs":["contracts_q4.pdf"]}'
grep -i '^x-uapk-approval-id:' "$DATA/headers" | tr -d '\r' | sed 's/^/   /'

enroll() { # id
  echo
  echo "== enroll a passkey for $1: open $UI/ui/enroll, type $1, create the passkey,"
  echo "   then paste the entry the page shows here and end with an empty line (or just Enter to skip)"
  entry=""
  while IFS= read -r line; do [ -z "$line" ] && break; entry+="$line"$'\n'; done
  [ -z "$entry" ] && return 0
  ENTRY="$entry" python3 - "$PRINCIPALS" "$1" <<'PY'
import os, re, sys
path, who = sys.argv[1], sys.argv[2]
entry = os.environ["ENTRY"]
cred = re.search(r"credential_id:\s*(\S+)", entry)
pem = re.search(r"-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----", entry, re.S)
if not cred or not pem:
    sys.exit("demo-ui: that is not the entry /ui/enroll shows")
key = "\n".join("          " + l.strip() for l in pem.group(0).splitlines())
add = "    webauthn:\n      - credential_id: %s\n        public_key: |\n%s\n" % (cred.group(1), key)
out, lines, i = [], open(path).read().splitlines(True), 0
while i < len(lines):
    out.append(lines[i])
    if lines[i].strip() == "- id: " + who:
        i += 1
        while i < len(lines) and lines[i].startswith("    "):
            out.append(lines[i]); i += 1
        out.append(add)
        continue
    i += 1
open(path, "w").write("".join(out))
print("   added to " + path)
PY
}
enroll cfo@corp.example
enroll controller@corp.example

echo
echo "== restarting the proxy with the principals file as amended"
kill -TERM "$proxy"; wait "$proxy" 2>/dev/null || true
start_proxy
echo
echo "dashboard: $UI/ui/   (sign in as cfo@corp.example, approve; then as controller@corp.example in another"
echo "browser profile, see the CFO's approval and add yours). Mail and webhooks: see README, notify:."
echo "Ctrl-C stops the proxy and the mock ERP; the ledger stays in $DATA."
wait "$proxy"
