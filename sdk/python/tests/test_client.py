"""UAPKClient against a scripted HTTP server on loopback (the real proxy is
exercised by the Go end-to-end test internal/cli/sdk_e2e_test.go)."""

import base64
import decimal
import http.server
import json
import os
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import uapk_sdk  # noqa: E402
from uapk_sdk import (ApprovalTimeout, ConfigurationError, OverrideNotUsable, UAPKAdminError,  # noqa: E402
                      UAPKClient, UAPKConnectionError, UAPKRequestError, UpstreamUnavailable)
from uapk_sdk._ed25519 import SigningKey  # noqa: E402


class Fake(http.server.BaseHTTPRequestHandler):
    """Answers from the server's script: (method, path) -> list of (status,
    headers, body); the last answer repeats. Every request is kept."""

    def _serve(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        self.server.seen.append((self.command, self.path, self.headers, body))
        answers = self.server.script.get((self.command, self.path))
        if not answers:
            status, headers, out = 404, {}, b'{"error":"not_found"}'
        else:
            status, headers, out = answers.pop(0) if len(answers) > 1 else answers[0]
        if not isinstance(out, bytes):
            out = json.dumps(out).encode()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = _serve

    def log_message(self, *a):
        pass


class FakeTest(unittest.TestCase):
    def setUp(self):
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Fake)
        self.srv.script, self.srv.seen = {}, []
        threading.Thread(target=self.srv.serve_forever, args=(0.01,), daemon=True).start()
        self.addCleanup(self.srv.server_close)
        self.addCleanup(self.srv.shutdown)
        self.url = "http://127.0.0.1:%d" % self.srv.server_port
        self.client = UAPKClient(self.url, "financial-ai-assistant", admin_url=self.url, admin_token="tok",
                                 poll_interval=0.01)

    def script(self, method, path, *answers):
        self.srv.script[(method, path)] = list(answers)


PENDING = {"status": "PENDING_APPROVAL", "approval_id": "apr_1", "reason": "approval_required", "result": None,
           "action": "journal_entry", "record": 7, "required_roles": ["finance_manager"],
           "expires_at": "2026-11-18T16:00:00Z"}
EXECUTED = {"status": "EXECUTED", "approval_id": "apr_1", "reason": "approved", "action": "journal_entry",
            "record": 9, "result": {"status": 201, "content_type": "application/json", "body": {"id": "JE-1"}}}


class ExecuteTest(FakeTest):
    def test_pending_then_retry(self):
        self.script("POST", "/v1/execute", (202, {}, PENDING), (200, {}, EXECUTED))
        r = self.client.execute(action="journal_entry", parameters={"account": "4000-Revenue", "credit": 250000},
                                justification="timing difference")
        self.assertEqual((r.status, r.approval_id, r.reason, r.record, r.http_status),
                         ("PENDING_APPROVAL", "apr_1", "approval_required", 7, 202))
        self.assertTrue(r.pending)
        self.assertEqual(r.required_roles, ["finance_manager"])
        _, _, headers, body = self.srv.seen[0]
        self.assertEqual(json.loads(body), {"action": "journal_entry", "justification": "timing difference",
                                            "parameters": {"account": "4000-Revenue", "credit": 250000}})
        self.assertEqual(headers["X-UAPK-App"], "financial-ai-assistant")
        self.assertNotIn("X-UAPK-Signature", headers)
        r2 = self.client.retry(r)
        self.assertEqual((r2.status, r2.result["body"]["id"]), ("EXECUTED", "JE-1"))
        _, _, headers, body2 = self.srv.seen[1]
        self.assertEqual(headers["X-UAPK-Approval-Id"], "apr_1")
        self.assertEqual(body2, body)

    def test_denied_is_a_response(self):
        for status, ans in [(403, {"status": "DENIED", "approval_id": "", "reason": "denylisted", "result": None,
                                   "error": "denied", "message": "audit_modify is denylisted"}),
                            (409, {"status": "DENIED", "approval_id": "apr_1", "reason": "consumed", "result": None,
                                   "error": "approval_not_usable"})]:
            self.script("POST", "/v1/execute", (status, {}, ans))
            r = self.client.execute("audit_modify", {"id": "AL-1"})
            self.assertTrue(r.denied)
            self.assertEqual((r.reason, r.http_status, r.error), (ans["reason"], status, ans["error"]))
            self.assertIsNone(r.result)

    def test_no_approval_id_is_none(self):
        self.script("POST", "/v1/execute", (200, {}, dict(EXECUTED, approval_id="", reason="auto_approve")))
        r = self.client.execute("account_reconciliation", {"account": "1010-Cash"}, on_behalf_of="acc@corp.example")
        self.assertIsNone(r.approval_id)
        self.assertEqual(self.srv.seen[0][2]["X-UAPK-On-Behalf-Of"], "acc@corp.example")
        with self.assertRaises(ValueError):
            self.client.retry(r)

    def test_call_errors_raise(self):
        self.script("POST", "/v1/execute", (400, {}, {"error": "bad_request", "message": "unknown action \"x\""}))
        with self.assertRaises(UAPKRequestError) as cm:
            self.client.execute("x", {})
        self.assertEqual((cm.exception.http_status, cm.exception.error), (400, "bad_request"))
        self.assertIn('unknown action "x"', str(cm.exception))
        self.script("POST", "/v1/execute", (502, {}, {"error": "upstream_unavailable", "delivered": False}))
        with self.assertRaises(UpstreamUnavailable) as cm:
            self.client.execute("journal_entry", {})
        self.assertIs(cm.exception.delivered, False)

    def test_transport_error_raises(self):
        c = UAPKClient("http://127.0.0.1:9", "a")
        with self.assertRaises(UAPKConnectionError):
            c.execute("journal_entry", {})

    def test_types_checked_before_sending(self):
        with self.assertRaises(TypeError):
            self.client.execute("journal_entry", ["not", "a", "dict"])
        with self.assertRaises(ValueError):
            self.client.execute("journal_entry", {"amount": float("nan")})
        self.assertEqual(self.srv.seen, [])

    def test_decimal_is_sent_as_written(self):
        self.script("POST", "/v1/execute", (202, {}, PENDING))
        self.client.execute("journal_entry", {"amount": decimal.Decimal("1200000.10"), "n": 1.5, "s": "é"})
        self.assertEqual(self.srv.seen[0][3], '{"action":"journal_entry","parameters":{"amount":1200000.10,"n":1.5,"s":"é"}}'.encode())

    def test_members_and_headers(self):
        self.script("POST", "/v1/execute", (202, {}, PENDING))
        self.client.execute("journal_entry", {"amount": 1}, escalation_level="cfo", override_token="v4.public.x")
        self.assertEqual(json.loads(self.srv.seen[0][3]),
                         {"action": "journal_entry", "parameters": {"amount": 1}, "escalation_level": "cfo",
                          "override_token": "v4.public.x"})

    def test_no_environment_proxy(self):
        os.environ["HTTP_PROXY"] = os.environ["http_proxy"] = "http://127.0.0.1:9"
        self.addCleanup(os.environ.pop, "HTTP_PROXY")
        self.addCleanup(os.environ.pop, "http_proxy")
        os.environ.pop("NO_PROXY", None)
        os.environ.pop("no_proxy", None)
        self.script("POST", "/v1/execute", (202, {}, PENDING))
        c = UAPKClient(self.url, "a")
        self.assertEqual(c.execute("journal_entry", {}).status, "PENDING_APPROVAL")


class SignatureTest(FakeTest):
    def test_signed_headers(self):
        seed = bytes(range(32))
        der = bytes.fromhex("302e020100300506032b657004220420") + seed
        pem = "-----BEGIN PRIVATE KEY-----\n%s\n-----END PRIVATE KEY-----\n" % base64.b64encode(der).decode()
        with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as f:
            f.write(pem)
        self.addCleanup(os.unlink, f.name)
        c = UAPKClient(self.url, "financial-ai-assistant", private_key_path=f.name)
        self.assertEqual(c.public_key, SigningKey(seed).public_key)
        self.script("POST", "/v1/execute", (202, {}, PENDING))
        c.execute("journal_entry", {"amount": 1})
        _, _, h, body = self.srv.seen[0]
        import hashlib
        msg = "\n".join(["uapk-app-sig-v1", "financial-ai-assistant", "POST", "/v1/execute", h["X-UAPK-Timestamp"],
                         h["X-UAPK-Nonce"], hashlib.sha256(body).hexdigest()]).encode()
        # Ed25519 is deterministic: the same key and message give the same signature.
        self.assertEqual(base64.b64decode(h["X-UAPK-Signature"]), SigningKey(seed).sign(msg))
        self.assertEqual(len(h["X-UAPK-Nonce"]), 32)

    def test_bad_key_file(self):
        with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as f:
            f.write("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n")
        self.addCleanup(os.unlink, f.name)
        with self.assertRaises(ConfigurationError):
            UAPKClient(self.url, "a", private_key_path=f.name)
        with self.assertRaises(ConfigurationError):
            UAPKClient(self.url, "a", private_key_path="/nonexistent/key.pem")


def approval(status, **kw):
    return dict({"id": "apr_1", "kind": "request", "status": status, "action": "journal_entry",
                 "required_roles": ["finance_manager"], "decisions": []}, **kw)


class AdminTest(FakeTest):
    def test_wait_for_approval(self):
        self.script("GET", "/v1/approvals/apr_1", (200, {}, approval("pending")), (200, {}, approval("pending")),
                    (200, {}, approval("approved")))
        a = self.client.wait_for_approval("apr_1", timeout=5)
        self.assertTrue(a.approved)
        self.assertEqual(len(self.srv.seen), 3)
        self.assertEqual(self.srv.seen[0][2]["Authorization"], "Bearer tok")

    def test_wait_ends_on_rejected_and_times_out(self):
        self.script("GET", "/v1/approvals/apr_1", (200, {}, approval("rejected")))
        self.assertEqual(self.client.wait_for_approval("apr_1", 5).status, "rejected")
        self.script("GET", "/v1/approvals/apr_1", (200, {}, approval("pending")))
        with self.assertRaises(ApprovalTimeout) as cm:
            self.client.wait_for_approval("apr_1", timeout=0.05)
        self.assertEqual(cm.exception.approval.status, "pending")
        self.assertIsInstance(cm.exception, TimeoutError)

    def test_admin_needs_url_and_token(self):
        for k in ("UAPK_ADMIN_URL", "UAPK_ADMIN_TOKEN"):
            os.environ.pop(k, None)
        c = UAPKClient(self.url, "a")
        with self.assertRaises(ConfigurationError):
            c.wait_for_approval("apr_1", 1)
        os.environ["UAPK_ADMIN_URL"], os.environ["UAPK_ADMIN_TOKEN"] = self.url, "envtok"
        self.addCleanup(os.environ.pop, "UAPK_ADMIN_URL")
        self.addCleanup(os.environ.pop, "UAPK_ADMIN_TOKEN")
        self.script("GET", "/v1/approvals/apr_1", (200, {}, approval("approved")))
        UAPKClient(self.url, "a").get_approval("apr_1")
        self.assertEqual(self.srv.seen[-1][2]["Authorization"], "Bearer envtok")

    def test_admin_errors_raise(self):
        self.script("GET", "/v1/approvals/apr_x", (404, {}, {"error": "not_found", "message": "no approval apr_x"}))
        with self.assertRaises(UAPKAdminError) as cm:
            self.client.get_approval("apr_x")
        self.assertEqual((cm.exception.http_status, cm.exception.error), (404, "not_found"))

    def test_override_pending_then_approved(self):
        self.script("POST", "/v1/overrides", (201, {}, approval("pending", id="apr_o", kind="override")))
        o = self.client.request_override(action="financial_report", justification="Q4 10-K filing deadline",
                                         duration_hours=4, requested_by="controller@corp.example")
        self.assertEqual(json.loads(self.srv.seen[0][3]),
                         {"action": "financial_report", "duration": "4h", "justification": "Q4 10-K filing deadline",
                          "requested_by": "controller@corp.example"})
        self.assertEqual((o.id, o.status, o.token), ("apr_o", "pending", None))
        # Still pending: sent without a token, to the action's own policy.
        self.script("GET", "/v1/overrides/apr_o", (200, {}, approval("pending", id="apr_o", kind="override")),
                    (200, {}, approval("approved", id="apr_o", kind="override", token="v4.public.T")))
        self.script("POST", "/v1/execute", (202, {}, PENDING), (200, {}, EXECUTED))
        r = self.client.execute("financial_report", {"kind": "10-K"}, override_token=o)
        self.assertTrue(r.override_pending)
        self.assertNotIn("override_token", json.loads(self.srv.seen[-1][3]))
        r = self.client.execute("financial_report", {"kind": "10-K"}, override_token=o)
        self.assertFalse(r.override_pending)
        self.assertEqual(json.loads(self.srv.seen[-1][3])["override_token"], "v4.public.T")
        self.assertEqual(str(o), "v4.public.T")
        # The token is kept: no further admin call.
        n = len(self.srv.seen)
        self.client.execute("financial_report", {"kind": "10-K"}, override_token=o)
        self.assertEqual([s[1] for s in self.srv.seen[n:]], ["/v1/execute"])

    def test_override_never_approved_raises(self):
        for status, tok in (("rejected", None), ("expired", None), ("approved", None)):
            self.script("GET", "/v1/overrides/apr_o", (200, {}, approval(status, id="apr_o", kind="override")))
            with self.assertRaises(OverrideNotUsable):
                self.client.execute("financial_report", {}, override_token=uapk_sdk.Override("apr_o", "pending"))

    def test_durations(self):
        self.script("POST", "/v1/overrides", (201, {}, approval("pending", id="apr_o", kind="override")))
        self.client.request_override("financial_report", "j", 1.5, "c@corp.example")
        self.assertEqual(json.loads(self.srv.seen[-1][3])["duration"], "5400s")
        for bad in (0, -1, True, "4"):
            with self.assertRaises(ValueError):
                self.client.request_override("financial_report", "j", bad, "c@corp.example")

    def test_evidence(self):
        zipbytes = b"PK\x03\x04 a zip"
        hdrs = {"Content-Type": "application/zip",
                "Content-Disposition": 'attachment; filename="evidence-app-SOX-1-9.zip"'}
        self.script("POST", "/v1/evidence", (200, hdrs, zipbytes))
        b = self.client.export_evidence_bundle(start_date="2024-01-01", end_date="2024-12-31",
                                               compliance_framework="SOX", include_approvals=True,
                                               include_rejections=False)
        self.assertEqual(json.loads(self.srv.seen[-1][3]),
                         {"from": "2024-01-01", "to": "2024-12-31", "framework": "SOX", "include_approvals": True,
                          "include_rejections": False})
        self.assertEqual((bytes(b), b.filename, len(b)), (zipbytes, "evidence-app-SOX-1-9.zip", len(zipbytes)))
        with tempfile.TemporaryDirectory() as d:
            with open(b.save(d), "rb") as f:
                self.assertEqual(f.read(), zipbytes)
            b2 = self.client.export_evidence_bundle("2024-01-01", "2024-12-31", "SOX", path=d)
            self.assertEqual(b2.path, os.path.join(d, "evidence-app-SOX-1-9.zip"))
            with open(b2.path, "rb") as f:
                self.assertEqual(f.read(), zipbytes)
            self.script("POST", "/v1/evidence", (404, {}, {"error": "no_records"}))
            with self.assertRaises(UAPKAdminError):
                self.client.export_evidence_bundle("2024-01-01", "2024-12-31", "SOX", path=os.path.join(d, "x.zip"))
            self.assertEqual(sorted(os.listdir(d)), ["evidence-app-SOX-1-9.zip"])


if __name__ == "__main__":
    unittest.main()
