package rules

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strconv"
	"strings"
	"time"
)

// Manifest is a validated policy manifest (docs/reference.md#manifest). It is read-only once
// parsed: an Engine and any number of goroutines may share it.
type Manifest struct {
	AppID   string
	Version string
	// Actions in manifest order, which is match order: the first action with
	// a matching rule classifies a request.
	Actions []*Action
	// Denylist holds tool_restrictions.denylist as written; names that no
	// action defines are kept (and reported by Warnings).
	Denylist []string
	// BusinessHours is tool_restrictions.time_windows.business_hours, nil if
	// not set.
	BusinessHours *Window
	// TunnelHosts holds tool_restrictions.tunnel_hosts as written; see
	// TunnelAllowed.
	TunnelHosts []string
	// ERPHosts holds tool_restrictions.erp_hosts as written: the hosts that
	// match rules without a host apply to when the agent chooses the host
	// (the forward door; see Request.AgentChosenHost). Such a door reaches
	// only hosts named here or by a match rule's host.
	ERPHosts []string
	// DefaultPolicy is DenyPolicy (the default) or RecordAndAllow.
	DefaultPolicy Policy
	// MaxPending bounds the pending approvals one app may hold at once
	// (default DefaultMaxPending): beyond it new ones are refused, so an
	// agent alone cannot grow the store and the ledger without end.
	MaxPending int
	// Override is nil when the manifest has no override section: then no
	// override can be granted.
	Override *Override
	Audit    Audit
	// Hash is the hex SHA-256 of Raw, the exact bytes parsed. Ledger records
	// name the policy in force by it.
	Hash string
	Raw  []byte `json:"-"`

	byName    map[string]*Action
	tunnels   []hostPattern
	erpHosts  []hostPattern
	warnings  []Problem
	hostRules bool // some match rule names a host
	mcpRules  bool // some match rule names mcp_tool
}

// Action is one entry of the manifest's actions object.
type Action struct {
	Name          string
	Description   string
	Policy        Policy
	RolesRequired []string
	RolesAllowed  []string // nil: any caller
	// AmountCap is nil when the action has no amount_cap. It is exact; do not
	// modify it.
	AmountCap         *big.Rat
	BusinessHoursOnly bool
	Match             []MatchRule
	AmountPaths       []string
	// Escalation is the action's escalation as written, nil when absent (then
	// exceeding amount_cap requires one approval by role cfo; see
	// EscalationRequirement).
	Escalation *Escalation
	// CumulativeCap is nil when the action has no cumulative_cap.
	CumulativeCap *CumulativeCap
	Hold          time.Duration // default 0
	ApprovalTTL   time.Duration // default 24h
	// Denylisted is true when tool_restrictions.denylist names this action.
	Denylisted bool
	// Execute is the action's execute template (POST /v1/execute), nil
	// when it has none.
	Execute *Execute

	amount      []amountPath // AmountPaths, compiled
	cap         decimal
	hasCap      bool
	base        Requirement
	esc         Requirement
	allowDetail string
}

func mcpRuleCount(rules []MatchRule) int {
	n := 0
	for _, r := range rules {
		if r.MCPTool != "" {
			n++
		}
	}
	return n
}

// MatchRule is one element of an action's match list.
type MatchRule struct {
	Method string // upper case; "" matches any method
	Host   string // as written; "" matches any host
	Path   string // as written
	// MCPTool, when set, makes Path an MCP endpoint (docs/reference.md#mcp):
	// the rule matches a JSON-RPC tools/call whose params.name is MCPTool.
	MCPTool string

	host  *hostPattern
	path  pathPattern
	index int // position in the match list as written, for messages
}

// Escalation is an action's escalation section.
type Escalation struct {
	Policy        Policy
	RolesRequired []string
}

// CumulativeCap bounds the sum of an action's amounts let through below
// its escalation level within a rolling window: a request that would take
// the sum over Amount gets the escalation, so that splitting one posting
// into many never avoids the senior approval.
type CumulativeCap struct {
	// Amount is exact and positive; do not modify it.
	Amount *big.Rat
	Window time.Duration
	text   string
}

// AmountText is Amount as exact decimal text.
func (c *CumulativeCap) AmountText() string { return c.text }

// Bounds of a cumulative_cap window.
const (
	MinCumulativeWindow = time.Minute
	MaxCumulativeWindow = 31 * 24 * time.Hour
)

// Override is the manifest's override section.
type Override struct {
	RolesRequired []string
	MaxDuration   time.Duration
	// MaxUses, when not 0, is how many requests one override may let
	// through at most: the bound of an override that names none, and the
	// most one may name.
	MaxUses int
}

// MaxOverrideUses is the largest max_uses a manifest or an override may
// name.
const MaxOverrideUses = 1000000

// Audit is the manifest's audit section, with defaults filled in.
type Audit struct {
	RetentionYears int    // default 7
	StorageClass   string // "COMPLIANCE" (default) or "GOVERNANCE"
	Immutable      bool   // default true
}

// Defaults applied when the manifest leaves a value out.
const (
	DefaultApprovalTTL    = 24 * time.Hour
	DefaultRetentionYears = 7
	DefaultMaxPending     = 1000
	DefaultStorageClass   = "COMPLIANCE"
	// DefaultEscalationRole must approve when an amount exceeds amount_cap
	// (or cannot be read) and the action has no escalation section.
	DefaultEscalationRole = "cfo"
)

var knownMethods = map[string]bool{
	"GET": true, "HEAD": true, "POST": true, "PUT": true, "PATCH": true,
	"DELETE": true, "OPTIONS": true, "TRACE": true, "CONNECT": true,
}

// LoadManifest reads and parses the manifest file at path.
func LoadManifest(path string) (*Manifest, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	return ParseManifest(data)
}

// ParseManifest parses a manifest, JSON when its first non-space byte is '{'
// and YAML otherwise. Any problem makes it fail with a *ValidationError
// listing all of them; warnings do not (see Warnings).
func ParseManifest(data []byte) (*Manifest, error) {
	root, probs, err := decodeTree(data)
	if err != nil {
		return nil, err
	}
	c := &checker{probs: probs}
	m := &Manifest{
		DefaultPolicy: DenyPolicy,
		MaxPending:    DefaultMaxPending,
		Audit:         Audit{RetentionYears: DefaultRetentionYears, StorageClass: DefaultStorageClass, Immutable: true},
		byName:        map[string]*Action{},
	}
	c.manifest(m, root)
	if len(c.probs) > 0 {
		return nil, &ValidationError{Problems: c.probs, Warnings: c.warns}
	}
	sum := sha256.Sum256(data)
	m.Hash = hex.EncodeToString(sum[:])
	m.Raw = bytes.Clone(data)
	m.warnings = c.warns
	return m, nil
}

// Warnings lists findings that do not make the manifest invalid but likely
// mean it does not do what its author meant: denylist entries naming no
// action, actions without match rules, amount_cap without amount paths (every
// request is then held as amount_unreadable), unused escalations.
func (m *Manifest) Warnings() []Problem {
	return append([]Problem(nil), m.warnings...)
}

// Action returns the action called name.
func (m *Manifest) Action(name string) (*Action, bool) {
	a, ok := m.byName[name]
	return a, ok
}

// Denylisted reports whether tool_restrictions.denylist names action, whether
// or not the manifest defines it.
func (m *Manifest) Denylisted(action string) bool {
	for _, d := range m.Denylist {
		if d == action {
			return true
		}
	}
	return false
}

// TunnelAllowed reports whether a CONNECT target "host:port" matches
// tool_restrictions.tunnel_hosts. A target without a port never matches.
func (m *Manifest) TunnelAllowed(hostport string) bool {
	h := parseReqHost(hostport, "")
	if !h.ok || h.port == "" {
		return false
	}
	for i := range m.tunnels {
		if m.tunnels[i].match(h) {
			return true
		}
	}
	return false
}

// erpHost reports whether h matches tool_restrictions.erp_hosts.
func (m *Manifest) erpHost(h reqHost) bool {
	for i := range m.erpHosts {
		if m.erpHosts[i].match(h) {
			return true
		}
	}
	return false
}

// namedHost reports whether some match rule's host matches h.
func (m *Manifest) namedHost(h reqHost) bool {
	if !m.hostRules {
		return false
	}
	for _, a := range m.Actions {
		for i := range a.Match {
			if hp := a.Match[i].host; hp != nil && hp.match(h) {
				return true
			}
		}
	}
	return false
}

// Requirement is what the action's approval_policy requires: one slot with
// all roles_required for REQUIRE_APPROVAL, one slot per role for
// DUAL_APPROVAL, and the zero Requirement for AUTO_APPROVE and DENY.
func (a *Action) Requirement() Requirement { return a.base.clone() }

// EscalationRequirement is what an amount over amount_cap (or an unreadable
// amount) requires: the escalation section, or one approval by role cfo.
func (a *Action) EscalationRequirement() Requirement { return a.esc.clone() }

func (q Requirement) clone() Requirement {
	if q.Slots == nil {
		return q
	}
	slots := make([][]string, len(q.Slots))
	for i, s := range q.Slots {
		slots[i] = append([]string(nil), s...)
	}
	return Requirement{Policy: q.Policy, Slots: slots}
}

func requirement(p Policy, roles []string) Requirement {
	switch p {
	case RequireApproval:
		return Requirement{Policy: p, Slots: [][]string{append([]string(nil), roles...)}}
	case DualApproval:
		slots := make([][]string, len(roles))
		for i, r := range roles {
			slots[i] = []string{r}
		}
		return Requirement{Policy: p, Slots: slots}
	}
	return Requirement{}
}

// ---- validation ----

func (c *checker) manifest(m *Manifest, root *value) {
	var windowGiven, erpGiven bool
	var denyPaths, needWindow []string
	var hostless []string // paths of the match rules without a host
	ok := c.fields("", root, map[string]func(string, *value){
		"app_id": func(p string, v *value) {
			if s, ok := c.str(p, v); ok {
				m.AppID = s
				if s == "" {
					c.errf(p, "must not be empty")
				} else if !validName(s) {
					c.errf(p, "app_id %q must be 1 to 64 of [A-Za-z0-9_.-]", s)
				}
			}
		},
		"version": func(p string, v *value) { m.Version, _ = c.str(p, v) },
		"actions": func(p string, v *value) {
			if v.kind != kObject {
				c.typeErr(p, "an object of actions", v)
				return
			}
			if len(v.members) == 0 {
				c.errf(p, "must define at least one action")
			}
			for _, mb := range v.members {
				ap := joinKey(p, mb.key)
				a := c.action(ap, mb.key, mb.val)
				if a == nil {
					continue
				}
				if a.BusinessHoursOnly {
					needWindow = append(needWindow, joinKey(ap, "business_hours_only"))
				}
				m.Actions = append(m.Actions, a)
				m.byName[a.Name] = a
				for _, mr := range a.Match {
					m.hostRules = m.hostRules || mr.host != nil
					m.mcpRules = m.mcpRules || mr.MCPTool != ""
					if mr.host == nil {
						hostless = append(hostless, joinIndex(joinKey(ap, "match"), mr.index))
					}
				}
			}
		},
		"tool_restrictions": func(p string, v *value) {
			c.fields(p, v, map[string]func(string, *value){
				"denylist": func(p string, v *value) {
					list, _ := c.strList(p, v)
					seen := map[string]bool{}
					for i, name := range list {
						ip := joinIndex(p, i)
						switch {
						case name == "":
							c.errf(ip, "empty action name")
						case !validName(name):
							c.errf(ip, "%q is not a valid action name", name)
						case seen[name]:
							c.errf(ip, "duplicate entry %q", name)
						default:
							seen[name] = true
							m.Denylist = append(m.Denylist, name)
							denyPaths = append(denyPaths, ip)
						}
					}
				},
				"time_windows": func(p string, v *value) {
					c.fields(p, v, map[string]func(string, *value){
						"business_hours": func(p string, v *value) {
							windowGiven = true
							s, ok := c.str(p, v)
							if !ok {
								return
							}
							w, err := ParseWindow(s)
							if err != nil {
								c.errf(p, "bad time window %q: %v", s, err)
								return
							}
							m.BusinessHours = w
						},
					})
				},
				"tunnel_hosts": func(p string, v *value) {
					list, _ := c.strList(p, v)
					seen := map[string]bool{}
					for i, s := range list {
						ip := joinIndex(p, i)
						hp, err := compileHostPattern(s, true)
						switch {
						case err != nil:
							c.errf(ip, "bad tunnel host %q: %v (want host:port, e.g. erp.example.com:443)", s, err)
						case seen[strings.ToLower(s)]:
							c.errf(ip, "duplicate entry %q", s)
						default:
							seen[strings.ToLower(s)] = true
							m.TunnelHosts = append(m.TunnelHosts, s)
							m.tunnels = append(m.tunnels, hp)
						}
					}
				},
				"erp_hosts": func(p string, v *value) {
					erpGiven = true
					c.erpHosts(m, p, v)
				},
			})
		},
		"default_policy": func(p string, v *value) {
			s, ok := c.str(p, v)
			if !ok {
				return
			}
			switch Policy(s) {
			case DenyPolicy, RecordAndAllow:
				m.DefaultPolicy = Policy(s)
			default:
				c.errf(p, "unknown default_policy %q (DENY or RECORD_AND_ALLOW)", s)
			}
		},
		"max_pending": func(p string, v *value) {
			if n, ok := c.wholeNumber(p, v, 1000000, ""); ok {
				m.MaxPending = n
			}
		},
		"override": func(p string, v *value) { m.Override = c.override(p, v) },
		"audit":    func(p string, v *value) { c.audit(p, v, &m.Audit) },
	})
	if !ok {
		return
	}
	if root.get("app_id") == nil {
		c.errf("app_id", "required")
	}
	if root.get("actions") == nil {
		c.errf("actions", "required: the manifest must define at least one action")
	}
	// After the walk, so that key order does not matter.
	if !windowGiven {
		for _, p := range needWindow {
			c.errf(p, "needs tool_restrictions.time_windows.business_hours")
		}
	}
	for i, name := range m.Denylist {
		if a, ok := m.byName[name]; ok {
			a.Denylisted = true
			continue
		}
		c.warnf(denyPaths[i], "no action named %q is defined, so this entry matches nothing (such requests are unclassified)", name)
	}
	if len(c.probs) == 0 {
		c.checkExecute(m, "actions")
	}
	if m.mcpRules && m.DefaultPolicy == RecordAndAllow {
		c.warnf("default_policy", "RECORD_AND_ALLOW with mcp_tool rules: an MCP server reachable on a path no mcp_tool rule "+
			"matches has its messages read only where they parse as one plain tools/call (then denied unclassified); "+
			"anything else there is allowed unread. Use DENY, and list the session's paths in an action")
	}
	if len(hostless) > 0 && !erpGiven {
		what, they := "the match rule at "+hostless[0]+" names no host", "it classifies"
		if len(hostless) > 1 {
			what, they = fmt.Sprintf("%d match rules name no host (the first at %s)", len(hostless), hostless[0]), "they classify"
		}
		c.warnf("tool_restrictions.erp_hosts", "not set, and %s: on the forward door %s nothing, and requests to hosts "+
			"that no match rule names are denied unknown_host; list the ERP's host[:port] here (on the sidecar door "+
			"rules without a host apply to --upstream)", what, they)
	}
}

// erpHosts reads tool_restrictions.erp_hosts. The entries decide where an
// agent may send what host-less rules classify, so they are held to more
// than match hosts are: no scheme or path, and a wildcard only in the
// leftmost label with at least two plain labels after it.
func (c *checker) erpHosts(m *Manifest, p string, v *value) {
	list, ok := c.strList(p, v)
	if !ok {
		return
	}
	m.ERPHosts = []string{} // present, even if empty: then host-less rules apply on the sidecar door only
	seen := map[string]bool{}
	for i, s := range list {
		ip := joinIndex(p, i)
		key := strings.ToLower(strings.TrimSuffix(s, "."))
		hp, err := compileERPHost(s)
		switch {
		case err != nil:
			c.errf(ip, "bad ERP host %q: %v (want host[:port], e.g. erp.example.com or erp.example.com:8443)", s, err)
		case seen[key]:
			c.errf(ip, "duplicate entry %q", s)
		default:
			seen[key] = true
			m.ERPHosts = append(m.ERPHosts, s)
			m.erpHosts = append(m.erpHosts, hp)
		}
	}
}

func compileERPHost(s string) (hostPattern, error) {
	switch {
	case strings.Contains(s, "://"):
		return hostPattern{}, errors.New("has a scheme; the scheme is the request's")
	case strings.ContainsAny(s, "/#@"):
		return hostPattern{}, errors.New("has a path, fragment or user; name the host alone")
	}
	hp, err := compileHostPattern(s, false)
	if err != nil {
		return hp, err
	}
	for i, l := range hp.labels {
		if !l.glob {
			continue
		}
		if i > 0 {
			return hp, errors.New("a wildcard is allowed only in the leftmost label")
		}
		if len(hp.labels) < 3 {
			return hp, errors.New("a wildcard label needs at least two plain labels after it (*.erp.example.com, not *.com)")
		}
	}
	return hp, nil
}

func (c *checker) action(p, name string, v *value) *Action {
	a := &Action{Name: name, ApprovalTTL: DefaultApprovalTTL}
	if !validName(name) {
		c.errf(p, "action name %q must be 1 to 64 of [A-Za-z0-9_.-]", name)
	}
	var (
		policyOK, holdOK, ttlOK bool
		rolesReq                *value
	)
	ok := c.fields(p, v, map[string]func(string, *value){
		"description": func(p string, v *value) { a.Description, _ = c.str(p, v) },
		"approval_policy": func(p string, v *value) {
			a.Policy, policyOK = c.policy(p, v, false)
		},
		"roles_required": func(p string, v *value) {
			rolesReq = v
			a.RolesRequired, _ = c.roles(p, v)
		},
		"roles_allowed": func(p string, v *value) {
			a.RolesAllowed, _ = c.roles(p, v)
			if v.kind == kArray && len(v.items) == 0 {
				c.errf(p, "must name at least one role (leave roles_allowed out to allow any caller)")
			}
		},
		"amount_cap": func(p string, v *value) {
			d, ok := c.number(p, v)
			if !ok {
				return
			}
			if d.neg {
				c.errf(p, "must not be negative")
				return
			}
			a.cap, a.hasCap, a.AmountCap = d, true, d.Rat()
		},
		"business_hours_only": func(p string, v *value) { a.BusinessHoursOnly, _ = c.boolean(p, v) },
		"match":               func(p string, v *value) { a.Match = c.matchRules(p, v) },
		"amount": func(p string, v *value) {
			list, ok := c.strList(p, v)
			if ok && len(v.items) == 0 {
				c.errf(p, "must list at least one path (leave amount out if the action has no amount)")
			}
			if len(list) > maxAmountPaths {
				c.errf(p, "lists %d paths; at most %d are read", len(list), maxAmountPaths)
				return
			}
			seen := map[string]bool{}
			for i, s := range list {
				ip := joinIndex(p, i)
				ap, err := compileAmountPath(s)
				if err != nil {
					c.errf(ip, "bad amount path %q: %v", s, err)
					continue
				}
				if seen[s] {
					c.errf(ip, "duplicate amount path %q", s)
					continue
				}
				seen[s] = true
				a.AmountPaths = append(a.AmountPaths, s)
				a.amount = append(a.amount, ap)
			}
		},
		"escalation":     func(p string, v *value) { a.Escalation = c.escalation(p, v) },
		"execute":        func(p string, v *value) { a.Execute = c.execute(p, v) },
		"cumulative_cap": func(p string, v *value) { a.CumulativeCap = c.cumulativeCap(p, v) },
		"hold": func(p string, v *value) {
			d, ok := c.duration(p, v)
			if ok && d < 0 {
				c.errf(p, "must not be negative")
				return
			}
			a.Hold, holdOK = d, ok
		},
		"approval_ttl": func(p string, v *value) {
			d, ok := c.duration(p, v)
			if ok && d <= 0 {
				c.errf(p, "must be positive")
				return
			}
			if ok {
				a.ApprovalTTL, ttlOK = d, true
			}
		},
	})
	if !ok {
		return nil
	}
	if v.get("approval_policy") == nil {
		c.errf(joinKey(p, "approval_policy"), "required (AUTO_APPROVE, REQUIRE_APPROVAL, DUAL_APPROVAL or DENY)")
	}
	if policyOK {
		c.policyRoles(joinKey(p, "roles_required"), a.Policy, rolesReq, a.RolesRequired)
		if (a.Policy == AutoApprove || a.Policy == DenyPolicy) && len(a.RolesRequired) > 0 {
			c.warnf(joinKey(p, "roles_required"), "not used by approval_policy %s", a.Policy)
		}
	}
	if holdOK && (ttlOK || v.get("approval_ttl") == nil) && a.Hold > a.ApprovalTTL {
		c.errf(joinKey(p, "hold"), "hold %s is longer than approval_ttl %s", a.Hold, a.ApprovalTTL)
	}
	if n := mcpRuleCount(a.Match); n > 0 && n < len(a.Match) {
		c.errf(joinKey(p, "match"), "mixes rules naming mcp_tool with rules naming none: an action is MCP tools or plain calls, as its amount paths read params.arguments or the body")
	}
	if mv := v.get("match"); mv == nil || mv.kind == kArray && len(mv.items) == 0 {
		c.warnf(joinKey(p, "match"), "no match rules: no request can be classified as this action")
	}
	if a.hasCap && v.get("amount") == nil {
		c.warnf(joinKey(p, "amount_cap"), "no amount paths: the amount can never be read, so every request is held for escalated approval (amount_unreadable)")
	}
	if v.get("cumulative_cap") != nil && v.get("amount") == nil {
		c.errf(joinKey(p, "cumulative_cap"), "needs amount paths (amount): without them no amount can be summed")
	}
	if v.get("escalation") != nil && v.get("amount_cap") == nil && v.get("cumulative_cap") == nil {
		c.warnf(joinKey(p, "escalation"), "never used: escalation applies only when amount_cap is exceeded")
	}

	a.base = requirement(a.Policy, a.RolesRequired)
	a.esc = requirement(RequireApproval, []string{DefaultEscalationRole})
	if a.Escalation != nil {
		a.esc = requirement(a.Escalation.Policy, a.Escalation.RolesRequired)
		if a.hasCap && len(a.esc.Slots) > 0 && len(a.esc.Slots) < len(a.base.Slots) {
			c.warnf(joinKey(p, "escalation"), "requires fewer approvers (%d) than approval_policy (%d) for amounts over the cap", len(a.esc.Slots), len(a.base.Slots))
		}
	}
	a.allowDetail = fmt.Sprintf("action %s is AUTO_APPROVE", a.Name)
	return a
}

// policy reads an approval_policy value. For escalations only
// REQUIRE_APPROVAL and DUAL_APPROVAL make sense.
func (c *checker) policy(p string, v *value, escalation bool) (Policy, bool) {
	s, ok := c.str(p, v)
	if !ok {
		return "", false
	}
	switch pol := Policy(s); pol {
	case RequireApproval, DualApproval:
		return pol, true
	case AutoApprove, DenyPolicy:
		if !escalation {
			return pol, true
		}
		c.errf(p, "escalation approval_policy must be REQUIRE_APPROVAL or DUAL_APPROVAL, not %s", pol)
	case RecordAndAllow:
		c.errf(p, "RECORD_AND_ALLOW is only valid as default_policy")
	default:
		if escalation {
			c.errf(p, "unknown approval_policy %q (REQUIRE_APPROVAL or DUAL_APPROVAL)", s)
		} else {
			c.errf(p, "unknown approval_policy %q (AUTO_APPROVE, REQUIRE_APPROVAL, DUAL_APPROVAL or DENY)", s)
		}
	}
	return "", false
}

// policyRoles checks roles_required against the policy: REQUIRE_APPROVAL and
// DUAL_APPROVAL need roles, DUAL_APPROVAL two distinct ones. raw is the
// roles_required value (nil when absent); roles its valid distinct roles.
func (c *checker) policyRoles(p string, pol Policy, raw *value, roles []string) {
	if pol != RequireApproval && pol != DualApproval {
		return
	}
	if raw == nil || raw.kind == kArray && len(raw.items) == 0 {
		c.errf(p, "required: %s needs at least one role", pol)
		return
	}
	if raw.kind == kArray && pol == DualApproval && len(roles) < 2 {
		c.errf(p, "DUAL_APPROVAL needs at least two distinct roles")
	}
}

func (c *checker) escalation(p string, v *value) *Escalation {
	e := &Escalation{}
	var policyOK bool
	var rolesReq *value
	ok := c.fields(p, v, map[string]func(string, *value){
		"approval_policy": func(p string, v *value) { e.Policy, policyOK = c.policy(p, v, true) },
		"roles_required": func(p string, v *value) {
			rolesReq = v
			e.RolesRequired, _ = c.roles(p, v)
		},
	})
	if !ok {
		return nil
	}
	if v.get("approval_policy") == nil {
		c.errf(joinKey(p, "approval_policy"), "required (REQUIRE_APPROVAL or DUAL_APPROVAL)")
	}
	switch {
	case rolesReq == nil || rolesReq.kind == kArray && len(rolesReq.items) == 0:
		c.errf(joinKey(p, "roles_required"), "required: an escalation needs at least one role")
	case policyOK:
		c.policyRoles(joinKey(p, "roles_required"), e.Policy, rolesReq, e.RolesRequired)
	}
	return e
}

func (c *checker) cumulativeCap(p string, v *value) *CumulativeCap {
	cc := &CumulativeCap{}
	var amountOK, windowOK bool
	ok := c.fields(p, v, map[string]func(string, *value){
		"amount": func(p string, v *value) {
			d, ok := c.number(p, v)
			if !ok {
				return
			}
			if d.neg || d.Rat().Sign() <= 0 {
				c.errf(p, "must be greater than 0")
				return
			}
			cc.Amount, cc.text, amountOK = d.Rat(), d.String(), true
		},
		"window": func(p string, v *value) {
			d, ok := c.duration(p, v)
			if !ok {
				return
			}
			if d < MinCumulativeWindow || d > MaxCumulativeWindow {
				c.errf(p, "%s is outside 1m to 744h (31 days)", d)
				return
			}
			cc.Window, windowOK = d, true
		},
	})
	if !ok {
		return nil
	}
	for _, k := range []string{"amount", "window"} {
		if v.get(k) == nil {
			c.errf(joinKey(p, k), "required")
		}
	}
	if !amountOK || !windowOK {
		return nil
	}
	return cc
}

func (c *checker) matchRules(p string, v *value) []MatchRule {
	if v.kind != kArray {
		c.typeErr(p, "an array of {method, host, path} objects", v)
		return nil
	}
	var out []MatchRule
	for i, it := range v.items {
		ip := joinIndex(p, i)
		r := MatchRule{index: i}
		good := true
		ok := c.fields(ip, it, map[string]func(string, *value){
			"method": func(p string, v *value) {
				s, ok := c.str(p, v)
				if !ok {
					good = false
					return
				}
				up := strings.ToUpper(s)
				switch {
				case up == "" || up == "*":
				case knownMethods[up]:
					r.Method = up
				default:
					c.errf(p, "unknown method %q", s)
					good = false
				}
			},
			"host": func(p string, v *value) {
				s, ok := c.str(p, v)
				if !ok {
					good = false
					return
				}
				hp, err := compileHostPattern(s, false)
				if err != nil {
					c.errf(p, "bad host pattern %q: %v", s, err)
					good = false
					return
				}
				r.Host, r.host = s, &hp
			},
			"path": func(p string, v *value) {
				s, ok := c.str(p, v)
				if !ok {
					good = false
					return
				}
				pp, err := compilePathPattern(s)
				if err != nil {
					c.errf(p, "bad path pattern %q: %v", s, err)
					good = false
					return
				}
				r.Path, r.path = s, pp
			},
			"mcp_tool": func(p string, v *value) {
				s, ok := c.str(p, v)
				if !ok {
					good = false
					return
				}
				if !validToolName(s) {
					c.errf(p, "tool name %q must be 1 to 128 of [A-Za-z0-9_.-]", s)
					good = false
					return
				}
				r.MCPTool = s
			},
		})
		if !ok {
			continue
		}
		if it.get("path") == nil {
			c.errf(joinKey(ip, "path"), `required (a glob such as "/api/v1/journal-entries/*")`)
			good = false
		}
		if good {
			out = append(out, r)
		}
	}
	return out
}

func (c *checker) override(p string, v *value) *Override {
	o := &Override{}
	ok := c.fields(p, v, map[string]func(string, *value){
		"roles_required": func(p string, v *value) {
			o.RolesRequired, _ = c.roles(p, v)
			if v.kind == kArray && len(v.items) == 0 {
				c.errf(p, "must name at least one role")
			}
		},
		"max_duration": func(p string, v *value) {
			d, ok := c.duration(p, v)
			if ok && d <= 0 {
				c.errf(p, "must be positive")
			}
			o.MaxDuration = d
		},
		"max_uses": func(p string, v *value) {
			if n, ok := c.wholeNumber(p, v, MaxOverrideUses, ""); ok {
				o.MaxUses = n
			}
		},
	})
	if !ok {
		return nil
	}
	if v.get("roles_required") == nil {
		c.errf(joinKey(p, "roles_required"), "required: who may approve an override")
	}
	if v.get("max_duration") == nil {
		c.errf(joinKey(p, "max_duration"), `required (e.g. "8h")`)
	}
	return o
}

// wholeNumber reads a whole number from 1 to max at p; unit says what it
// counts in the error (" of years"), "" for nothing.
func (c *checker) wholeNumber(p string, v *value, max int, unit string) (int, bool) {
	d, ok := c.number(p, v)
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(d.String())
	switch {
	case d.exp < 0:
		c.errf(p, "must be a whole number%s", unit)
	case d.neg || n < 1:
		c.errf(p, "must be at least 1")
	case err != nil || n > max:
		c.errf(p, "must be at most %d", max)
	default:
		return n, true
	}
	return 0, false
}

func (c *checker) audit(p string, v *value, au *Audit) {
	c.fields(p, v, map[string]func(string, *value){
		"retention_years": func(p string, v *value) {
			if n, ok := c.wholeNumber(p, v, 100, " of years"); ok {
				au.RetentionYears = n
			}
		},
		"storage_class": func(p string, v *value) {
			s, ok := c.str(p, v)
			if !ok {
				return
			}
			if s != "COMPLIANCE" && s != "GOVERNANCE" {
				c.errf(p, "unknown storage_class %q (COMPLIANCE or GOVERNANCE)", s)
				return
			}
			au.StorageClass = s
		},
		"immutable": func(p string, v *value) { au.Immutable, _ = c.boolean(p, v) },
	})
}
