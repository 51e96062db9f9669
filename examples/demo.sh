#!/usr/bin/env bash
# The demo: a mock ERP, uapk-proxy in front of it, and the calls an AI
# finance agent makes at quarter end. Every call is classified, decided and
# recorded; at the end the ledger is verified twice: by the proxy and by an
# independent verifier that needs only the record format of
# docs/reference.md#records.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=./bin
DATA=${UAPK_DEMO_DATA:-./data}
# The example manifest's tool_restrictions.erp_hosts names 127.0.0.1:9090:
# with another ERP_PORT the forward-door step (11) is refused unknown_host.
ERP=127.0.0.1:${ERP_PORT:-9090}
SIDECAR=127.0.0.1:${SIDECAR_PORT:-8081}
ADMIN=127.0.0.1:${ADMIN_PORT:-8090}
PROXY=127.0.0.1:${PROXY_PORT:-8080}
LOGS=$DATA/demo-logs
mkdir -p "$LOGS"
# The admin API wants a bearer token. Without --admin-tokens, serve writes
# one with every scope to DATA/admin.token at its first start; the CLI finds
# it with --data-dir, curl and the verifier are given it below. A token in
# the caller's environment belongs to some other proxy: the CLI would prefer it.
TOKEN_FILE=$DATA/admin.token
unset UAPK_ADMIN_TOKEN

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_for() { # url
  for _ in $(seq 1 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "demo: $1 did not come up; logs in $LOGS" >&2; exit 1
}

echo "== starting the mock ERP on $ERP and uapk-proxy (sidecar $SIDECAR, forward proxy $PROXY, admin $ADMIN, data $DATA)"
$BIN/erp-mock -addr "$ERP" 2>"$LOGS/erp.log" & pids+=($!)
$BIN/uapk-proxy serve \
  --manifest examples/manifests/sox-financial.json \
  --principals examples/principals.yaml \
  --upstream "http://$ERP" --sidecar-addr "$SIDECAR" --admin-addr "$ADMIN" --proxy-addr "$PROXY" \
  --data-dir "$DATA" 2>"$LOGS/proxy.log" & proxy=$!; pids+=($proxy)
wait_for "http://$ERP/_mock/stats"
wait_for "http://$ADMIN/readyz"
[ -s "$TOKEN_FILE" ] || { echo "demo: no admin token in $TOKEN_FILE; logs in $LOGS" >&2; exit 1; }
auth() { printf 'Authorization: Bearer %s' "$(cat "$TOKEN_FILE")"; }

call() { # title method path body [headers...]
  local title=$1 method=$2 path=$3 body=$4; shift 4
  local hdrs=() h
  for h in "$@"; do hdrs+=(-H "$h"); done
  echo
  echo "== $title"
  echo "   $method $path ${body:+$body}"
  curl -sS -o "$LOGS/body" -D "$LOGS/headers" -X "$method" "http://$SIDECAR$path" \
    -H 'Content-Type: application/json' ${body:+--data "$body"} "${hdrs[@]}"
  echo "   -> $(head -1 "$LOGS/headers" | tr -d '\r')"
  grep -i '^x-uapk-' "$LOGS/headers" | tr -d '\r' | sed 's/^/      /'
  echo "      $(python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin), separators=(",",":")))' <"$LOGS/body" 2>/dev/null || cat "$LOGS/body")"
}

approval_id() { grep -i '^x-uapk-approval-id:' "$LOGS/headers" | tr -d '\r' | awk '{print $2}'; }

call "1. auto-approved reconciliation by a staff accountant" POST /api/v1/reconciliations \
  '{"account":"1010-Cash","period":"2026-Q3","statement_balance":"48210.55"}' \
  'X-UAPK-On-Behalf-Of: accountant@corp.example'
call "2. the seed's \$250k accrual: held for a finance manager" POST /api/v1/journal-entries \
  '{"account":"4000-Revenue","debit":0,"credit":250000,"description":"Q3 product sales accrual","supporting_docs":["sales_report_q3.pdf"]}' \
  'X-UAPK-Justification: AI detected revenue recognition timing difference'
ID_250K=$(approval_id)
call "3. the \$1.2M ASC 606 adjustment: over the cap, escalated to CFO and controller" POST /api/v1/journal-entries \
  '{"account":"4000-Revenue","amount":1200000,"description":"ASC 606 revenue recognition adjustment"}' \
  'X-UAPK-Justification: contracts meet ASC 606 criteria before quarter end'
ID_1200K=$(approval_id)
call "4. an attempt to change the audit log: denylisted" PUT /api/v1/audit-log/AL-1001 \
  '{"note":"cleanup"}'
call "5. a call no action covers (payroll export): denied by default" GET /api/v1/payroll/export ''

echo
echo "== what reached the ERP so far (only the reconciliation should have)"
curl -fsS "http://$ERP/_mock/stats"; echo
echo
echo "== pending approvals (GET /v1/approvals?status=pending)"
curl -fsS -H "$(auth)" "http://$ADMIN/v1/approvals?status=pending" | python3 -c '
import json, sys
for a in json.load(sys.stdin)["approvals"]:
    print("   %s  %-14s amount %-9s needs %-22s expires %s" % (a["id"], a["action"], a.get("amount", "-"),
          " + ".join(a["required_roles"]), a["expires_at"]))'

echo
echo "== 6. the finance manager reviews and approves the \$250k accrual with her own key (signed locally)"
$BIN/uapk-proxy approve "$ID_250K" --as fm@corp.example --key examples/keys/finance-manager.key \
  --reason "matches the Q3 sales report" --admin "http://$ADMIN" --data-dir "$DATA" | sed 's/^/   /'
call "7. the agent retries with X-UAPK-Approval-Id: forwarded once, with a capability token" POST /api/v1/journal-entries \
  '{"account":"4000-Revenue","debit":0,"credit":250000,"description":"Q3 product sales accrual","supporting_docs":["sales_report_q3.pdf"]}' \
  "X-UAPK-Approval-Id: $ID_250K"

echo
echo "== 8. SOX 302-style dual control on the \$1.2M adjustment: the CFO signs, then the controller"
$BIN/uapk-proxy approve "$ID_1200K" --as cfo@corp.example --key examples/keys/cfo.key \
  --reason "ASC 606 criteria met" --admin "http://$ADMIN" --data-dir "$DATA" | tail -2 | sed 's/^/   /'
$BIN/uapk-proxy approve "$ID_1200K" --as controller@corp.example --key examples/keys/controller.key \
  --reason "agreed" --admin "http://$ADMIN" --data-dir "$DATA" | tail -1 | sed 's/^/   /'
call "9. the agent retries the \$1.2M entry" POST /api/v1/journal-entries \
  '{"account":"4000-Revenue","amount":1200000,"description":"ASC 606 revenue recognition adjustment"}' \
  "X-UAPK-Approval-Id: $ID_1200K"
call "10. a replay of the same approval is refused" POST /api/v1/journal-entries \
  '{"account":"4000-Revenue","amount":1200000,"description":"ASC 606 revenue recognition adjustment"}' \
  "X-UAPK-Approval-Id: $ID_1200K"

echo
echo "== 11. a legacy agent that only knows HTTP_PROXY: the same policy on the forward door"
for path in /api/v1/reconciliations /api/v1/records/JE-000001; do
  method=POST; [ "$path" = /api/v1/records/JE-000001 ] && method=DELETE
  code=$(curl -sS -o "$LOGS/body" -w '%{http_code}' -x "http://$PROXY" -X "$method" "http://$ERP$path" \
    -H 'Content-Type: application/json' -H 'X-UAPK-On-Behalf-Of: accountant@corp.example' \
    --data '{"account":"1010-Cash","period":"2026-Q3","statement_balance":"48210.55"}')
  echo "   $method http://$ERP$path via HTTP_PROXY -> $code $(cat "$LOGS/body" | head -c 200)"
done

echo
echo "== what reached the ERP now: two reconciliations and the two approved entries, once each"
curl -fsS "http://$ERP/_mock/stats"; echo

echo
echo "== live chain check (GET /v1/ledger/verify)"
curl -fsS -H "$(auth)" "http://$ADMIN/v1/ledger/verify"
echo
echo "== independent verifier, needing only the record format (docs/reference.md#records)"
python3 examples/verify-chain/verify_chain.py --url "http://$ADMIN" --token-file "$TOKEN_FILE"

echo
echo "== stopping the proxy and verifying the ledger file offline"
kill -TERM "$proxy"; wait "$proxy" || true
$BIN/uapk-proxy verify --data-dir "$DATA" --archive --manifest examples/manifests/sox-financial.json
echo
echo "== an evidence bundle of today for the auditor, then its offline check"
TODAY=$(date -u +%Y-%m-%d)
$BIN/uapk-proxy export --data-dir "$DATA" --from "$TODAY" --to "$TODAY" --framework SOX \
  --manifest examples/manifests/sox-financial.json --principals examples/principals.yaml \
  -o "$DATA/evidence-$TODAY.zip" | sed 's/^/   /'
$BIN/uapk-proxy verify "$DATA/evidence-$TODAY.zip" | sed 's/^/   /'

echo
echo "== the WORM archive layout (S3 Object Lock in production; DATA/archive here, files read-only)"
find "$DATA/archive" -type f | sort | tail -4 | sed 's/^/   /'
echo
echo "demo done: decision log in $LOGS/proxy.log, ledger in $DATA/ledger.db"
echo "the approvers' dashboard: http://localhost:${ADMIN_PORT:-8090}/ui/ while a proxy runs;"
echo "make demo-ui keeps one running with the \$1.2M entry waiting, to enroll passkeys and approve in your browser"
