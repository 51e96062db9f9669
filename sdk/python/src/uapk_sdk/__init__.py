"""uapk_sdk: the Python client of uapk-proxy (standard library only).

    from uapk_sdk import UAPKClient
    client = UAPKClient(gateway_url="http://127.0.0.1:8080", app_id="financial-ai-assistant")
    response = client.execute(action="journal_entry", parameters={...})
    if response.status == "PENDING_APPROVAL":
        client.wait_for_approval(response.approval_id, timeout=3600)
        response = client.retry(response)

See README.md beside this package, and the proxy's docs/reference.md
("Python SDK").
"""

from .client import (DENIED, EXECUTED, PENDING_APPROVAL, Approval, EvidenceBundle, ExecuteResponse, Override,
                     UAPKClient)
from .errors import (ApprovalTimeout, ConfigurationError, OverrideNotUsable, UAPKAdminError, UAPKConnectionError,
                     UAPKError, UAPKHTTPError, UAPKRequestError, UpstreamUnavailable)

__version__ = "0.1.0"

__all__ = [
    "UAPKClient", "ExecuteResponse", "Approval", "Override", "EvidenceBundle",
    "EXECUTED", "PENDING_APPROVAL", "DENIED",
    "UAPKError", "ConfigurationError", "UAPKConnectionError", "UAPKHTTPError", "UAPKRequestError",
    "UpstreamUnavailable", "UAPKAdminError", "ApprovalTimeout", "OverrideNotUsable",
]
