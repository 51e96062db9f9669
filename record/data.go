package record

// The data member of each kind of record. Field names are the JSON member
// names; Map gives the member set the ledger stores (its values are the
// types the ledger's canonical encoder takes: strings, integers, bools,
// []string, []any and map[string]any), and encoding/json reads it back
// through the same tags.

// Request is the data of a request record, and of an override record that
// let a request through.
type Request struct {
	Door string `json:"door"`
	// Via is "execute" for a request the proxy made from an action's
	// execute template (POST /v1/execute); absent for a plain call.
	Via    string `json:"via,omitempty"`
	Method string `json:"method"`
	URL    string `json:"url"`
	// BodySHA256 and BodySize are present together once the body was read.
	BodySHA256 string `json:"body_sha256,omitempty"`
	BodySize   int    `json:"body_size,omitempty"`
	Amount     string `json:"amount,omitempty"`
	// MCPTool is the params.name of a JSON-RPC tools/call on an MCP path.
	MCPTool    string `json:"mcp_tool,omitempty"`
	OnBehalfOf string `json:"on_behalf_of,omitempty"`
	// CallerVerified: OnBehalfOf was proven by a token identity verified
	// (false: taken as the agent asserted it). The token itself, a bearer
	// secret, is never kept: only its issuer, subject and id.
	CallerVerified bool `json:"caller_verified"`
	// AppVerified: the app signed the request with the key the principals
	// file lists for it (apps:).
	AppVerified   bool   `json:"app_verified,omitempty"`
	CallerIssuer  string `json:"caller_iss,omitempty"`
	CallerSubject string `json:"caller_sub,omitempty"`
	CallerTokenID string `json:"caller_jti,omitempty"`
	// The proxy set its own ERP credential (upstream_auth: header or
	// oauth2), and removed the one the agent sent under this header name.
	UpstreamCredential string `json:"upstream_credential,omitempty"`
	AgentCredential    string `json:"agent_credential_removed,omitempty"`
	Justification      string `json:"justification,omitempty"`
	Escalation         string `json:"escalation,omitempty"`
	Detail             string `json:"detail,omitempty"`
	// Held for approval.
	RequiredRoles []string `json:"required_roles,omitempty"`
	ExpiresAt     string   `json:"expires_at,omitempty"`
	// A retry or a token presented.
	ApprovalIDPresented string `json:"approval_id_presented,omitempty"`
	TokenID             string `json:"token_id,omitempty"`
	TokenError          string `json:"token_error,omitempty"`
	// Let through by an override.
	OverrideID        string `json:"override_id,omitempty"`
	OverrideExpiresAt string `json:"override_expires_at,omitempty"`
	PolicySkipped     string `json:"policy_skipped,omitempty"`
	// The override's bounds in force for that use: the most one request
	// may carry (its max_amount, or else the action's amount_cap) and its
	// max_uses (absent: no limit but its duration).
	OverrideMaxAmount string `json:"override_max_amount,omitempty"`
	OverrideMaxUses   int    `json:"override_max_uses,omitempty"`
	// Held although an override token came with it: why the override did
	// not cover this request.
	OverrideNotApplied Reason `json:"override_not_applied,omitempty"`
	// CONNECT and tunnels: only host and port are seen.
	Host       string `json:"host,omitempty"`
	Port       string `json:"port,omitempty"`
	Connect    string `json:"connect,omitempty"`
	HostHeader string `json:"host_header,omitempty"`
	// A body over the limit: the limit and the Content-Length sent (-1: none).
	Limit         int64 `json:"limit,omitempty"`
	ContentLength int   `json:"content_length,omitempty"`
}

// Map returns the stored data member.
func (d *Request) Map() map[string]any {
	m := map[string]any{"door": d.Door, "method": d.Method, "url": d.URL}
	str(m, "via", d.Via)
	if d.BodySHA256 != "" {
		m["body_sha256"], m["body_size"] = d.BodySHA256, d.BodySize
	}
	str(m, "amount", d.Amount)
	str(m, "mcp_tool", d.MCPTool)
	str(m, "on_behalf_of", d.OnBehalfOf)
	m["caller_verified"] = d.CallerVerified
	if d.AppVerified {
		m["app_verified"] = true
	}
	str(m, "caller_iss", d.CallerIssuer)
	str(m, "caller_sub", d.CallerSubject)
	str(m, "caller_jti", d.CallerTokenID)
	str(m, "upstream_credential", d.UpstreamCredential)
	str(m, "agent_credential_removed", d.AgentCredential)
	str(m, "justification", d.Justification)
	str(m, "escalation", d.Escalation)
	str(m, "detail", d.Detail)
	if d.RequiredRoles != nil {
		m["required_roles"] = anys(d.RequiredRoles)
	}
	str(m, "expires_at", d.ExpiresAt)
	str(m, "approval_id_presented", d.ApprovalIDPresented)
	str(m, "token_id", d.TokenID)
	str(m, "token_error", d.TokenError)
	str(m, "override_id", d.OverrideID)
	str(m, "override_expires_at", d.OverrideExpiresAt)
	str(m, "policy_skipped", d.PolicySkipped)
	str(m, "override_max_amount", d.OverrideMaxAmount)
	if d.OverrideMaxUses != 0 {
		m["override_max_uses"] = d.OverrideMaxUses
	}
	str(m, "override_not_applied", string(d.OverrideNotApplied))
	str(m, "host", d.Host)
	str(m, "port", d.Port)
	str(m, "connect", d.Connect)
	str(m, "host_header", d.HostHeader)
	if d.Limit != 0 {
		m["limit"], m["content_length"] = d.Limit, d.ContentLength
	}
	return m
}

// AdminRefusals is the data of a request record (door admin, reason
// admin_refused) that sums up the admin calls refused for their token
// since the last such record: refusals are counted, never recorded one by
// one, so that a caller without a token cannot grow the ledger.
type AdminRefusals struct {
	Door         string `json:"door"`
	Refused      int    `json:"refused"`
	MissingToken int    `json:"missing_token,omitempty"`
	BadToken     int    `json:"bad_token,omitempty"`
	MissingScope int    `json:"missing_scope,omitempty"`
	Since        string `json:"since"`
	Until        string `json:"until"`
}

// Map returns the stored data member.
func (d *AdminRefusals) Map() map[string]any {
	m := map[string]any{"door": d.Door, "refused": d.Refused, "since": d.Since, "until": d.Until}
	for k, n := range map[string]int{"missing_token": d.MissingToken, "bad_token": d.BadToken, "missing_scope": d.MissingScope} {
		if n != 0 {
			m[k] = n
		}
	}
	return m
}

// Notification is the data of a notification record: one attempt to tell
// someone of an approval. Never the request's body.
type Notification struct {
	Event   string `json:"event"`   // approval.pending, approval.decided, approval.approved, ...
	Channel string `json:"channel"` // email:ADDRESS or webhook:HOST
	Attempt int    `json:"attempt"`
	Final   bool   `json:"final"`
	Error   string `json:"error,omitempty"`
}

// Map returns the stored data member.
func (d *Notification) Map() map[string]any {
	m := map[string]any{"event": d.Event, "channel": d.Channel, "attempt": d.Attempt, "final": d.Final}
	str(m, "error", d.Error)
	return m
}

// Forward is the data of a forward record: what came of a request the gate
// let through.
type Forward struct {
	RequestRecord uint64 `json:"request_record"`
	LatencyMS     int64  `json:"latency_ms"`
	LatencyUS     int64  `json:"latency_us"`
	// Status is the ERP's status; 0 when none came (Error says why).
	Status int `json:"status,omitempty"`
	// ResponseSHA256 and ResponseSize are present together when the whole
	// answer was seen.
	ResponseSHA256 string `json:"response_sha256,omitempty"`
	ResponseSize   int64  `json:"response_size,omitempty"`
	Error          string `json:"error,omitempty"`
	// Delivered, with Error: whether the ERP may have received the request.
	Delivered bool `json:"delivered,omitempty"`
	// RelayError and RelayedSize: a streamed answer that broke off.
	RelayedSize int64  `json:"relayed_size,omitempty"`
	RelayError  string `json:"relay_error,omitempty"`
	// Tunnel is set for a blind tunnel's end, with the bytes each way.
	Tunnel    bool  `json:"-"`
	BytesUp   int64 `json:"bytes_up,omitempty"`
	BytesDown int64 `json:"bytes_down,omitempty"`
}

// Map returns the stored data member.
func (d *Forward) Map() map[string]any {
	m := map[string]any{"request_record": d.RequestRecord, "latency_ms": d.LatencyMS, "latency_us": d.LatencyUS}
	if d.Status != 0 {
		m["status"] = d.Status
	}
	if d.ResponseSHA256 != "" {
		m["response_sha256"], m["response_size"] = d.ResponseSHA256, d.ResponseSize
	}
	if d.Error != "" {
		m["error"], m["delivered"] = d.Error, d.Delivered
	}
	if d.RelayError != "" {
		m["relayed_size"], m["relay_error"] = d.RelayedSize, d.RelayError
	}
	if d.Tunnel {
		m["bytes_up"], m["bytes_down"] = d.BytesUp, d.BytesDown
	}
	return m
}

// Outcome is the data of an outcome record: what is known of an allowed
// request (a request or override record with decision allow) that has no
// forward record.
type Outcome struct {
	// RequestRecord is the seq of the request record, RequestHash its hash,
	// RequestKind and RequestReason its kind and reason.
	RequestRecord uint64 `json:"request_record"`
	RequestHash   string `json:"request_hash"`
	RequestKind   string `json:"request_kind"`
	RequestReason string `json:"request_reason"`
	// ERPReceived is whether the ERP may have received the request: "yes",
	// "no" or "unknown".
	ERPReceived string `json:"erp_received"`
	// Detail says why, in words.
	Detail string `json:"detail"`
	// ForwardReason and Forward, with forward_not_recorded: the reason
	// and data of the forward record that could not be written.
	ForwardReason string         `json:"forward_reason,omitempty"`
	Forward       map[string]any `json:"forward,omitempty"`
}

// Map returns the stored data member.
func (d *Outcome) Map() map[string]any {
	m := map[string]any{"request_record": d.RequestRecord, "request_hash": d.RequestHash,
		"request_kind": d.RequestKind, "request_reason": d.RequestReason,
		"erp_received": d.ERPReceived, "detail": d.Detail}
	str(m, "forward_reason", d.ForwardReason)
	if d.Forward != nil {
		m["forward"] = d.Forward
	}
	return m
}

// Signature is the data of an approval record whose decision is approve or
// reject: the signed statement's parts, so that an auditor can rebuild and
// check it from the record alone.
type Signature struct {
	Approver        string `json:"approver"`
	Role            string `json:"role"`
	SignedAt        string `json:"signed_at"`
	Signature       string `json:"signature"`
	Reason          string `json:"reason"`
	Status          string `json:"status"`        // the approval's status after this decision
	ApprovalKind    string `json:"approval_kind"` // request | override
	StatementSHA256 string `json:"statement_sha256"`
	// WebAuthn: the decision was a passkey's assertion (signature is ""),
	// kept whole with the relying party it was checked for.
	WebAuthn *WebAuthn `json:"webauthn,omitempty"`
}

// WebAuthn is a passkey assertion as a signature record keeps it: the
// members base64url as the browser gave them, and the relying-party id and
// origin the proxy required.
type WebAuthn struct {
	CredentialID      string `json:"credential_id"`
	AuthenticatorData string `json:"authenticator_data"`
	ClientDataJSON    string `json:"client_data_json"`
	Signature         string `json:"signature"`
	RPID              string `json:"rp_id"`
	Origin            string `json:"origin"`
}

// Map returns the stored data member.
func (d *Signature) Map() map[string]any {
	m := map[string]any{"approver": d.Approver, "role": d.Role, "signed_at": d.SignedAt,
		"signature": d.Signature, "reason": d.Reason, "status": d.Status,
		"approval_kind": d.ApprovalKind, "statement_sha256": d.StatementSHA256}
	if w := d.WebAuthn; w != nil {
		m["webauthn"] = map[string]any{"credential_id": w.CredentialID, "authenticator_data": w.AuthenticatorData,
			"client_data_json": w.ClientDataJSON, "signature": w.Signature, "rp_id": w.RPID, "origin": w.Origin}
	}
	return m
}

// Refusal is the data of an approval record with decision refused: who
// tried what, and why it did not count (the record's reason).
type Refusal struct {
	Approver          string `json:"approver"`
	DecisionRequested string `json:"decision_requested"`
	SignedAt          string `json:"signed_at"`
	Detail            string `json:"detail"`
}

// Map returns the stored data member.
func (d *Refusal) Map() map[string]any {
	return map[string]any{"approver": d.Approver, "decision_requested": d.DecisionRequested,
		"signed_at": d.SignedAt, "detail": d.Detail}
}

// Expiry is the data of an approval record with decision expired.
type Expiry struct {
	ExpiresAt string `json:"expires_at"`
	Decisions int    `json:"decisions"` // decisions counted before it ran out
}

// Map returns the stored data member.
func (d *Expiry) Map() map[string]any {
	return map[string]any{"expires_at": d.ExpiresAt, "decisions": d.Decisions}
}

// Token is the data of a capability or override record with decision
// issued. The token is a bearer secret: only its id and hash are kept.
type Token struct {
	TokenID     string `json:"token_id"`
	TokenSHA256 string `json:"token_sha256"`
	ExpiresAt   string `json:"expires_at"`
	IssuedAt    string `json:"issued_at"`
}

// Map returns the stored data member.
func (d *Token) Map() map[string]any {
	return map[string]any{"token_id": d.TokenID, "token_sha256": d.TokenSHA256,
		"expires_at": d.ExpiresAt, "issued_at": d.IssuedAt}
}

// OverrideRequest is the data of an override record with decision pending.
// With the record's app and action it holds every part of the override's
// digest, so that an auditor can rebuild what the approvers signed.
type OverrideRequest struct {
	RequestedBy   string   `json:"requested_by"`
	Duration      string   `json:"duration"`
	Justification string   `json:"justification"`
	RequiredRoles []string `json:"required_roles"`
	ExpiresAt     string   `json:"expires_at"`
	// The bounds asked for, absent when none: the most one request may
	// carry (exact decimal text) and how many requests it may let through.
	MaxAmount string `json:"max_amount,omitempty"`
	MaxUses   int    `json:"max_uses,omitempty"`
}

// Map returns the stored data member.
func (d *OverrideRequest) Map() map[string]any {
	m := map[string]any{"requested_by": d.RequestedBy, "duration": d.Duration,
		"justification": d.Justification, "required_roles": anys(d.RequiredRoles), "expires_at": d.ExpiresAt}
	str(m, "max_amount", d.MaxAmount)
	if d.MaxUses != 0 {
		m["max_uses"] = d.MaxUses
	}
	return m
}

// Config is the data of a config record: what was in force from this seq
// on. The chain carries the principals so that an auditor needs no file from
// the install to check who signed.
type Config struct {
	ManifestFile    string `json:"manifest_file"`
	ManifestVersion string `json:"manifest_version"`
	GatewayKey      string `json:"gateway_key"` // base64 of the raw Ed25519 public key
	ProxyVersion    string `json:"proxy_version"`
	Upstream        string `json:"upstream"`
	ProxyAddr       string `json:"proxy_addr"`
	CASHA256        string `json:"ca_sha256,omitempty"`
	UpstreamCA      string `json:"upstream_ca,omitempty"`
	// PrincipalsFile is where the principals were read from ("" for none);
	// PrincipalsSHA256 is the hex SHA-256 of the canonical list below.
	PrincipalsFile   string      `json:"principals_file,omitempty"`
	PrincipalsSHA256 string      `json:"principals_sha256,omitempty"`
	Principals       []Principal `json:"principals,omitempty"`
}

// Principal is one person in force, as a config record carries them.
type Principal struct {
	ID        string   `json:"id"`
	Roles     []string `json:"roles"`
	PublicKey string   `json:"public_key,omitempty"` // PKIX PEM; absent for one who cannot sign
	// WebAuthn are the principal's passkeys, for decisions made in the
	// dashboard; absent when none.
	WebAuthn []PasskeyCredential `json:"webauthn,omitempty"`
}

// PasskeyCredential is one passkey of a principal: its credential id
// (base64url) and public key (PKIX PEM, P-256 or Ed25519).
type PasskeyCredential struct {
	CredentialID string `json:"credential_id"`
	PublicKey    string `json:"public_key"`
}

// Map returns the stored data member.
func (d *Config) Map() map[string]any {
	m := map[string]any{"manifest_file": d.ManifestFile, "manifest_version": d.ManifestVersion,
		"gateway_key": d.GatewayKey, "proxy_version": d.ProxyVersion, "upstream": d.Upstream,
		"proxy_addr": d.ProxyAddr}
	str(m, "ca_sha256", d.CASHA256)
	str(m, "upstream_ca", d.UpstreamCA)
	str(m, "principals_file", d.PrincipalsFile)
	if d.PrincipalsSHA256 != "" {
		m["principals_sha256"] = d.PrincipalsSHA256
		m["principals"] = PrincipalsMap(d.Principals)
	}
	return m
}

// PrincipalsMap is the stored form of a principals list, the one that
// Config.PrincipalsSHA256 hashes in its canonical JSON.
func PrincipalsMap(ps []Principal) []any {
	out := make([]any, 0, len(ps))
	for _, p := range ps {
		e := map[string]any{"id": p.ID, "roles": anys(p.Roles)}
		str(e, "public_key", p.PublicKey)
		if len(p.WebAuthn) > 0 {
			ws := make([]any, len(p.WebAuthn))
			for i, w := range p.WebAuthn {
				ws[i] = map[string]any{"credential_id": w.CredentialID, "public_key": w.PublicKey}
			}
			e["webauthn"] = ws
		}
		out = append(out, e)
	}
	return out
}

// Checkpoint is the data of a checkpoint record: a signed checkpoint stored
// in the archive.
type Checkpoint struct {
	Store     string `json:"store"`
	Origin    string `json:"origin"`
	Size      uint64 `json:"size"`
	Hash      string `json:"hash"`
	Key       string `json:"key"`
	VersionID string `json:"version_id"`
	Note      string `json:"note"`
	Segment   string `json:"segment"`
}

// Map returns the stored data member.
func (d *Checkpoint) Map() map[string]any {
	return map[string]any{"store": d.Store, "origin": d.Origin, "size": d.Size, "hash": d.Hash,
		"key": d.Key, "version_id": d.VersionID, "note": d.Note, "segment": d.Segment}
}

// Archive is the data of an archive record: a sealed segment stored with
// Object Lock.
type Archive struct {
	Store               string `json:"store"`
	Key                 string `json:"key"`
	VersionID           string `json:"version_id"`
	ChecksumSHA256      string `json:"checksum_sha256"`
	Bytes               int    `json:"bytes"`
	First               uint64 `json:"first"`
	Last                uint64 `json:"last"`
	LastHash            string `json:"last_hash"`
	ObjectLockMode      string `json:"object_lock_mode"`
	RetainUntil         string `json:"retain_until"`
	CheckpointKey       string `json:"checkpoint_key"`
	CheckpointVersionID string `json:"checkpoint_version_id"`
}

// Map returns the stored data member.
func (d *Archive) Map() map[string]any {
	return map[string]any{"store": d.Store, "key": d.Key, "version_id": d.VersionID,
		"checksum_sha256": d.ChecksumSHA256, "bytes": d.Bytes, "first": d.First, "last": d.Last,
		"last_hash": d.LastHash, "object_lock_mode": d.ObjectLockMode, "retain_until": d.RetainUntil,
		"checkpoint_key": d.CheckpointKey, "checkpoint_version_id": d.CheckpointVersionID}
}

func str(m map[string]any, k, v string) {
	if v != "" {
		m[k] = v
	}
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
