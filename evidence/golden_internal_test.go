package evidence

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"testing"
	"time"

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
