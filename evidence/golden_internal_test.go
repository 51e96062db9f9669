package evidence

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/internal/approvalstore"
	"github.com/uapk-gateway/uapk-proxy/ledger"
)

// goldenChain is newChain with everything that varies from run to run made
// fixed: the gateway key and the ledger's clock. The same records then give
// the same bundle bytes on every run and every version of the exporter.
func goldenChain(t *testing.T, n int) *chain {
	t.Helper()
	c := newChain(t, t.TempDir())
	c.l.Close()
	seed := sha256.Sum256([]byte("uapk-proxy evidence golden bundle"))
	c.gw = ed25519.NewKeyFromSeed(seed[:])
	tick := time.Date(2026, 11, 17, 16, 0, 0, 0, time.UTC)
	var err error
	c.l, err = ledger.Open(filepath.Join(t.TempDir(), "ledger.db"), ledger.Options{Now: func() time.Time {
		tick = tick.Add(1234567 * time.Nanosecond)
		return tick
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.l.Close() })
	if c.store, err = approvalstore.Open(c.l); err != nil {
		t.Fatal(err)
	}
	if c.src, err = NewLive(LiveConfig{Ledger: c.l, Approvals: c.store, GatewayKey: c.gw}); err != nil {
		t.Fatal(err)
	}
	c.append(n)
	c.checkpoint(1, uint64(n), nil)
	c.append(7)
	return c
}

// TestExportGolden pins the bytes of two bundles: the SHA-256 of each was
// taken from the exporter before it read, checked and compressed records in
// parallel, so any change in what the same range gives shows here. The
// records span several DEFLATE windows and more than one read transaction.
func TestExportGolden(t *testing.T) {
	if testing.Short() {
		t.Skip("appends a few thousand fsynced records")
	}
	c := goldenChain(t, 2500)
	for _, tt := range []struct {
		name string
		r    Range
		want string
	}{
		{"whole chain", Range{}, goldenWhole},
		{"from the middle", Range{FromSeq: 700, ToSeq: 2400}, goldenMiddle},
	} {
		t.Run(tt.name, func(t *testing.T) {
			zb, _, err := c.export(tt.r)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(zb)
			if got := hex.EncodeToString(sum[:]); got != tt.want {
				t.Errorf("bundle SHA-256 %s, want %s", got, tt.want)
			}
			if rep, err := Verify(bytes.NewReader(zb), int64(len(zb))); err != nil || !rep.OK {
				t.Fatalf("verify: %v", err)
			}
			again, _, err := c.export(tt.r)
			if err != nil || !bytes.Equal(again, zb) {
				t.Fatalf("a second export differs (%v)", err)
			}
		})
	}
}

const (
	goldenWhole  = "2515bd84e59f93eef7398a33287760e71f30144906d631b88d87c8ceb7681868"
	goldenMiddle = "35986435d869a32fa4ed6c59759197728977361ce3d961449a1b5294c1f4553e"
)

// TestDeflatedEntryIsCreatesEntry: an entry copied in precompressed
// (deflated, zipWriter.raw) is byte for byte the entry zipWriter.create
// writes from the same data, whatever its size; and a bundle whose
// records.jsonl takes the other path (read again and compressed by Write,
// as one over 4 GiB does) is the same bundle.
func TestDeflatedEntryIsCreatesEntry(t *testing.T) {
	mod := time.Date(2026, 11, 17, 16, 0, 5, 0, time.UTC)
	line := []byte(`{"action":"account_reconciliation","data":{"n":1},"seq":1}` + "\n")
	for _, n := range []int{0, 1, 100, 5000, 40000} {
		var data []byte
		for i := range n {
			data = append(data, bytes.Replace(line, []byte(`"n":1`), fmt.Appendf(nil, `"n":%d`, i*7919%1000), 1)...)
		}
		var a, b bytes.Buffer
		za := newZipWriter(&a, mod)
		w, err := za.create(FileRecords)
		if err != nil {
			t.Fatal(err)
		}
		for p := data; len(p) > 0; p = p[min(len(p), 333):] {
			w.Write(p[:min(len(p), 333)]) // in pieces, as records come
		}
		za.close()
		d := newDeflated()
		d.Write(data)
		if err := d.end(); err != nil {
			t.Fatal(err)
		}
		zb := newZipWriter(&b, mod)
		if err := zb.raw(FileRecords, d); err != nil {
			t.Fatal(err)
		}
		zb.close()
		d.Close()
		if !bytes.Equal(a.Bytes(), b.Bytes()) {
			t.Fatalf("%d lines: precompressed entry differs from the one create writes", n)
		}
	}
	if testing.Short() {
		return
	}
	c := goldenChain(t, 300)
	fast, _, err := c.export(Range{FromSeq: 5})
	if err != nil {
		t.Fatal(err)
	}
	recompressRecords = true
	defer func() { recompressRecords = false }()
	slow, _, err := c.export(Range{FromSeq: 5})
	if err != nil || !bytes.Equal(fast, slow) {
		t.Fatalf("the bundle differs when Write compresses records.jsonl itself (%v)", err)
	}
}

// TestPrepareNamesTheFirstBrokenRecord: Prepare, which parses and hashes
// records on every core, refuses a damaged chain with the error a check of
// the records one by one gives: the first damaged record's, whichever batch
// it and the later ones fall in.
func TestPrepareNamesTheFirstBrokenRecord(t *testing.T) {
	if testing.Short() {
		t.Skip("appends a few hundred fsynced records")
	}
	damages := map[string]map[uint64]func([]byte) []byte{
		"edited":            {300: edit(`"seq":300,`, `"seq":300 ,`), 500: edit(`"seq":500,`, `"seq":501,`)},
		"not JSON":          {257: func([]byte) []byte { return []byte("{") }},
		"hash cut":          {511: edit(`,"hash":"`, `,"hash":"0`)},
		"edited, then gone": {400: edit(`"door":"sidecar"`, `"door":"fatcar"`), 401: nil},
	}
	for name, damage := range damages {
		t.Run(name, func(t *testing.T) {
			c := goldenChain(t, 600)
			path := c.l.DB().Path()
			c.l.Close()
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = db.Update(func(tx *bolt.Tx) error {
				b := tx.Bucket([]byte(ledger.BucketRecords))
				for seq, f := range damage {
					k := binary.BigEndian.AppendUint64(nil, seq)
					if f == nil {
						if err := b.Delete(k); err != nil {
							return err
						}
						continue
					}
					if err := b.Put(k, f(bytes.Clone(b.Get(k)))); err != nil {
						return err
					}
				}
				return nil
			})
			db.Close()
			if err != nil {
				t.Fatal(err)
			}
			if c.l, err = ledger.Open(path, ledger.Options{ReadOnly: true}); err != nil {
				t.Fatal(err)
			}
			if c.src, err = NewLive(LiveConfig{Ledger: c.l, Approvals: c.store, GatewayKey: c.gw}); err != nil {
				t.Fatal(err)
			}
			// One by one, as Prepare did before it used every core.
			v := &linkCheck{next: 1, prev: strings.Repeat("0", 64)}
			want := c.src.Range(1, 600, func(seq uint64, raw []byte) error {
				r, err := parseRecord(raw)
				if err != nil {
					return fmt.Errorf("%w: record %d: %v", ErrChainBroken, seq, err)
				}
				if err := v.add(raw, r); err != nil {
					return fmt.Errorf("%w: %v (run uapk-proxy verify --data-dir for the whole chain)", ErrChainBroken, err)
				}
				return nil
			})
			_, err = Prepare(context.Background(), c.src, c.opts(Range{FromSeq: 1, ToSeq: 600}))
			if want == nil || err == nil || err.Error() != want.Error() || !errors.Is(err, ErrChainBroken) {
				t.Fatalf("Prepare: %v\nwant: %v", err, want)
			}
		})
	}
}

func edit(old, new string) func([]byte) []byte {
	return func(b []byte) []byte {
		if !bytes.Contains(b, []byte(old)) {
			panic("no " + old)
		}
		return bytes.Replace(b, []byte(old), []byte(new), 1)
	}
}
