package evidence

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/uapk-gateway/uapk-proxy/checkpoint"
	"github.com/uapk-gateway/uapk-proxy/internal/approvalstore"
	"github.com/uapk-gateway/uapk-proxy/internal/keys"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
)

const exampleManifest = "../examples/manifests/sox-financial.json"

// chain is a ledger of plain request records, without a gate.
type chain struct {
	t        testing.TB
	l        *ledger.Ledger
	src      Source
	store    *approvalstore.Store
	gw       ed25519.PrivateKey
	manifest []byte
	policy   string
}

func newChain(t testing.TB, dir string) *chain {
	t.Helper()
	c := &chain{t: t}
	var err error
	if c.manifest, err = os.ReadFile(exampleManifest); err != nil {
		t.Fatal(err)
	}
	c.policy = sha256Hex(c.manifest)
	if c.l, err = ledger.Open(filepath.Join(dir, "ledger.db"), ledger.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.l.Close() })
	if c.store, err = approvalstore.Open(c.l); err != nil {
		t.Fatal(err)
	}
	_, c.gw, _ = keys.Generate()
	if c.src, err = NewLive(LiveConfig{Ledger: c.l, Approvals: c.store, GatewayKey: c.gw}); err != nil {
		t.Fatal(err)
	}
	return c
}

// benchEntry is record i of a synthetic day of traffic: reconciliations
// and reads allowed (each with its forward record), denylist hits,
// after-hours filings and unclassified calls denied.
func (c *chain) entry(i int) ledger.Entry {
	data := map[string]any{
		"door": "sidecar", "method": "POST", "url": fmt.Sprintf("http://erp.example.com/api/v1/reconciliations?n=%d", i),
		"body_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "body_size": 412,
		"on_behalf_of": "accountant@corp.example", "justification": "month-end close",
	}
	e := ledger.Entry{Kind: record.KindRequest, App: "financial-ai-assistant", Policy: c.policy, Data: data,
		Digest: "5d41402abc4b2a76b9719d911017c592d41402abc4b2a76b9719d911017c592a"}
	switch i % 8 {
	case 0, 4:
		e.Action, e.Decision, e.Reason = "account_reconciliation", "allow", "auto_approve"
	case 1, 5:
		e = ledger.Entry{Kind: record.KindForward, App: e.App, Action: "account_reconciliation", Decision: "allow", Reason: "forwarded",
			Digest: e.Digest, Policy: c.policy, Data: map[string]any{"request_record": i, "status": 200, "latency_ms": 3,
				"response_sha256": "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae", "response_size": 88}}
	case 2:
		e.Action, e.Decision, e.Reason = "log_delete", "deny", "denylisted"
	case 3:
		e.Action, e.Decision, e.Reason = "financial_report", "deny", "outside_business_hours"
	case 6:
		e.Action, e.Decision, e.Reason = "", "deny", "unclassified"
	case 7:
		e.Action, e.Decision, e.Reason = "ledger_read", "allow", "auto_approve"
	}
	return e
}

func (c *chain) append(n int) {
	c.t.Helper()
	for i := 0; i < n; i++ {
		if _, err := c.l.Append(context.Background(), c.entry(i)); err != nil {
			c.t.Fatal(err)
		}
	}
}

// checkpoint records, as the archiver does, a checkpoint of record seq and
// the archive of segment [first, seq].
func (c *chain) checkpoint(first, seq uint64, note []byte) {
	c.t.Helper()
	raw, err := c.l.Get(seq)
	if err != nil {
		c.t.Fatal(err)
	}
	r, _ := parseRecord(raw)
	if note == nil {
		if note, _, err = signHead("financial-ai-assistant", ledger.Head{Seq: seq, Hash: r.Hash}, c.gw); err != nil {
			c.t.Fatal(err)
		}
	}
	seg := fmt.Sprintf("financial-ai-assistant/segments/%020d-%020d.jsonl", first, seq)
	cp := fmt.Sprintf("financial-ai-assistant/checkpoints/%020d", seq)
	for _, e := range []ledger.Entry{
		{Kind: record.KindCheckpoint, App: "financial-ai-assistant", Policy: c.policy, Data: map[string]any{
			"store": "local:archive/financial-ai-assistant", "origin": "uapk-proxy/financial-ai-assistant", "size": seq, "hash": r.Hash,
			"key": cp, "note": string(note), "segment": seg}},
		{Kind: record.KindArchive, App: "financial-ai-assistant", Policy: c.policy, Data: map[string]any{
			"store": "local:archive/financial-ai-assistant", "key": seg, "checksum_sha256": "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=",
			"bytes": 4096, "first": first, "last": seq, "last_hash": r.Hash, "object_lock_mode": "COMPLIANCE",
			"retain_until": "2033-11-17T16:00:00Z", "checkpoint_key": cp}},
	} {
		if _, err := c.l.Append(context.Background(), e); err != nil {
			c.t.Fatal(err)
		}
	}
}

func (c *chain) opts(r Range) Options {
	return Options{Range: r, Manifests: []ManifestFile{{Name: "sox-financial.json", Data: c.manifest}}}
}

func (c *chain) export(r Range) ([]byte, Summary, error) {
	c.t.Helper()
	b, err := Prepare(context.Background(), c.src, c.opts(r))
	if err != nil {
		return nil, Summary{}, err
	}
	defer b.Close()
	var buf bytes.Buffer
	if err := b.Write(context.Background(), &buf); err != nil {
		return nil, Summary{}, err
	}
	return buf.Bytes(), b.Summary(), nil
}

func TestAnchorOnArchivedCheckpoint(t *testing.T) {
	c := newChain(t, t.TempDir())
	c.append(20)
	c.checkpoint(1, 20, nil) // records 21 (checkpoint) and 22 (archive)
	c.append(5)              // 23-27
	cases := []struct {
		name        string
		r           Range
		source      string
		seq         uint64
		covers      string
		checkpoints int
	}{
		{"ends at the checkpoint", Range{FromSeq: 5, ToSeq: 20}, sourceArchive, 20, coversLastRecord, 0},
		{"ends before it", Range{FromSeq: 5, ToSeq: 17}, sourceArchive, 20, coversBeyondRange, 0},
		{"goes past it: the head is signed", Range{FromSeq: 1, ToSeq: 25}, sourceLiveHead, 27, coversBeyondRange, 1},
		{"the whole chain", Range{}, sourceLiveHead, 27, coversLastRecord, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, s, err := c.export(tc.r)
			if err != nil {
				t.Fatal(err)
			}
			if s.Checkpoint.Source != tc.source || s.Checkpoint.Seq != tc.seq || s.Checkpoint.Covers != tc.covers {
				t.Fatalf("checkpoint %+v", s.Checkpoint)
			}
			rep, err := Verify(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				t.Fatal(err)
			}
			if rep.Checkpoints != tc.checkpoints {
				t.Errorf("%d in-range checkpoints checked, want %d", rep.Checkpoints, tc.checkpoints)
			}
		})
	}
	// The 802 mapping lists the archived segment and its lock.
	b, _, _ := c.export(Range{})
	md := string(unzipAll(t, b)[FileMappingMD])
	for _, w := range []string{"| segments archived with Object Lock | 1 | 22 |", "| signed checkpoints | 1 | 21 |", "COMPLIANCE | 2033-11-17T16:00:00Z"} {
		if !strings.Contains(md, w) {
			t.Errorf("control-mapping.md lacks %q", w)
		}
	}
}

func TestCheckpointThatContradictsTheChainIsRefused(t *testing.T) {
	c := newChain(t, t.TempDir())
	c.append(10)
	_, other, _ := keys.Generate()
	raw, _ := c.l.Get(10)
	r, _ := parseRecord(raw)
	forged, _, _ := signHead("financial-ai-assistant", ledger.Head{Seq: 10, Hash: r.Hash}, other)
	c.checkpoint(1, 10, forged)
	if _, _, err := c.export(Range{ToSeq: 10}); !errors.Is(err, ErrCheckpoint) {
		t.Fatalf("a checkpoint signed by another key: %v", err)
	}
	c2 := newChain(t, t.TempDir())
	c2.append(10)
	lying, _, _ := signHead("financial-ai-assistant", ledger.Head{Seq: 10, Hash: strings.Repeat("ab", 32)}, c2.gw)
	c2.checkpoint(1, 10, lying)
	if _, _, err := c2.export(Range{ToSeq: 10}); !errors.Is(err, ErrCheckpoint) {
		t.Fatalf("a checkpoint of another hash: %v", err)
	}
}

func TestCheckpointNotesAgreeWithTheArchiveWriter(t *testing.T) {
	_, key, _ := keys.Generate()
	h := ledger.Head{Seq: 42, Hash: strings.Repeat("0f", 32)}
	note, origin, err := signHead("financial-ai-assistant", h, key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := checkpoint.Open(note, origin, key.Public().(ed25519.PublicKey))
	if err != nil || got.Size != 42 || got.Hash != h.Hash {
		t.Fatalf("checkpoint.Open of our note: %+v %v", got, err)
	}
	sh, err := openCheckpoint(note, key.Public().(ed25519.PublicKey))
	if err != nil || sh.Seq != 42 || sh.Hash != h.Hash || sh.Origin != origin {
		t.Fatalf("openCheckpoint: %+v %v", sh, err)
	}
	_, other, _ := keys.Generate()
	if _, err := openCheckpoint(note, other.Public().(ed25519.PublicKey)); err == nil || !strings.Contains(err.Error(), "not signed by the gateway key") {
		t.Errorf("another key: %v", err)
	}
	if _, err := openCheckpoint(bytes.Replace(note, []byte("\n42\n"), []byte("\n43\n"), 1), key.Public().(ed25519.PublicKey)); err == nil {
		t.Error("an edited note verified")
	}
}

func TestVerifyZipStructure(t *testing.T) {
	c := newChain(t, t.TempDir())
	c.append(12)
	b, _, err := c.export(Range{})
	if err != nil {
		t.Fatal(err)
	}
	files := unzipAll(t, b)
	cases := []struct {
		name string
		zip  func(w *zip.Writer)
		code string
	}{
		{"directory entries are fine", func(w *zip.Writer) {
			w.Create("keys/")
			writeAll(w, files)
		}, ""},
		{"a path that climbs out", func(w *zip.Writer) {
			writeAll(w, files)
			f, _ := w.Create("../evil")
			f.Write([]byte("x"))
		}, ProblemBadEntry},
		{"an absolute path", func(w *zip.Writer) {
			writeAll(w, files)
			w.Create("/etc/passwd")
		}, ProblemBadEntry},
		{"an entry twice", func(w *zip.Writer) {
			writeAll(w, files)
			f, _ := w.Create(FileReport)
			f.Write([]byte("<p>other</p>"))
		}, ProblemBadEntry},
		{"a missing file", func(w *zip.Writer) {
			for n, d := range files {
				if n != FileApprovals {
					f, _ := w.Create(n)
					f.Write(d)
				}
			}
		}, ProblemMissingFile},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := zip.NewWriter(&buf)
			tc.zip(w)
			w.Close()
			rep, err := Verify(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
			if tc.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || rep.Problem.Code != tc.code {
				t.Fatalf("got %v, want %s", err, tc.code)
			}
		})
	}
}

func writeAll(w *zip.Writer, files map[string][]byte) {
	for _, n := range sortedKeys(files) {
		f, _ := w.Create(n)
		f.Write(files[n])
	}
}

func unzipAll(t testing.TB, b []byte) map[string][]byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, zf := range zr.File {
		rc, _ := zf.Open()
		out[zf.Name], _ = io.ReadAll(rc)
		rc.Close()
	}
	return out
}

func TestSeqListKeepsRunsBounded(t *testing.T) {
	var s seqList
	for _, n := range []uint64{3, 4, 5, 9, 12, 13} {
		s.add(n)
	}
	if got := s.text(10); got != "3-5, 9, 12-13" || s.count != 6 {
		t.Errorf("%q %d", got, s.count)
	}
	var big seqList
	for i := uint64(0); i < 3*maxRuns; i++ {
		big.add(2 * i) // no two adjacent: one run each
	}
	if len(big.runs) != maxRuns || !big.truncated || big.count != 3*maxRuns {
		t.Errorf("runs %d truncated %v count %d", len(big.runs), big.truncated, big.count)
	}
	if got := big.text(2); !strings.HasPrefix(got, "0, 2, … (") || !strings.Contains(got, "the count is complete") {
		t.Errorf("%q", got)
	}
}

func TestSpoolSpillsToATemporaryFile(t *testing.T) {
	var s spool
	defer s.Close()
	chunk := bytes.Repeat([]byte("approval "), 100_000)
	var want bytes.Buffer
	for i := 0; i < 12; i++ { // ~10.8 MB, past spoolMem
		s.Write(chunk)
		want.Write(chunk)
	}
	if s.f == nil {
		t.Fatal("still in memory")
	}
	got, _ := io.ReadAll(s.reader())
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("spooled bytes differ")
	}
}

// The bundle verify spools a 32-byte hash a record, far past spoolMem:
// every one must read back from its offset, also those still in the
// write buffer, and a write the file refused must fail the read, never
// read back as whatever the file holds.
func TestSpoolSmallWritesReadBack(t *testing.T) {
	var s spool
	defer s.Close()
	rec := func(i int) []byte { b := sha256.Sum256([]byte(strconv.Itoa(i))); return b[:] }
	const n = spoolMem/sha256.Size + 10_000
	for i := range n {
		if _, err := s.Write(rec(i)); err != nil {
			t.Fatal(err)
		}
	}
	if s.f == nil {
		t.Fatal("still in memory")
	}
	got := make([]byte, sha256.Size)
	for _, i := range []int{0, 1, spoolMem / sha256.Size, n - 2, n - 1} {
		if err := s.readAt(got, int64(i)*sha256.Size); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if !bytes.Equal(got, rec(i)) {
			t.Fatalf("record %d reads back as %x, want %x", i, got, rec(i))
		}
	}
	all, err := io.ReadAll(s.reader())
	if err != nil || len(all) != n*sha256.Size || !bytes.Equal(all[len(all)-sha256.Size:], rec(n-1)) {
		t.Fatalf("reader: %d bytes, %v", len(all), err)
	}

	// The file goes away under the spool: the next write is buffered, and
	// its read must fail.
	s.f.Close()
	s.Write(rec(n))
	if err := s.readAt(got, int64(n)*sha256.Size); err == nil {
		t.Fatal("a write the file refused read back")
	}
	if _, err := io.ReadAll(s.reader()); err == nil {
		t.Fatal("the reader of a spool whose write failed read to the end")
	}
}

func TestControlSelectorsAreJq(t *testing.T) {
	sp := spec{kind: record.KindRequest, decision: "deny", reasons: []record.Reason{"a", "b"}, dual: no, override: yes}
	want := `select(.kind=="request" and .decision=="deny" and (.reason|IN("a","b")) and ((.action|IN("financial_report"))|not) and .data.approval_kind=="override")`
	if got := sp.jq([]string{"financial_report"}, nil); got != want {
		t.Errorf("\n got %s\nwant %s", got, want)
	}
	sp = spec{kind: record.KindRequest, decision: "allow", change: yes}
	want = `select(.kind=="request" and .decision=="allow" and (.action|IN("merge","merge_payments")))`
	if got := sp.jq(nil, []string{"merge", "merge_payments"}); got != want {
		t.Errorf("\n got %s\nwant %s", got, want)
	}
	if got := sp.jq(nil, nil); got != `select(.kind=="request" and .decision=="allow" and false)` {
		t.Errorf("no change actions: %s", got)
	}
}

// TestControlMappingNamesKnownCodes: every kind, decision and reason the
// control mapping selects records by is one the record package defines, so
// a misspelt or retired code cannot leave a control silently unevidenced.
func TestControlMappingNamesKnownCodes(t *testing.T) {
	decisions := []record.Decision{record.Allow, record.Deny, record.Pending, record.Approve, record.Reject,
		record.Refused, record.Expired, record.Issued}
	for _, c := range controlDefs {
		for _, it := range c.items {
			sp, where := it.spec, c.id+"/"+it.id
			if sp.kind != "" && !sp.kind.Known() {
				t.Errorf("%s: unknown kind %q", where, sp.kind)
			}
			if sp.decision != record.None && !slices.Contains(decisions, sp.decision) {
				t.Errorf("%s: unknown decision %q", where, sp.decision)
			}
			if sp.kind == "" && (sp.decision != record.None || len(sp.reasons) > 0) {
				t.Errorf("%s: a decision or reason without a kind", where)
			}
			for _, r := range sp.reasons {
				if !r.Known() {
					t.Errorf("%s: unknown reason %q", where, r)
				}
			}
		}
	}
	for _, r := range tokenRefusals {
		if !r.Known() {
			t.Errorf("tokenRefusals: unknown reason %q", r)
		}
	}
}

func TestNormalizeFramework(t *testing.T) {
	for in, want := range map[string]string{"": "SOX", "sox": "SOX", "ISO27001": "ISO27001", "iso 27001": "ISO27001", "all": "ALL"} {
		if got, err := NormalizeFramework(in); err != nil || got != want {
			t.Errorf("%q: %q %v", in, got, err)
		}
	}
	if _, err := NormalizeFramework("HIPAA"); !errors.Is(err, ErrFramework) {
		t.Errorf("HIPAA: %v", err)
	}
}
