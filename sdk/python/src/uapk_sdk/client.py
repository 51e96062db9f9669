"""UAPKClient: the agent's side of uapk-proxy.

``execute`` posts to the sidecar door's ``POST /v1/execute``
(docs/reference.md, "Execute"); ``wait_for_approval``, ``request_override``
and ``export_evidence_bundle`` call the admin API. Standard library only.
"""

import base64
import datetime as _dt
import decimal
import hashlib
import json
import math
import os
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Dict, List, Mapping, Optional, Union

from . import _ed25519
from .errors import (ApprovalTimeout, ConfigurationError, OverrideNotUsable, UAPKAdminError,
                     UAPKConnectionError, UAPKHTTPError, UAPKRequestError, UpstreamUnavailable,
                     _error_fields)

EXECUTED = "EXECUTED"
PENDING_APPROVAL = "PENDING_APPROVAL"
DENIED = "DENIED"

_STATUSES = (EXECUTED, PENDING_APPROVAL, DENIED)
_DONE = ("approved", "rejected", "expired")
_SIG_VERSION = "uapk-app-sig-v1"


@dataclass
class ExecuteResponse:
    """The proxy's answer to an execute call.

    ``status`` is ``EXECUTED``, ``PENDING_APPROVAL`` or ``DENIED``;
    ``approval_id`` names the approval (``None`` when there is none);
    ``reason`` is the verdict's reason code (``auto_approve``,
    ``approval_required``, ``amount_over_cap``, ``denylisted``, ...);
    ``result`` is the ERP's answer when executed, ``{"status": ERP_STATUS,
    "content_type": ..., "body": ...}``, else ``None``. ``raw`` is the whole
    JSON answer, ``http_status`` its HTTP status.
    """

    status: str
    approval_id: Optional[str]
    reason: Optional[str]
    result: Optional[Dict[str, Any]]
    action: Optional[str] = None
    record: Optional[int] = None
    http_status: int = 0
    error: Optional[str] = None
    message: Optional[str] = None
    required_roles: List[str] = field(default_factory=list)
    expires_at: Optional[str] = None
    #: the override passed to execute was still pending, so the call went
    #: without it, to the action's own policy
    override_pending: bool = False
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)
    headers: Dict[str, str] = field(default_factory=dict, repr=False)
    _call: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def executed(self) -> bool:
        return self.status == EXECUTED

    @property
    def pending(self) -> bool:
        return self.status == PENDING_APPROVAL

    @property
    def denied(self) -> bool:
        return self.status == DENIED


@dataclass
class Approval:
    """An approval as the admin API shows it (``GET /v1/approvals/{id}``).

    ``status`` is ``pending``, ``approved``, ``rejected`` or ``expired``.
    """

    id: str
    status: str
    kind: Optional[str] = None
    action: Optional[str] = None
    required_roles: List[str] = field(default_factory=list)
    decisions: List[Dict[str, Any]] = field(default_factory=list)
    expires_at: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def approved(self) -> bool:
        return self.status == "approved"

    @property
    def decided(self) -> bool:
        return self.status in _DONE

    @classmethod
    def _from(cls, m: Dict[str, Any]) -> "Approval":
        return cls(id=str(m.get("id", "")), status=str(m.get("status", "")), kind=m.get("kind"),
                   action=m.get("action"), required_roles=list(m.get("required_roles") or []),
                   decisions=list(m.get("decisions") or []), expires_at=m.get("expires_at"), raw=m)


@dataclass
class Override:
    """An override asked for with ``request_override``.

    Pass it as ``override_token=`` to ``execute``: once its approvers have
    approved it, ``execute`` fetches its token (``GET /v1/overrides/{id}``,
    admin scope ``override``) and sends it. ``str(override)`` is the token
    once known, else the id.
    """

    id: str
    status: str
    action: Optional[str] = None
    token: Optional[str] = None
    token_expires_at: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    def __str__(self) -> str:
        return self.token or self.id

    def _update(self, m: Dict[str, Any]) -> None:
        self.status = str(m.get("status", self.status))
        self.action = m.get("action", self.action)
        self.token = m.get("token") or self.token
        self.token_expires_at = m.get("token_expires_at") or self.token_expires_at
        self.raw = m


@dataclass
class EvidenceBundle:
    """An evidence bundle: the ZIP's bytes (``data``) and the file name the
    proxy gave it. ``save(path)`` writes it; with ``path=`` on
    ``export_evidence_bundle`` it is written while it streams and ``data``
    is empty, ``path`` naming the file."""

    filename: str
    data: bytes = b""
    path: Optional[str] = None
    size: int = 0

    def save(self, path: Union[str, "os.PathLike[str]"]) -> str:
        if self.path is not None and not self.data:
            raise ValueError("this bundle was written to %s and is not held in memory" % self.path)
        p = os.fspath(path)
        if os.path.isdir(p):
            p = os.path.join(p, self.filename)
        with open(p, "wb") as f:
            f.write(self.data)
        return p

    def __bytes__(self) -> bytes:
        return self.data

    def __len__(self) -> int:
        return self.size


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect would turn a POST into a GET elsewhere: never follow one.
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


def _dumps(v: Any) -> str:
    """JSON of v with Decimal written as the number it is (never a float)."""
    if v is None or isinstance(v, (bool, str)):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, int):
        return str(int(v))
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError("parameters: %r is not a JSON number" % v)
        return repr(v)
    if isinstance(v, decimal.Decimal):
        if not v.is_finite():
            raise ValueError("parameters: %s is not a JSON number" % v)
        return str(v)
    if isinstance(v, Mapping):
        parts = []
        for k, x in v.items():
            if not isinstance(k, str):
                raise TypeError("parameters: key %r is not a string" % (k,))
            parts.append(json.dumps(k, ensure_ascii=False) + ":" + _dumps(x))
        return "{" + ",".join(parts) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_dumps(x) for x in v) + "]"
    if isinstance(v, (_dt.datetime, _dt.date)):
        return json.dumps(v.isoformat())
    raise TypeError("parameters: %s is not JSON (dict, list, str, int, float, Decimal, bool, None)"
                    % type(v).__name__)


def _date(v: Any, name: str) -> Any:
    if v is None or isinstance(v, (str, int)) and not isinstance(v, bool):
        return v
    if isinstance(v, _dt.datetime):
        if v.tzinfo is None:
            raise ValueError("%s: a datetime needs a time zone" % name)
        return v.isoformat()
    if isinstance(v, _dt.date):
        return v.isoformat()
    raise TypeError("%s: want a date, an aware datetime, 'YYYY-MM-DD', an RFC 3339 time or a seq" % name)


class UAPKClient:
    """A client of one uapk-proxy.

    ``gateway_url`` is the sidecar door (``http://127.0.0.1:8080``);
    ``app_id`` is sent as ``X-UAPK-App``; ``private_key_path`` is the app's
    Ed25519 key (PKCS#8 PEM), used to sign every execute call
    (``X-UAPK-Signature``) so the proxy can prove which app called.

    Keyword arguments: ``admin_url`` and ``admin_token`` for the admin API
    (else ``UAPK_ADMIN_URL`` and ``UAPK_ADMIN_TOKEN``); ``on_behalf_of``, the
    person the agent acts for (``X-UAPK-On-Behalf-Of``: an id, or their
    identity token); ``timeout`` per HTTP call in seconds (an execute call
    on an action with ``hold`` waits up to the hold: give more);
    ``poll_interval`` for ``wait_for_approval``.
    """

    def __init__(self, gateway_url: Optional[str], app_id: str, private_key_path: Optional[str] = None, *,
                 admin_url: Optional[str] = None, admin_token: Optional[str] = None,
                 on_behalf_of: Optional[str] = None, timeout: float = 60.0,
                 poll_interval: float = 1.0) -> None:
        if not gateway_url:
            raise ConfigurationError("gateway_url is required (the proxy's sidecar door, e.g. http://127.0.0.1:8080)")
        self.gateway_url = self._base(gateway_url, "gateway_url")
        if not app_id:
            raise ConfigurationError("app_id is required")
        self.app_id = app_id
        admin_url = admin_url if admin_url is not None else os.environ.get("UAPK_ADMIN_URL")
        self.admin_url = self._base(admin_url, "admin_url") if admin_url else None
        self.admin_token = admin_token if admin_token is not None else os.environ.get("UAPK_ADMIN_TOKEN")
        self.on_behalf_of = on_behalf_of
        self.timeout = timeout
        self.poll_interval = poll_interval
        self._key: Optional[_ed25519.SigningKey] = None
        if private_key_path is not None:
            try:
                with open(private_key_path, "r", encoding="ascii") as f:
                    self._key = _ed25519.load_pem_private_key(f.read())
            except (OSError, ValueError) as e:
                raise ConfigurationError("private_key_path %s: %s" % (private_key_path, e)) from None
        # Never through HTTP(S)_PROXY from the environment: the sidecar and
        # the admin API are called directly, and no redirect is followed.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())

    @staticmethod
    def _base(url: str, name: str) -> str:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.netloc or u.query or u.fragment:
            raise ConfigurationError("%s %r: want http(s)://HOST[:PORT][/BASE]" % (name, url))
        return url.rstrip("/")

    @property
    def public_key(self) -> Optional[bytes]:
        """The raw 32-byte public key of private_key_path, if any."""
        return self._key.public_key if self._key else None

    # --- HTTP -----------------------------------------------------------

    def _send(self, method: str, url: str, body: Optional[bytes], headers: Dict[str, str],
              timeout: Optional[float] = None, sink: Optional[BinaryIO] = None):  # type: ignore[no-untyped-def]
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            resp = self._opener.open(req, timeout=self.timeout if timeout is None else timeout)
        except urllib.error.HTTPError as e:
            resp = e
        except (urllib.error.URLError, OSError) as e:
            raise UAPKConnectionError("%s %s: %s" % (method, url, getattr(e, "reason", e))) from e
        try:
            status = resp.status if hasattr(resp, "status") else resp.code
            hdrs = {k: v for k, v in resp.headers.items()}
            if sink is not None and 200 <= status < 300:
                n = 0
                while True:
                    chunk = resp.read(1 << 16)
                    if not chunk:
                        break
                    sink.write(chunk)
                    n += len(chunk)
                return status, hdrs, n
            return status, hdrs, resp.read()
        except OSError as e:
            raise UAPKConnectionError("%s %s: reading the answer: %s" % (method, url, e)) from e
        finally:
            resp.close()

    def _admin(self, method: str, path: str, payload: Any = None, sink: Optional[BinaryIO] = None):  # type: ignore[no-untyped-def]
        if not self.admin_url:
            raise ConfigurationError("this call needs the admin API: pass admin_url= or set UAPK_ADMIN_URL")
        if not self.admin_token:
            raise ConfigurationError("this call needs an admin token: pass admin_token= or set UAPK_ADMIN_TOKEN")
        headers = {"Authorization": "Bearer " + self.admin_token, "Accept": "application/json"}
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        url = self.admin_url + path
        status, hdrs, data = self._send(method, url, body, headers, sink=sink)
        if 200 <= status < 300:
            return status, hdrs, data
        parsed = _json_or_text(data)
        raise UAPKAdminError(status, message=_error_fields(parsed)["message"], body=parsed, url=method + " " + path,
                             **{k: v for k, v in _error_fields(parsed).items() if k != "message"})

    def _sign(self, method: str, target: str, body: bytes) -> Dict[str, str]:
        if self._key is None:
            return {}
        ts = str(int(time.time()))
        nonce = secrets.token_hex(16)
        msg = "\n".join([_SIG_VERSION, self.app_id, method, target, ts, nonce,
                         hashlib.sha256(body).hexdigest()]).encode()
        return {"X-UAPK-Timestamp": ts, "X-UAPK-Nonce": nonce,
                "X-UAPK-Signature": base64.b64encode(self._key.sign(msg)).decode()}

    # --- execute --------------------------------------------------------

    def execute(self, action: str, parameters: Optional[Mapping[str, Any]] = None,
                justification: Optional[str] = None, escalation_level: Optional[str] = None,
                override_token: Union[None, str, Override] = None, *,
                approval_id: Optional[str] = None, capability: Optional[str] = None,
                on_behalf_of: Optional[str] = None, timeout: Optional[float] = None) -> ExecuteResponse:
        """Asks the proxy to run ``action`` with ``parameters``.

        Returns the decision: ``EXECUTED`` (``result`` is the ERP's
        answer), ``PENDING_APPROVAL`` (``approval_id``; once approved, call
        ``retry(response)`` or ``execute(..., approval_id=...)`` with the
        same action and parameters) or ``DENIED`` (``reason`` says why).
        A denial is never raised. Raises ``UAPKRequestError`` for a call
        the proxy cannot take (400/405/413), ``UpstreamUnavailable`` when
        the ERP could not be reached (502/504), ``UAPKConnectionError``
        when the proxy could not be.

        ``override_token`` is a token string or the ``Override`` that
        ``request_override`` returned. An override still pending is not
        sent: the call goes to the action's own policy, as any call the
        override does not cover does (``response.override_pending`` is
        then true). One rejected or expired unapproved raises
        ``OverrideNotUsable``.
        """
        if not isinstance(action, str) or not action:
            raise TypeError("action must be a non-empty string")
        if parameters is not None and not isinstance(parameters, Mapping):
            raise TypeError("parameters must be a dict (the action's parameters), not %s" % type(parameters).__name__)
        members = ['"action":' + _dumps(action)]
        if parameters is not None:
            members.append('"parameters":' + _dumps(dict(parameters)))
        for name, v in (("justification", justification), ("escalation_level", escalation_level)):
            if v is not None:
                if not isinstance(v, str):
                    raise TypeError("%s must be a string" % name)
                members.append('"%s":%s' % (name, _dumps(v)))
        override_pending = False
        token = None
        if isinstance(override_token, Override):
            token = self._override_token(override_token)
            override_pending = token is None
        elif override_token is not None:
            if not isinstance(override_token, str):
                raise TypeError("override_token must be a token string or an Override")
            token = override_token
        if token:
            members.append('"override_token":' + _dumps(token))
        body = ("{" + ",".join(members) + "}").encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json", "X-UAPK-App": self.app_id}
        who = on_behalf_of if on_behalf_of is not None else self.on_behalf_of
        if who:
            headers["X-UAPK-On-Behalf-Of"] = who
        if approval_id:
            headers["X-UAPK-Approval-Id"] = approval_id
        if capability:
            headers["X-UAPK-Capability"] = capability
        headers.update(self._sign("POST", urllib.parse.urlsplit(self.gateway_url).path + "/v1/execute", body))
        url = self.gateway_url + "/v1/execute"
        status, hdrs, data = self._send("POST", url, body, headers, timeout=timeout)
        ans = _json_or_text(data)
        if isinstance(ans, dict) and ans.get("status") in _STATUSES:
            ef = _error_fields(ans)
            return ExecuteResponse(
                status=ans["status"], approval_id=ans.get("approval_id") or None, reason=ans.get("reason") or None,
                result=ans.get("result"), action=ans.get("action"), record=ans.get("record"), http_status=status,
                error=ef["error"], message=ef["message"], required_roles=list(ans.get("required_roles") or []),
                expires_at=ans.get("expires_at"), override_pending=override_pending, raw=ans, headers=hdrs,
                _call={"action": action, "parameters": parameters, "justification": justification,
                       "escalation_level": escalation_level, "override_token": override_token,
                       "on_behalf_of": on_behalf_of})
        ef = _error_fields(ans)
        cls = UAPKHTTPError
        if status in (502, 504) or ef["error"] == "upstream_unavailable":
            cls = UpstreamUnavailable
        elif 400 <= status < 500:
            cls = UAPKRequestError
        raise cls(status, ef["error"], ef["message"], reason=ef["reason"], body=ans, url="POST /v1/execute")

    def retry(self, response: ExecuteResponse, **kwargs: Any) -> ExecuteResponse:
        """Sends the call that got ``response`` (PENDING_APPROVAL) again with
        its approval id: once approved, it is executed, once."""
        if not response.approval_id:
            raise ValueError("this response names no approval to retry with")
        call = dict(response._call)
        if not call:
            raise ValueError("this response did not come from execute")
        for k in ("on_behalf_of",):
            if call.get(k) is None:
                call.pop(k)
        call.update(kwargs)
        return self.execute(approval_id=response.approval_id, **call)

    # --- approvals ------------------------------------------------------

    def get_approval(self, approval_id: str) -> Approval:
        """``GET /v1/approvals/{id}`` (admin scope ``read``)."""
        _, _, data = self._admin("GET", "/v1/approvals/" + urllib.parse.quote(approval_id, safe=""))
        return Approval._from(_json_object(data, "approval"))

    def wait_for_approval(self, approval_id: Union[str, ExecuteResponse, Override], timeout: float = 300.0, *,
                          poll_interval: Optional[float] = None) -> Approval:
        """Polls the approval until it is approved, rejected or expired and
        returns it (check ``.approved``); raises ``ApprovalTimeout`` if it
        is still pending after ``timeout`` seconds. Takes an id, an
        execute response or an Override. Needs admin scope ``read``."""
        if isinstance(approval_id, ExecuteResponse):
            if not approval_id.approval_id:
                raise ValueError("this response names no approval")
            approval_id = approval_id.approval_id
        elif isinstance(approval_id, Override):
            approval_id = approval_id.id
        interval = self.poll_interval if poll_interval is None else poll_interval
        deadline = time.monotonic() + timeout
        while True:
            a = self.get_approval(approval_id)
            if a.decided:
                return a
            left = deadline - time.monotonic()
            if left <= 0:
                raise ApprovalTimeout(approval_id, timeout, a)
            time.sleep(min(interval, left))

    # --- overrides ------------------------------------------------------

    def request_override(self, action: str, justification: str, duration_hours: float, requested_by: str, *,
                         max_amount: Union[None, str, int, decimal.Decimal] = None,
                         max_uses: Optional[int] = None) -> Override:
        """Asks for an emergency override of ``action``'s approval policy
        for ``duration_hours`` (``POST /v1/overrides``, admin scope
        ``override``). It needs its approvers (the manifest's
        ``override.roles_required``) before it works; pass the result to
        ``execute(override_token=...)``."""
        if isinstance(duration_hours, bool) or not isinstance(duration_hours, (int, float, decimal.Decimal)) \
                or not duration_hours > 0:
            raise ValueError("duration_hours must be a positive number")
        payload: Dict[str, Any] = {"action": action, "duration": _hours(duration_hours),
                                   "justification": justification, "requested_by": requested_by}
        if max_amount is not None:
            payload["max_amount"] = str(max_amount)
        if max_uses is not None:
            payload["max_uses"] = max_uses
        _, _, data = self._admin("POST", "/v1/overrides", payload)
        m = _json_object(data, "override")
        o = Override(id=str(m.get("id", "")), status=str(m.get("status", "")))
        o._update(m)
        return o

    def get_override(self, override: Union[str, Override]) -> Override:
        """``GET /v1/overrides/{id}``: its status and, once approved and to
        admin scope ``override``, its token."""
        oid = override.id if isinstance(override, Override) else override
        _, _, data = self._admin("GET", "/v1/overrides/" + urllib.parse.quote(oid, safe=""))
        m = _json_object(data, "override")
        if isinstance(override, Override):
            override._update(m)
            return override
        o = Override(id=oid, status="")
        o._update(m)
        return o

    def _override_token(self, o: Override) -> Optional[str]:
        if o.token:
            return o.token
        self.get_override(o)
        if o.token:
            return o.token
        if o.status == "pending":
            return None
        if o.status == "approved":
            raise OverrideNotUsable(o.id, o.status, "approved, but the admin token cannot read its token (scope override)")
        raise OverrideNotUsable(o.id, o.status, "it was never approved, so it has no token")

    # --- evidence -------------------------------------------------------

    def export_evidence_bundle(self, start_date: Any, end_date: Any, compliance_framework: str,
                               include_approvals: bool = True, include_rejections: bool = True, *,
                               path: Union[None, str, "os.PathLike[str]"] = None) -> EvidenceBundle:
        """Exports the signed evidence bundle (``POST /v1/evidence``, admin
        scope ``evidence``). Dates are ``date``s or ``"YYYY-MM-DD"``
        (``end_date`` included), aware datetimes or RFC 3339 text
        (``end_date`` excluded), or seqs. With ``path`` (a file, or a
        directory for the proxy's file name) the ZIP is written there as
        it streams; without, it is held in ``.data``."""
        payload = {"from": _date(start_date, "start_date"), "to": _date(end_date, "end_date"),
                   "framework": compliance_framework, "include_approvals": bool(include_approvals),
                   "include_rejections": bool(include_rejections)}
        payload = {k: v for k, v in payload.items() if v is not None}
        if path is None:
            _, hdrs, data = self._admin("POST", "/v1/evidence", payload)
            return EvidenceBundle(filename=_filename(hdrs), data=data, size=len(data))
        p = os.fspath(path)
        target_dir = p if os.path.isdir(p) else None
        tmp = os.path.join(target_dir or os.path.dirname(os.path.abspath(p)), ".uapk-evidence-%s.part" % secrets.token_hex(6))
        try:
            with open(tmp, "wb") as f:
                _, hdrs, n = self._admin("POST", "/v1/evidence", payload, sink=f)
            name = _filename(hdrs)
            final = os.path.join(target_dir, name) if target_dir else p
            os.replace(tmp, final)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return EvidenceBundle(filename=name, path=final, size=n)


def _hours(h: Union[int, float, decimal.Decimal]) -> str:
    if isinstance(h, int) or (isinstance(h, float) and h.is_integer()):
        return "%dh" % int(h)
    # Minutes and seconds, as Go's time.ParseDuration reads them.
    secs = decimal.Decimal(str(h)) * 3600
    if secs != secs.to_integral_value():
        raise ValueError("duration_hours %s is not a whole number of seconds" % h)
    return "%ds" % int(secs)


def _filename(hdrs: Mapping[str, str]) -> str:
    cd = next((v for k, v in hdrs.items() if k.lower() == "content-disposition"), "")
    for part in cd.split(";"):
        k, _, v = part.strip().partition("=")
        if k.lower() == "filename":
            name = os.path.basename(v.strip().strip('"'))
            if name and name not in (".", ".."):
                return name
    return "evidence.zip"


def _json_or_text(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return data.decode("utf-8", "replace")


def _json_object(data: bytes, what: str) -> Dict[str, Any]:
    m = _json_or_text(data)
    if not isinstance(m, dict):
        raise UAPKConnectionError("the admin API's %s is not a JSON object: %.200r" % (what, m))
    return m
