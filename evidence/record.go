package evidence

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
)

// record is the part of a ledger record (CONTRACT §5) the bundle needs. The
// chain itself is checked by ledger.Verifier on the raw bytes; this is only
// read after that.
type rec struct {
	Seq        uint64          `json:"seq"`
	Time       string          `json:"time"`
	Kind       record.Kind     `json:"kind"`
	App        string          `json:"app"`
	Action     string          `json:"action"`
	Decision   string          `json:"decision"`
	Reason     string          `json:"reason"`
	ApprovalID string          `json:"approval_id"`
	Digest     string          `json:"digest"`
	Policy     string          `json:"policy"`
	Data       json.RawMessage `json:"data"`
	Prev       string          `json:"prev"`
	Hash       string          `json:"hash"`

	data   *recordData // parsed on first use
	dataOK bool
}

// recordData is the union of the data members the gate and the archiver
// write that the bundle shows. A member of an unexpected type leaves the
// whole data unread (zero) rather than failing: the chain check has already
// vouched for the bytes, and the report must be reproducible from them.
type recordData struct {
	// request, override use
	Method        string   `json:"method"`
	URL           string   `json:"url"`
	Amount        string   `json:"amount"`
	OnBehalfOf    string   `json:"on_behalf_of"`
	Justification string   `json:"justification"`
	RequiredRoles []string `json:"required_roles"`
	TokenID       string   `json:"token_id"`
	Detail        string   `json:"detail"`
	ExpiresAt     string   `json:"expires_at"`
	// approval decisions and refusals
	Approver          string `json:"approver"`
	Role              string `json:"role"`
	SignedAt          string `json:"signed_at"`
	Signature         string `json:"signature"`
	Reason            string `json:"reason"`
	ApprovalKind      string `json:"approval_kind"`
	StatementSHA256   string `json:"statement_sha256"`
	DecisionRequested string `json:"decision_requested"`
	// capability / override tokens
	IssuedAt          string `json:"issued_at"`
	RequestedBy       string `json:"requested_by"`
	Duration          string `json:"duration"`
	OverrideID        string `json:"override_id"`
	OverrideExpiresAt string `json:"override_expires_at"`
	PolicySkipped     string `json:"policy_skipped"`
	// forward: status is a number there and a string in approval records
	Status        json.RawMessage `json:"status"`
	RequestRecord uint64          `json:"request_record"`
	Error         string          `json:"error"`
	// config
	GatewayKey      string `json:"gateway_key"`
	ManifestFile    string `json:"manifest_file"`
	ManifestVersion string `json:"manifest_version"`
	ProxyVersion    string `json:"proxy_version"`
	// archive
	Store          string `json:"store"`
	Key            string `json:"key"`
	VersionID      string `json:"version_id"`
	ChecksumSHA256 string `json:"checksum_sha256"`
	First          uint64 `json:"first"`
	Last           uint64 `json:"last"`
	LastHash       string `json:"last_hash"`
	ObjectLockMode string `json:"object_lock_mode"`
	RetainUntil    string `json:"retain_until"`
	CheckpointKey  string `json:"checkpoint_key"`
	// checkpoint
	Origin  string `json:"origin"`
	Size    uint64 `json:"size"`
	Hash    string `json:"hash"`
	Note    string `json:"note"`
	Segment string `json:"segment"`
}

func parseRecord(raw []byte) (*rec, error) {
	r := new(rec)
	if err := json.Unmarshal(raw, r); err != nil {
		return nil, err
	}
	return r, nil
}

// d returns the record's data, parsed once; never nil.
func (r *rec) d() *recordData {
	if r.data == nil {
		r.data = new(recordData)
		if json.Unmarshal(r.Data, r.data) == nil {
			r.dataOK = true
		} else {
			*r.data = recordData{}
		}
	}
	return r.data
}

// statusText is the forward record's numeric status, or the approval
// record's status word.
func (d *recordData) statusText() string {
	s := strings.TrimSpace(string(d.Status))
	if s == "" || s == "null" {
		return ""
	}
	if u, err := strconv.Unquote(s); err == nil {
		return u
	}
	return s
}

// is reports whether the record has this kind, decision and (if any given)
// one of the reasons.
func (r *rec) is(kind record.Kind, decision string, reasons ...string) bool {
	if r.Kind != kind || (decision != "" && r.Decision != decision) {
		return false
	}
	if len(reasons) == 0 {
		return true
	}
	for _, x := range reasons {
		if r.Reason == x {
			return true
		}
	}
	return false
}

// shortTime shows a record time to the second: 2026-11-17 16:00:05Z.
func shortTime(t string) string {
	if len(t) >= 19 && t[10] == 'T' {
		return t[:10] + " " + t[11:19] + "Z"
	}
	return t
}

// Evidence lists bound memory whatever the range: seqs are kept as runs,
// up to maxRuns per item, detail rows up to maxRows per table; counts are
// always complete.
const (
	maxRuns  = 5000
	maxRows  = 1000
	showRows = 200 // rows and runs shown in report.html and control-mapping.md
)

// seqList is a set of seqs seen in increasing order, kept as runs.
type seqList struct {
	runs      [][2]uint64
	count     uint64
	truncated bool
}

func (s *seqList) add(seq uint64) {
	s.count++
	if s.truncated {
		return
	}
	if n := len(s.runs); n > 0 && s.runs[n-1][1]+1 == seq {
		s.runs[n-1][1] = seq
		return
	}
	if len(s.runs) >= maxRuns {
		s.truncated = true
		return
	}
	s.runs = append(s.runs, [2]uint64{seq, seq})
}

// text renders at most limit runs: "3, 7-9, 12".
func (s *seqList) text(limit int) string {
	var b strings.Builder
	for i, r := range s.runs {
		if i == limit {
			fmt.Fprintf(&b, ", … (%d more runs)", len(s.runs)-limit)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.FormatUint(r[0], 10))
		if r[1] != r[0] {
			b.WriteString("-")
			b.WriteString(strconv.FormatUint(r[1], 10))
		}
	}
	if s.truncated {
		b.WriteString(", … (list cut at " + strconv.Itoa(maxRuns) + " runs; the count is complete)")
	}
	return b.String()
}

// linkCheck re-hashes records as Prepare reads them: seq contiguous, prev
// the previous hash, hash = SHA-256(prev || the record without its hash
// member), times never going back. It relies on the stored bytes being the
// canonical JSON the ledger writes (then removing the one top-level "hash"
// member leaves the canonical form of the rest); Verify runs the full,
// format-checking ledger.Verifier on the bundle, at about ten times the
// cost per record. Any change to a record's bytes changes what is hashed,
// so an edit, a removal or a reorder is caught here all the same.
type linkCheck struct {
	next     uint64
	prev     string
	prevTime string
	buf      []byte
}

var hashMember = []byte(`,"hash":"`)

func (c *linkCheck) add(raw []byte, r *rec) error {
	if r.Seq != c.next {
		return fmt.Errorf("record %d: found record %d where %d should be", c.next, r.Seq, c.next)
	}
	if r.Prev != c.prev {
		return fmt.Errorf("record %d: prev %s is not the previous record's hash %s", r.Seq, r.Prev, c.prev)
	}
	if r.Time < c.prevTime || len(r.Time) != len(ledger.TimeLayout)-5 {
		return fmt.Errorf("record %d: time %q is malformed or before the previous record's", r.Seq, r.Time)
	}
	i := bytes.LastIndex(raw, hashMember)
	end := i + len(hashMember) + 64
	if i < 0 || end >= len(raw) || raw[end] != '"' || string(raw[i+len(hashMember):end]) != r.Hash {
		return fmt.Errorf("record %d: no top-level hash member in canonical form", r.Seq)
	}
	prev, err := hex.DecodeString(r.Prev)
	if err != nil || len(prev) != sha256.Size {
		return fmt.Errorf("record %d: prev is not a hex SHA-256", r.Seq)
	}
	h := sha256.New()
	h.Write(prev)
	h.Write(raw[:i])
	h.Write(raw[end+1:])
	if got := hex.EncodeToString(h.Sum(c.buf[:0])); got != r.Hash {
		return fmt.Errorf("record %d: hash_mismatch: its content hashes to %s, not %s", r.Seq, got, r.Hash)
	}
	c.next, c.prev, c.prevTime = r.Seq+1, r.Hash, r.Time
	return nil
}
