"""The SDK's exceptions: one base, ``UAPKError``, and a class per cause.

A decision is never an exception: ``execute`` returns DENIED as a response
(``status == "DENIED"``). Exceptions are for what is no decision at all: the
proxy could not be reached, the call itself was malformed, the ERP could not
be reached, an admin call was refused, a wait ran out.
"""

from typing import Any, Dict, Optional


class UAPKError(Exception):
    """Base of every exception the SDK raises."""


class ConfigurationError(UAPKError, ValueError):
    """The client lacks what a call needs (an admin URL or token, a key)."""


class UAPKConnectionError(UAPKError, ConnectionError):
    """The proxy could not be reached, or its answer could not be read."""


class UAPKHTTPError(UAPKError):
    """An answer that carries no decision: its HTTP status and error body.

    ``error``, ``reason`` and ``message`` are the members of the proxy's
    error body (``{"error": ..., "reason": ..., "message": ...}``), ``None``
    where absent; ``body`` is the whole body as read (a dict when it was a
    JSON object).
    """

    def __init__(self, http_status: int, error: Optional[str], message: Optional[str],
                 reason: Optional[str] = None, body: Any = None, url: str = "") -> None:
        self.http_status = http_status
        self.error = error
        self.reason = reason
        self.message = message
        self.body = body
        self.url = url
        parts = ["HTTP %d" % http_status]
        if error:
            parts.append(error)
        if reason:
            parts.append("(%s)" % reason)
        text = " ".join(parts)
        if message:
            text += ": " + message
        if url:
            text += " [" + url + "]"
        super().__init__(text)


class UAPKRequestError(UAPKHTTPError):
    """The execute call was refused as a call (400 ``bad_request``, 405,
    413): a bad member, an unknown action or one without an ``execute``
    template, a parameter a path cannot carry. Fix the call; retrying the
    same one gets the same answer."""


class UpstreamUnavailable(UAPKHTTPError):
    """The gate allowed the call but the ERP could not be reached, failed
    or timed out (502/504 ``upstream_unavailable``). ``delivered`` says
    whether the ERP may have received it (the proxy's ``delivered``
    member); an approval used for it stays usable when it was not."""

    @property
    def delivered(self) -> Optional[bool]:
        if isinstance(self.body, dict):
            d = self.body.get("delivered")
            return d if isinstance(d, bool) else None
        return None


class UAPKAdminError(UAPKHTTPError):
    """The admin API refused a call: 400 ``bad_request`` (with
    ``problems``), 401 ``unauthenticated``, 403 ``forbidden``
    (``missing_scope``), 404 ``not_found`` or ``no_records``, 429
    ``busy``, 5xx."""

    @property
    def problems(self) -> Optional[list]:
        if isinstance(self.body, dict) and isinstance(self.body.get("problems"), list):
            return self.body["problems"]
        return None


class ApprovalTimeout(UAPKError, TimeoutError):
    """``wait_for_approval`` ran out of time; ``approval`` is the approval
    as last read (still pending)."""

    def __init__(self, approval_id: str, timeout: float, approval: Any = None) -> None:
        self.approval_id = approval_id
        self.timeout = timeout
        self.approval = approval
        super().__init__("approval %s is still pending after %gs" % (approval_id, timeout))


class OverrideNotUsable(UAPKError):
    """An override passed to ``execute`` can never give a token: it was
    rejected or expired unapproved, or it is approved but the admin token
    cannot read its token (scope ``override`` is needed)."""

    def __init__(self, override_id: str, status: str, message: str) -> None:
        self.override_id = override_id
        self.status = status
        super().__init__("override %s (%s): %s" % (override_id, status, message))


def _error_fields(body: Any) -> Dict[str, Optional[str]]:
    out: Dict[str, Optional[str]] = {"error": None, "reason": None, "message": None}
    if isinstance(body, dict):
        for k in out:
            v = body.get(k)
            if isinstance(v, str) and v:
                out[k] = v
    return out
