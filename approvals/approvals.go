// Package approvals keeps the requests that wait for people to approve them.
//
// Approvals live in the ledger's bbolt file, in their own bucket, and are
// created inside the same write transaction as the ledger record of the
// request that needs them (see ledger.Entry.Tx): a pending approval exists if
// and only if its request record does.
package approvals

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/rules"
)

var (
	bucketName = []byte("approvals")
	// openBucket indexes the approvals still pending (id -> nothing), so that
	// expiry sweeps and the pending list do not scan years of history.
	openBucket = []byte("approvals_open")
)

// Status values of an approval, as the admin API shows them.
const (
	StatusPending  = "pending"
	StatusApproved = "approved"
	StatusRejected = "rejected"
	StatusExpired  = "expired"
)

// ErrNotFound is returned when no approval has the given id.
var ErrNotFound = errors.New("approval not found")

// ErrBadStatus is returned when a status filter is not one of the Status values.
var ErrBadStatus = errors.New("status must be pending, approved, rejected or expired")

// Decision is one approver's signed statement on an approval.
type Decision struct {
	Approver  string `json:"approver"`
	Role      string `json:"role"`
	Decision  string `json:"decision"` // approve | reject
	Reason    string `json:"reason"`
	SignedAt  string `json:"signed_at"`
	Signature string `json:"signature"` // base64 Ed25519
	Record    uint64 `json:"record"`    // ledger seq of the approval record
}

// Approval is a request held until the required people approve it.
type Approval struct {
	ID            string            `json:"id"`
	Kind          string            `json:"kind"` // "request", or "override" for an emergency override
	Status        string            `json:"status"`
	Action        string            `json:"action"`
	App           string            `json:"app"`
	Method        string            `json:"method"`
	URL           string            `json:"url"`
	Headers       map[string]string `json:"headers,omitempty"`
	Body          string            `json:"body"` // the request body as text (bodies are JSON in practice)
	BodyBase64    bool              `json:"body_base64,omitempty"`
	Justification string            `json:"justification"`
	OnBehalfOf    string            `json:"on_behalf_of"`
	Digest        string            `json:"digest"`
	Amount        string            `json:"amount,omitempty"`
	Reason        string            `json:"reason"`
	Requirement   rules.Requirement `json:"requirement"`
	RequiredRoles []string          `json:"required_roles"`
	Decisions     []Decision        `json:"decisions"`
	CreatedAt     time.Time         `json:"created_at"`
	ExpiresAt     time.Time         `json:"expires_at"`
	RequestRecord uint64            `json:"request_record"`

	// Set for overrides: who asked, for how long once approved.
	RequestedBy string `json:"requested_by,omitempty"`
	Duration    string `json:"duration,omitempty"`

	// Set once approved: the capability (or override) token and its id.
	Token     string    `json:"token,omitempty"`
	TokenID   string    `json:"token_id,omitempty"`
	TokenExp  time.Time `json:"token_expires_at,omitzero"`
	Completed time.Time `json:"completed_at,omitzero"`
	// Consumed is the ledger seq of the record that let the approved request
	// through; a request approval is used once.
	Consumed uint64 `json:"consumed_record,omitempty"`
}

// Kinds of approval.
const (
	KindRequest  = "request"
	KindOverride = "override"
)

// Effective returns the approval's status at time now: a pending approval
// past its expiry is expired even before anyone records that.
func (a *Approval) Effective(now time.Time) string {
	if a.Status == StatusPending && !now.Before(a.ExpiresAt) {
		return StatusExpired
	}
	return a.Status
}

// NewID returns a fresh approval id: "apr_" and 26 base32 characters (128 random bits).
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // the OS CSPRNG never fails on Linux
	}
	return "apr_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// ValidID reports whether s has the shape of an approval id, so that junk
// from a client never reaches a bbolt lookup or a log line unchecked.
func ValidID(s string) bool {
	if len(s) != 30 || !strings.HasPrefix(s, "apr_") {
		return false
	}
	for _, c := range s[4:] {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// Store reads and writes approvals in a bbolt file shared with the ledger.
type Store struct {
	db *bolt.DB
}

// Open creates the approvals bucket if needed.
func Open(db *bolt.DB) (*Store, error) {
	if err := db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketName); err != nil {
			return err
		}
		if tx.Bucket(openBucket) != nil {
			return nil
		}
		// First start with the index (or an older file): build it once.
		open, err := tx.CreateBucket(openBucket)
		if err != nil {
			return err
		}
		return tx.Bucket(bucketName).ForEach(func(k, v []byte) error {
			var a Approval
			if err := json.Unmarshal(v, &a); err != nil {
				return err
			}
			if a.Status == StatusPending {
				return open.Put(k, nil)
			}
			return nil
		})
	}); err != nil {
		return nil, fmt.Errorf("create approvals bucket: %w", err)
	}
	return &Store{db: db}, nil
}

// Put writes a inside tx, the caller's write transaction.
func Put(tx *bolt.Tx, a *Approval) error {
	b := tx.Bucket(bucketName)
	if b == nil {
		return errors.New("approvals bucket missing")
	}
	v, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("encode approval %s: %w", a.ID, err)
	}
	if err := b.Put([]byte(a.ID), v); err != nil {
		return err
	}
	open := tx.Bucket(openBucket)
	if open == nil {
		return errors.New("approvals index missing")
	}
	if a.Status == StatusPending {
		return open.Put([]byte(a.ID), nil)
	}
	return open.Delete([]byte(a.ID))
}

// Get returns the approval with the given id.
func (s *Store) Get(id string) (*Approval, error) {
	var a *Approval
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		a, err = GetTx(tx, id)
		return err
	})
	return a, err
}

// GetTx reads an approval inside the caller's transaction.
func GetTx(tx *bolt.Tx, id string) (*Approval, error) {
	b := tx.Bucket(bucketName)
	if b == nil {
		return nil, errors.New("approvals bucket missing")
	}
	v := b.Get([]byte(id))
	if v == nil {
		return nil, ErrNotFound
	}
	a := new(Approval)
	if err := json.Unmarshal(v, a); err != nil { // Unmarshal copies out of the mmap
		return nil, fmt.Errorf("decode approval %s: %w", id, err)
	}
	return a, nil
}

// Due returns the approvals still stored as pending whose expiry has passed
// at now: what an expiry sweep must close. It reads only the pending index.
func (s *Store) Due(now time.Time) ([]*Approval, error) {
	var out []*Approval
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(openBucket).ForEach(func(k, _ []byte) error {
			a, err := GetTx(tx, string(k))
			if err != nil {
				return err
			}
			if a.Status == StatusPending && !now.Before(a.ExpiresAt) {
				out = append(out, a)
			}
			return nil
		})
	})
	return out, err
}

// List returns the approvals whose effective status at now is status (all
// when status is ""), oldest first.
func (s *Store) List(status string, now time.Time) ([]*Approval, error) {
	switch status {
	case "", StatusPending, StatusApproved, StatusRejected, StatusExpired:
	default:
		return nil, ErrBadStatus
	}
	var out []*Approval
	err := s.db.View(func(tx *bolt.Tx) error {
		if status == StatusPending {
			// Only stored-pending approvals can be effectively pending.
			return tx.Bucket(openBucket).ForEach(func(k, _ []byte) error {
				a, err := GetTx(tx, string(k))
				if err != nil {
					return err
				}
				if a.Effective(now) == status {
					out = append(out, a)
				}
				return nil
			})
		}
		return tx.Bucket(bucketName).ForEach(func(_, v []byte) error {
			a := new(Approval)
			if err := json.Unmarshal(v, a); err != nil {
				return err
			}
			if status == "" || a.Effective(now) == status {
				out = append(out, a)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}
