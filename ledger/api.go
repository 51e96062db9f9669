package ledger

// API skeleton shared by the ledger package and its callers.

import (
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/record"
)

// Record is one ledger record exactly as docs/reference.md#records describes
// it. Every field is always present in the JSON (empty string when not
// applicable, {} for data).
type Record struct {
	V          int             `json:"v"`
	Seq        uint64          `json:"seq"`
	Time       string          `json:"time"` // RFC 3339 UTC, 9 fractional digits
	Kind       record.Kind     `json:"kind"`
	App        string          `json:"app"`
	Action     string          `json:"action"`
	Decision   record.Decision `json:"decision"`
	Reason     record.Reason   `json:"reason"`
	ApprovalID string          `json:"approval_id"`
	Digest     string          `json:"digest"`
	Policy     string          `json:"policy"`
	Data       map[string]any  `json:"data"`
	Prev       string          `json:"prev"`
	Hash       string          `json:"hash"`
}

// Entry is what a caller asks to append; the ledger fills v, seq, time, prev
// and hash.
type Entry struct {
	Kind       record.Kind
	App        string
	Action     string
	Decision   record.Decision
	Reason     record.Reason
	ApprovalID string
	Digest     string
	Policy     string
	// Data values must be strings, bools, integers (int, int64, uint64...),
	// nil, []string, []any or map[string]any of those. Floats are refused
	// (ErrFloat): records carry integers and decimal strings only. The
	// ledger keeps the map (the Record handed back holds it, and a forward
	// record whose commit fails is described from it by the outcome record
	// written later), so the caller must not change it once it is passed.
	Data map[string]any
	// Tx, if set, runs inside the same bbolt write transaction as the record,
	// after the record is put, so that state kept beside the chain (pending
	// approvals, consumed tokens) commits atomically with it. rec is the final
	// record. Returning an error aborts this entry only. It must read and
	// write through tx alone, never call the Ledger's own methods: the
	// writer holds the file's write transaction while it runs, and a read
	// from outside that transaction would wait for it forever.
	Tx func(tx *bolt.Tx, rec *Record) error
}

// Head is the last record of the chain.
type Head struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"` // 64 zero hex digits for an empty chain
	Time string `json:"time"`
}

// Options configures Open.
type Options struct {
	Now      func() time.Time // default time.Now; called only by the writer goroutine
	ReadOnly bool             // for offline verify/export; fails fast if a proxy holds the lock
	// LockTimeout bounds the wait for the file lock (default 1s).
	LockTimeout time.Duration
	// OnCommit, if set, is called by the writer after each group commit
	// with the number of records it made durable (0 on failure), how long
	// the transaction took, and its error. Metrics hang here; it must be quick.
	OnCommit func(records int, took time.Duration, err error)
	// StuckAfter is how long a write transaction may be in flight before
	// Healthy reports the ledger stuck (default 2s): a frozen or hung disk
	// answers no commit, and fails none either.
	StuckAfter time.Duration
	// ProbeEvery is how often, while a commit has failed and none has
	// succeeded since, the ledger tries a small synced write beside the
	// chain to find out whether the disk is writable again (default 1s).
	ProbeEvery time.Duration
	// JournalSize is the size of the journal, DATA/ledger.db-journal,
	// where groups of records become durable with one fdatasync before
	// they are copied into ledger.db (default DefaultJournalSize; at least
	// MinJournalSize). Negative: no journal, every group is a bbolt commit.
	JournalSize int64
}
