package evidence

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/internal/approvalstore"
	"github.com/uapk-gateway/uapk-proxy/internal/keys"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// Source is what an export reads: the chain, the approvals kept beside it,
// the gateway key, and whatever it knows of principals, manifests and
// checkpoints. Dir reads a stopped proxy's data directory; NewLive wraps a
// running one. Range must read in bounded transactions (ledger.Range does):
// an export of millions of records must never hold one read transaction
// long, or the writer's remap, and so every request, would wait on it.
type Source interface {
	// Head is the chain's last record now.
	Head() ledger.Head
	// Get returns the stored bytes of one record.
	Get(seq uint64) ([]byte, error)
	// Range calls fn for each stored record in [from, to], outside any
	// transaction (see ledger.Ledger.Range).
	Range(from, to uint64, fn func(seq uint64, raw []byte) error) error
	// Approval returns the approval with this id, or an error wrapping
	// approvals.ErrNotFound.
	Approval(id string) (*approvals.Approval, error)
	// GatewayKey signs SHA256SUMS and, when no archived checkpoint covers
	// the range, the head.
	GatewayKey() ed25519.PrivateKey
	// Principals in force now, nil if unknown: they stand in for
	// records whose config record names none, unless Options.Principals
	// is given.
	Principals() *rules.Principals
	// Manifest returns the manifest bytes whose SHA-256 is policy, if this
	// source has them (Options.Manifests are tried first).
	Manifest(policy string) ([]byte, bool)
	// Checkpoints gives the archive's signed checkpoints; nil for none.
	Checkpoints() Checkpoints
}

// Checkpoints finds the archive's signed checkpoints (C2SP tlog-checkpoint
// in a signed note by the gateway key, as checkpoint.Sign writes
// them: origin, last seq, base64 of that record's hash).
type Checkpoints interface {
	// Latest returns the most recent checkpoint if it covers atLeastSeq
	// (its seq is at least that); ok is false when there is none or it
	// does not reach that far.
	Latest(atLeastSeq uint64) (note []byte, ok bool, err error)
}

// ChainCheckpoints finds checkpoints in the chain itself: the archiver
// records every checkpoint it uploads as a checkpoint record whose data
// holds the signed note, so the latest checkpoint is the last checkpoint
// record. It looks back from the head over at most scan records (0: 50,000,
// five default segments); a proxy without an archive has none, and the
// export then signs the head itself.
func ChainCheckpoints(src interface {
	Head() ledger.Head
	Get(seq uint64) ([]byte, error)
}, scan uint64) Checkpoints {
	if scan == 0 {
		scan = 50000
	}
	return chainCheckpoints{src: src, scan: scan}
}

type chainCheckpoints struct {
	src interface {
		Head() ledger.Head
		Get(seq uint64) ([]byte, error)
	}
	scan uint64
}

var kindCheckpoint = []byte(`"kind":"` + record.KindCheckpoint + `"`)

func (c chainCheckpoints) Latest(atLeast uint64) ([]byte, bool, error) {
	head := c.src.Head().Seq
	// A checkpoint record always comes after the records it covers, so
	// none at or below atLeast can cover it.
	for seq := head; seq > atLeast && head-seq < c.scan; seq-- {
		raw, err := c.src.Get(seq)
		if errors.Is(err, ledger.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, false, err
		}
		if !bytes.Contains(raw, kindCheckpoint) {
			continue
		}
		var r struct {
			Kind record.Kind       `json:"kind"`
			Data record.Checkpoint `json:"data"`
		}
		if json.Unmarshal(raw, &r) != nil || r.Kind != record.KindCheckpoint || r.Data.Note == "" {
			continue
		}
		// The newest checkpoint is the furthest one: if it falls short,
		// every older one does too.
		return []byte(r.Data.Note), r.Data.Size >= atLeast, nil
	}
	return nil, false, nil
}

// Dir is a stopped proxy's data directory, read offline: DATA/ledger.db
// opened read-only (it fails fast, wrapping ledger.ErrLocked, while a proxy
// runs on it), approvals from the same file, DATA/gateway.key.
type Dir struct {
	path string
	l    *ledger.Ledger
	key  ed25519.PrivateKey
}

// OpenDir opens the data directory dir. Close it when done.
func OpenDir(dir string) (*Dir, error) {
	key, err := keys.LoadPrivateFile(filepath.Join(dir, "gateway.key"))
	if err != nil {
		return nil, fmt.Errorf("gateway key: %w", err)
	}
	l, err := ledger.Open(filepath.Join(dir, "ledger.db"), ledger.Options{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	return &Dir{path: dir, l: l, key: key}, nil
}

// Close closes the ledger file.
func (d *Dir) Close() error { return d.l.Close() }

func (d *Dir) Head() ledger.Head              { return d.l.Head() }
func (d *Dir) Get(seq uint64) ([]byte, error) { return d.l.Get(seq) }
func (d *Dir) GatewayKey() ed25519.PrivateKey { return d.key }
func (d *Dir) Principals() *rules.Principals  { return nil }
func (d *Dir) Manifest(string) ([]byte, bool) { return nil, false }
func (d *Dir) Checkpoints() Checkpoints       { return ChainCheckpoints(d.l, 0) }
func (d *Dir) Approval(id string) (*approvals.Approval, error) {
	return approvalstore.Reader(d.l).Get(id)
}

func (d *Dir) Range(from, to uint64, fn func(uint64, []byte) error) error {
	return d.l.Range(from, to, fn)
}

// LiveConfig wires a running proxy into a Source.
type LiveConfig struct {
	Ledger    *ledger.Ledger
	Approvals interface {
		Get(id string) (*approvals.Approval, error)
	}
	GatewayKey ed25519.PrivateKey
	// Engine returns the rules engine in force (gate.Gate.Engine): its
	// principals and manifest go into the bundle.
	Engine func() *rules.Engine
	// Checkpoints, nil: ChainCheckpoints over the ledger.
	Checkpoints Checkpoints
}

// NewLive returns the Source of a running proxy.
func NewLive(cfg LiveConfig) (Source, error) {
	if cfg.Ledger == nil || cfg.Approvals == nil || len(cfg.GatewayKey) != ed25519.PrivateKeySize {
		return nil, errors.New("evidence: a live source needs the ledger, the approval store and the gateway key")
	}
	if cfg.Checkpoints == nil {
		cfg.Checkpoints = ChainCheckpoints(cfg.Ledger, 0)
	}
	return &live{cfg: cfg}, nil
}

type live struct{ cfg LiveConfig }

func (s *live) Head() ledger.Head              { return s.cfg.Ledger.Head() }
func (s *live) Get(seq uint64) ([]byte, error) { return s.cfg.Ledger.Get(seq) }
func (s *live) GatewayKey() ed25519.PrivateKey { return s.cfg.GatewayKey }
func (s *live) Checkpoints() Checkpoints       { return s.cfg.Checkpoints }
func (s *live) Approval(id string) (*approvals.Approval, error) {
	return s.cfg.Approvals.Get(id)
}

func (s *live) Range(from, to uint64, fn func(uint64, []byte) error) error {
	return s.cfg.Ledger.Range(from, to, fn)
}

func (s *live) Principals() *rules.Principals {
	if s.cfg.Engine == nil || s.cfg.Engine() == nil {
		return nil
	}
	return s.cfg.Engine().Principals()
}

func (s *live) Manifest(policy string) ([]byte, bool) {
	if s.cfg.Engine == nil || s.cfg.Engine() == nil {
		return nil, false
	}
	if m := s.cfg.Engine().Manifest(); m != nil && m.Hash == policy {
		return m.Raw, true
	}
	return nil, false
}
