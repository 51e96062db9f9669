package archive

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/verifier"
)

// Fleet reads, offline, the archive several proxies share: each writes its
// own chain under PREFIX/APP/INSTANCE/ (archive.instance), and nothing but
// those segments and checkpoints is needed to check it. It is what
// `export --config` reads; it never writes.
type Fleet struct {
	cfg   Config
	store objStore
}

// OpenFleet opens the archive cfg names (App, and S3 or LocalDir; its
// Instance is ignored: a fleet is every instance under PREFIX/APP/).
func OpenFleet(ctx context.Context, cfg Config) (*Fleet, error) {
	cfg.Instance = ""
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	store, err := newStore(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	return &Fleet{cfg: cfg, store: store}, nil
}

// Close releases the store's idle connections.
func (f *Fleet) Close() { closeIdle(f.store) }

// Store names the fleet's archive (s3://BUCKET/PREFIX/APP or
// local:archive/APP).
func (f *Fleet) Store() string { return f.cfg.storeID() }

// Instances lists, sorted, the instances that have a segments/ folder
// under PREFIX/APP/. A proxy archived without an instance
// (PREFIX/APP/segments/ itself) is not one of them.
func (f *Fleet) Instances(ctx context.Context) ([]string, error) {
	base := f.cfg.base()
	if ls, ok := f.store.(*localStore); ok {
		return localInstances(filepath.Join(ls.root, filepath.FromSlash(base)))
	}
	keys, err := f.store.list(ctx, base+"/")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, k := range keys {
		parts := strings.Split(strings.TrimPrefix(k, base+"/"), "/")
		if len(parts) == 3 && parts[1] == "segments" && validInstance(parts[0]) && !slices.Contains(out, parts[0]) {
			out = append(out, parts[0])
		}
	}
	slices.Sort(out)
	return out, nil
}

func localInstances(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() || !validInstance(e.Name()) || e.Name() == "segments" || e.Name() == "checkpoints" {
			continue
		}
		if fi, err := os.Stat(filepath.Join(dir, e.Name(), "segments")); err == nil && fi.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out, nil // ReadDir sorts
}

func validInstance(s string) bool { return appPattern.MatchString(s) && s != "." && s != ".." }

// Instance is what ReadInstance found of one instance's archive.
type Instance struct {
	Name string
	// Report is archive.Verify's, without a local chain: LocalHead is 0
	// and ArchivedSeq the last record archived.
	Report Report
	// Keys are the gateway keys the instance's config records name, in
	// the order they first appear: its checkpoints verified with them.
	Keys []ed25519.PublicKey
	// Heads are the instance's checkpoints, in seq order, each with its
	// signed note exactly as stored.
	Heads []SignedHead
	// Last is the last archived record.
	Last verifier.Head
}

// SignedHead is one checkpoint of an instance: a C2SP signed note by its
// gateway key saying record Seq has hash Hash.
type SignedHead struct {
	Seq  uint64
	Hash string
	Note []byte
}

// ReadInstance checks one instance's archive on its own, as Verify checks
// a proxy's against its ledger but with nothing else to compare with:
// segments contiguous from record 1, one valid chain (package verifier),
// each segment's checkpoint signed by a gateway key a config record before
// it names and naming the segment's last hash, and in S3 every object
// under Object Lock for the manifest's retention (cfg's Mode and
// RetentionYears). fn gets every archived record in order, once the chain
// verifier has taken it. Archive problems are in Instance.Report.Problem;
// the error is for I/O, outages and fn's own.
func (f *Fleet) ReadInstance(ctx context.Context, name string, fn func(seq uint64, raw []byte) error) (Instance, error) {
	if !validInstance(name) {
		return Instance{}, fmt.Errorf("instance %q must be 1 to 64 of [A-Za-z0-9_.-], not . or ..", name)
	}
	cfg := f.cfg
	cfg.Instance = name
	in := Instance{Name: name}
	v := &checker{
		ctx: ctx, cfg: &cfg, store: f.store,
		chain: verifier.New(1, ledger.ZeroHash),
		rep:   Report{Store: cfg.storeID()}, onRecord: fn, learnKeys: true,
		onCheckpoint: func(seq uint64, note []byte) {
			in.Heads = append(in.Heads, SignedHead{Seq: seq, Note: note})
		},
	}
	err := v.run()
	v.rep.OK = v.rep.Problem == nil && err == nil
	in.Report, in.Keys = v.rep, v.keys
	for i, a := range v.rep.Anchors {
		in.Heads[i].Hash = a.Hash
		in.Last = a
	}
	return in, err
}
