#!/usr/bin/env python3
"""A stand-in for an AI finance agent that reaches the ERP through uapk-proxy.

It posts the seed's quarter-end entries to the ERP's own URL (ERP_BASE_URL)
and lets HTTP_PROXY / HTTPS_PROXY send them through uapk-proxy's forward
door (urllib honours those variables; for HTTPS trust the proxy's CA with
SSL_CERT_FILE). It prints each decision (X-UAPK-Decision, the approval id and
the roles it needs), waits for the approvers, and retries each approved entry
once with X-UAPK-Approval-Id.

It also works with the sidecar door: ERP_BASE_URL=http://127.0.0.1:8081 and
no proxy variables.

    HTTP_PROXY=http://127.0.0.1:8080 ERP_BASE_URL=http://127.0.0.1:9090 \\
        UAPK_ADMIN=http://127.0.0.1:8090 UAPK_ADMIN_TOKEN=$(cat agent-read.token) \\
        python3 agent.py

Approvals are waited for by polling the admin API (UAPK_ADMIN, --admin:
GET /v1/approvals/ID) or, without it, by retrying with X-UAPK-Approval-Id
until the answer is no longer 409 not_approved. Polling needs an admin token
with scope read (UAPK_ADMIN_TOKEN, or --admin-token, which ps shows), sent as
Authorization: Bearer. An agent should normally hold no admin token at all:
retrying needs none. If the admin API refuses the token (401 or 403), the
agent says so and falls back to retrying.

Exit status: 0 every call went through; 1 something was denied, rejected,
expired or failed; 2 approvals were still pending when it stopped waiting, or
the command line or environment is wrong.

Standard library only (Python 3.8+).
"""

import argparse
import ipaddress
import json
import os
import re
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

# The seed's scenario: a routine reconciliation, the $250k accrual a finance
# manager must approve, and the $1.2M ASC 606 adjustment that passes the $1M
# cap and needs the CFO and the controller. Bodies are bytes, kept as sent:
# an approval is bound to SHA-256(METHOD \n URL \n SHA-256(body)), so the
# retry must be byte-identical.
QUARTER_END = [
    {
        "title": "reconcile 1010-Cash for 2026-Q3",
        "method": "POST",
        "path": "/api/v1/reconciliations",
        "body": b'{"account":"1010-Cash","period":"2026-Q3","statement_balance":"48210.55"}',
        "headers": {"X-UAPK-On-Behalf-Of": "accountant@corp.example"},
    },
    {
        "title": "$250,000 Q3 product sales accrual",
        "method": "POST",
        "path": "/api/v1/journal-entries",
        "body": b'{"account":"4000-Revenue","debit":0,"credit":250000,'
        b'"description":"Q3 product sales accrual","supporting_docs":["sales_report_q3.pdf"]}',
        "headers": {"X-UAPK-Justification": "AI detected revenue recognition timing difference"},
    },
    {
        "title": "$1,200,000 ASC 606 revenue recognition adjustment",
        "method": "POST",
        "path": "/api/v1/journal-entries",
        "body": b'{"account":"4000-Revenue","amount":1200000,'
        b'"description":"ASC 606 revenue recognition adjustment"}',
        "headers": {"X-UAPK-Justification": "contracts meet ASC 606 criteria before quarter end"},
    },
]

ALLOWED, PENDING, FAILED = "allowed", "pending", "failed"


class AdminRefused(Exception):
    """A 401 or 403 from the admin API: no token, an unknown one, or one without scope read."""


class Unguarded(Exception):
    """A success answer without X-UAPK-Decision: it did not come through uapk-proxy."""


class Result:
    def __init__(self, status, headers, raw):
        self.status = status
        self.decision = headers.get("X-UAPK-Decision", "")
        self.action = headers.get("X-UAPK-Action", "")
        self.record = headers.get("X-UAPK-Record", "")
        self.raw = raw
        try:
            body = json.loads(raw.decode("utf-8"))
        except ValueError:
            body = None
        self.body = body if isinstance(body, dict) else {}
        if headers.get("X-UAPK-Approval-Id") and not self.body.get("approval_id"):
            self.body["approval_id"] = headers["X-UAPK-Approval-Id"]

    def get(self, key):
        v = self.body.get(key)
        return "" if v is None else str(v)


def duration(text):
    """Parses 90s, 15m, 4h, 1h30m or a plain number of seconds."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError("%r is not a duration such as 90s, 15m or 4h" % text)
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * scale[u] for n, u in parts)


def human(seconds):
    """Formats seconds as Go does for durations: 15m0s, 4h0m0s, 1.5s."""
    if seconds < 60:
        return "%gs" % seconds
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return ("%dh%dm%ds" % (h, m, s)) if h else ("%dm%ds" % (m, s))


def goes_through_proxy(url):
    """True if urllib will send a request for url to an HTTP(S)_PROXY."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    if parts.scheme not in proxies:
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


def is_loopback(url):
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Agent:
    def __init__(self, args, out=sys.stdout, err=sys.stderr):
        self.erp = args.erp.rstrip("/")
        self.admin = args.admin.rstrip("/") if args.admin else ""
        self.token = (args.admin_token or "").strip()
        self.wait = args.wait
        self.poll = args.poll
        self.timeout = args.timeout
        self.calls = QUARTER_END
        self.out, self.err = out, err
        # ERP calls: urllib's default opener, which reads HTTP_PROXY,
        # HTTPS_PROXY and NO_PROXY. The admin API: never through a proxy.
        self.erp_opener = urllib.request.build_opener()
        self.admin_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def say(self, fmt, *a):
        print(fmt % a if a else fmt, file=self.out, flush=True)

    def send(self, call, approval_id=""):
        req = urllib.request.Request(self.erp + call["path"], data=call["body"], method=call["method"])
        req.add_header("Content-Type", "application/json")
        for k, v in call["headers"].items():
            req.add_header(k, v)
        if approval_id:
            req.add_header("X-UAPK-Approval-Id", approval_id)
        try:
            with self.erp_opener.open(req, timeout=self.timeout) as resp:
                res = Result(resp.status, resp.headers, resp.read(1 << 20))
        except urllib.error.HTTPError as e:  # 4xx and 5xx: still an answer
            try:
                res = Result(e.code, e.headers, e.read(1 << 20))
            finally:
                e.close()
        if not res.decision and res.status < 300:
            raise Unguarded(
                "the answer has no X-UAPK-Decision header: it did not come through uapk-proxy; "
                "set HTTP_PROXY/HTTPS_PROXY to the forward door, or ERP_BASE_URL to the sidecar door"
            )
        return res

    def report(self, r):
        if r.decision == "pending":
            roles = r.body.get("required_roles") or []
            self.say("    %d pending  approval=%s action=%s needs=%s expires=%s",
                     r.status, r.get("approval_id"), r.get("action"), "+".join(map(str, roles)),
                     r.get("expires_at"))
            return PENDING
        if r.decision == "allow" and r.status < 300:
            erp = "/".join(x for x in (r.get("id"), r.get("status")) if x) or "-"
            self.say("    %d allow  action=%s record=%s erp=%s", r.status, r.action, r.record, erp)
            return ALLOWED
        reason = r.get("reason") or r.raw.decode("utf-8", "replace").strip()
        self.say("    %d %s  error=%s reason=%s action=%s record=%s", r.status, r.decision or "-",
                 r.get("error") or "-", reason, r.get("action"), r.get("record"))
        return FAILED

    def approval_status(self, approval_id):
        url = "%s/v1/approvals/%s" % (self.admin, urllib.parse.quote(approval_id, safe=""))
        req = urllib.request.Request(url)
        if self.token:
            req.add_header("Authorization", "Bearer " + self.token)
        try:
            with self.admin_opener.open(req, timeout=self.timeout) as resp:
                a = json.loads(resp.read(1 << 20).decode("utf-8"))
        except urllib.error.HTTPError as e:
            try:
                if e.code not in (401, 403):
                    raise
                try:
                    reason = json.loads(e.read(1 << 16).decode("utf-8")).get("reason") or ""
                except (ValueError, AttributeError):
                    reason = ""
            finally:
                e.close()
            raise AdminRefused("GET %s: HTTP %d%s" % (url, e.code, " (%s)" % reason if reason else "")) from None
        note = ""
        for d in a.get("decisions") or []:
            if d.get("decision") == "reject":
                note = " by %s (%s)" % (d.get("approver"), d.get("reason"))
        return a.get("status", ""), note

    def settle(self, w):
        """Looks once at a pending call; returns PENDING while approvers are not done."""
        if self.admin:
            try:
                status, note = self.approval_status(w["approval_id"])
            except AdminRefused as e:
                # Polling cannot work with this token; retrying needs none.
                print("agent: %s; pass a token with scope read in UAPK_ADMIN_TOKEN or --admin-token; "
                      "waiting by retrying with X-UAPK-Approval-Id instead" % e, file=self.err, flush=True)
                self.admin = ""
                return self.settle(w)
            except (OSError, ValueError) as e:
                print("agent: approval %s: %s (will look again)" % (w["approval_id"], e), file=self.err)
                return PENDING
            if status == "pending":
                return PENDING
            if status != "approved":
                self.say("[%d] %s: %s%s", w["n"], w["approval_id"], status, note)
                return FAILED
            self.say("[%d] %s: approved; retrying with X-UAPK-Approval-Id", w["n"], w["approval_id"])
        try:
            res = self.send(w["call"], w["approval_id"])
        except (OSError, Unguarded) as e:
            self.say("[%d] retry: error: %s", w["n"], e)
            return FAILED
        if not self.admin and res.status == 409 and res.get("reason") == "not_approved":
            return PENDING
        if not self.admin:
            self.say("[%d] retry with approval %s:", w["n"], w["approval_id"])
        return ALLOWED if self.report(res) == ALLOWED else FAILED

    def run(self):
        if goes_through_proxy(self.erp):
            via = "proxy " + urllib.request.getproxies()[urllib.parse.urlsplit(self.erp).scheme]
        else:
            via = "no proxy (the sidecar door)"
        self.say("quarter-end agent: ERP %s via %s; approvals: %s", self.erp, via,
                 "polling " + self.admin if self.admin else "retrying with X-UAPK-Approval-Id")
        waiting, failures = [], 0
        for n, call in enumerate(self.calls, 1):
            self.say("[%d] %s (%s %s)", n, call["title"], call["method"], call["path"])
            try:
                res = self.send(call)
            except Unguarded as e:
                self.say("    error: %s", e)
                return 1  # stop at once: nothing else may go past the proxy
            except OSError as e:
                self.say("    error: %s", e)
                failures += 1
                continue
            outcome = self.report(res)
            if outcome == PENDING:
                waiting.append({"n": n, "call": call, "approval_id": res.get("approval_id")})
            elif outcome == FAILED:
                failures += 1

        if waiting and self.wait > 0:
            self.say("waiting up to %s for %d approval(s); approvers: uapk-proxy pending, "
                     "then uapk-proxy approve ID --as ... --key ...", human(self.wait), len(waiting))
            deadline = time.monotonic() + self.wait
            while waiting and time.monotonic() < deadline:
                still = []
                for w in waiting:
                    outcome = self.settle(w)
                    if outcome == PENDING:
                        still.append(w)
                    elif outcome == FAILED:
                        failures += 1
                waiting = still
                if waiting:
                    time.sleep(self.poll)

        allowed = len(self.calls) - failures - len(waiting)
        self.say("done: %d allowed, %d failed, %d still pending", allowed, failures, len(waiting))
        for w in waiting:
            self.say("    [%d] %s still waits: approval %s", w["n"], w["call"]["title"], w["approval_id"])
        if failures:
            return 1
        return 2 if waiting else 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--erp", default=os.environ.get("ERP_BASE_URL", "http://127.0.0.1:8081"),
                   help="the ERP's base URL (env ERP_BASE_URL); through HTTP_PROXY, or the sidecar door")
    p.add_argument("--admin", default=os.environ.get("UAPK_ADMIN", ""),
                   help="uapk-proxy admin API to poll approvals (env UAPK_ADMIN); empty: retry instead")
    p.add_argument("--admin-token", default=os.environ.get("UAPK_ADMIN_TOKEN", ""), metavar="TOKEN",
                   help="with --admin: admin token with scope read, sent as Authorization: Bearer "
                        "(env UAPK_ADMIN_TOKEN, which ps does not show)")
    p.add_argument("--wait", type=duration, default=duration("15m"),
                   help="how long to wait for approvers, e.g. 15m or 4h (0: do not wait)")
    p.add_argument("--poll", type=duration, default=duration("2s"), help="interval between looks")
    p.add_argument("--timeout", type=duration, default=duration("2m"),
                   help="timeout of one request (keep above the actions' hold)")
    args = p.parse_args(argv)

    # Fail closed: an ERP call that uses neither door would reach the ERP
    # with no decision and no record.
    if not goes_through_proxy(args.erp) and not is_loopback(args.erp):
        print("agent: %s would be called directly, past uapk-proxy: set HTTP_PROXY/HTTPS_PROXY "
              "to the forward door (http://127.0.0.1:8080), or ERP_BASE_URL to the sidecar door "
              "(http://127.0.0.1:8081)" % args.erp, file=sys.stderr)
        return 2
    if args.admin and not args.admin_token.strip():
        print("agent: --admin without an admin token: the admin API will refuse; pass a read-scoped token "
              "with UAPK_ADMIN_TOKEN or --admin-token, or leave --admin out to retry with X-UAPK-Approval-Id",
              file=sys.stderr, flush=True)
    return Agent(args).run()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(2))
    sys.exit(main())
