package evidence_test

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/evidence"
	"github.com/uapk-gateway/uapk-proxy/ledger"
)

func TestExportVerifyRoundTripAndDeterminism(t *testing.T) {
	f := newFixture(t)
	s := f.playScenario()
	src := f.dirSource()
	a := export(t, src, f.options())
	b := export(t, src, f.options())
	if !bytes.Equal(a, b) {
		t.Fatal("two exports of the same range differ")
	}
	rep := verify(t, a)
	if rep.FirstSeq != 1 || rep.LastSeq != src.Head().Seq || rep.Approvals != 5 || rep.Statements != 7 || rep.Released != 8 ||
		rep.Checkpoint.Source != "live_head" || rep.Checkpoint.Covers != "last_record" {
		t.Errorf("report %+v", rep)
	}
	files := unzip(t, a)
	for _, id := range []string{s.accrual, s.adjust, s.rejected, s.report, s.override} {
		if !bytes.Contains(files[evidence.FileApprovals], []byte(`"id": "`+id+`"`)) {
			t.Errorf("approvals.json lacks %s", id)
		}
	}
	// Every entry has the same time (the last record's, to the second)
	// and mode, in sorted order.
	zr, _ := zip.NewReader(bytes.NewReader(a), int64(len(a)))
	last := ""
	for _, zf := range zr.File {
		if zf.Name <= last || zf.Mode() != 0o644 || !zf.Modified.Equal(zr.File[0].Modified) {
			t.Errorf("%s: order, mode %v or time %v", zf.Name, zf.Mode(), zf.Modified)
		}
		last = zf.Name
	}
	var anchor evidence.Anchor
	json.Unmarshal(files[evidence.FileAnchor], &anchor)
	if lt, _ := time.Parse(time.RFC3339Nano, anchor.Last.Time); !zr.File[0].Modified.Equal(lt.Truncate(time.Second)) {
		t.Errorf("entry time %v, last record %v", zr.File[0].Modified, anchor.Last.Time)
	}
}

func TestExportOptionsLeaveApprovalsOut(t *testing.T) {
	f := newFixture(t)
	s := f.playScenario()
	src := f.dirSource()
	cases := []struct {
		name                  string
		omitApproved, omitRej bool
		in, out               []string
		note                  string
	}{
		{"rejections left out", false, true, []string{s.accrual, s.adjust, s.report, s.override}, []string{s.rejected}, ""},
		{"approvals left out", true, false, []string{s.rejected}, []string{s.accrual, s.adjust, s.report, s.override}, "complete approvals"},
		{"both left out", true, true, nil, []string{s.accrual, s.rejected}, "complete approvals"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := f.options()
			o.OmitApprovals, o.OmitRejections = c.omitApproved, c.omitRej
			b := export(t, src, o)
			rep := verify(t, b)
			js := unzip(t, b)[evidence.FileApprovals]
			for _, id := range c.in {
				if !bytes.Contains(js, []byte(id)) {
					t.Errorf("%s left out", id)
				}
			}
			for _, id := range c.out {
				if bytes.Contains(js, []byte(`"id": "`+id)) {
					t.Errorf("%s included", id)
				}
			}
			if c.note != "" && !strings.Contains(strings.Join(rep.Notes, "\n"), c.note) {
				t.Errorf("notes %v lack %q", rep.Notes, c.note)
			}
		})
	}
}

func TestExportRangeByTimeAndSeq(t *testing.T) {
	f := newFixture(t)
	f.playScenario()
	src := f.dirSource()
	head := src.Head().Seq
	timeOf := func(seq uint64) time.Time {
		raw, _ := src.Get(seq)
		var r ledger.Record
		json.Unmarshal(raw, &r)
		tm, _ := time.Parse(time.RFC3339Nano, r.Time)
		return tm
	}
	cases := []struct {
		name     string
		r        evidence.Range
		from, to uint64
		err      error
	}{
		{"everything", evidence.Range{}, 1, head, nil},
		{"by seq", evidence.Range{FromSeq: 3, ToSeq: 9}, 3, 9, nil},
		{"to beyond the head", evidence.Range{FromSeq: 5, ToSeq: head + 100}, 5, head, nil},
		{"from a record's time, inclusive", evidence.Range{From: timeOf(4)}, 4, head, nil},
		{"to a record's time, exclusive", evidence.Range{To: timeOf(6)}, 1, 5, nil},
		{"time and seq intersect", evidence.Range{From: timeOf(2), ToSeq: 7}, 2, 7, nil},
		{"before the chain", evidence.Range{To: timeOf(1)}, 0, 0, evidence.ErrEmptyRange},
		{"after the chain", evidence.Range{From: timeOf(head).Add(time.Hour)}, 0, 0, evidence.ErrEmptyRange},
		{"from after to", evidence.Range{From: timeOf(5), To: timeOf(2)}, 0, 0, evidence.ErrBadRange},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := f.options()
			o.Manifests = nil // from the config record's manifest_file
			o.Range = c.r
			b, err := evidence.Prepare(t.Context(), src, o)
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("err %v, want %v", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if s := b.Summary(); s.FromSeq != c.from || s.ToSeq != c.to || s.Records != c.to-c.from+1 {
				t.Fatalf("range %d-%d (%d), want %d-%d", s.FromSeq, s.ToSeq, s.Records, c.from, c.to)
			}
			var buf bytes.Buffer
			if err := b.Write(t.Context(), &buf); err != nil {
				t.Fatal(err)
			}
			verify(t, buf.Bytes())
		})
	}
}

func TestParseTime(t *testing.T) {
	cases := []struct {
		in   string
		end  bool
		want string
		ok   bool
	}{
		{"2026-09-30", false, "2026-09-30T00:00:00Z", true},
		{"2026-09-30", true, "2026-10-01T00:00:00Z", true}, // the last day is included
		{"2026-12-31", true, "2027-01-01T00:00:00Z", true},
		{"2026-09-30T17:00:00Z", true, "2026-09-30T17:00:00Z", true}, // a time is excluded as written
		{"2026-09-30T12:00:00-05:00", false, "2026-09-30T17:00:00Z", true},
		{"2026-09-30T17:00:00.5Z", false, "2026-09-30T17:00:00.5Z", true},
		{"30/09/2026", false, "", false},
		{"yesterday", false, "", false},
		{"", false, "", false},
	}
	for _, c := range cases {
		got, err := evidence.ParseTime(c.in, c.end)
		if (err == nil) != c.ok || c.ok && got.Format(time.RFC3339Nano) != c.want {
			t.Errorf("ParseTime(%q, %v) = %v, %v; want %s", c.in, c.end, got, err, c.want)
		}
		if err != nil && !errors.Is(err, evidence.ErrBadRange) {
			t.Errorf("ParseTime(%q): %v is not ErrBadRange", c.in, err)
		}
	}
	for _, c := range []struct {
		raw string
		seq uint64
		ok  bool
	}{{`12`, 12, true}, {`"2026-01-02"`, 0, true}, {`null`, 0, true}, {`0`, 0, false}, {`-3`, 0, false}, {`1.5`, 0, false}, {`"x"`, 0, false}, {`""`, 0, false}} {
		_, seq, err := evidence.ParseBound(json.RawMessage(c.raw), false)
		if (err == nil) != c.ok || seq != c.seq {
			t.Errorf("ParseBound(%s) = %d, %v", c.raw, seq, err)
		}
	}
}

func TestExportRefusesWhatVerifyWouldReject(t *testing.T) {
	f := newFixture(t)
	f.playScenario()
	src := f.dirSource()
	other := newFixture(t) // same people, other keys
	cases := []struct {
		name string
		edit func(*evidence.Options)
		err  error
	}{
		{"no principals for signed statements", func(o *evidence.Options) { o.Principals = nil }, evidence.ErrNoPrincipals},
		{"principals with other keys", func(o *evidence.Options) { o.Principals = other.principals }, evidence.ErrPrincipalsMismatch},
		{"a manifest not in force", func(o *evidence.Options) {
			o.Manifests = append(o.Manifests, evidence.ManifestFile{Name: "other.json", Data: bytes.Replace(f.manifest, []byte("1.0"), []byte("1.1"), 1)})
		}, evidence.ErrManifestMismatch},
		{"an unknown framework", func(o *evidence.Options) { o.Framework = "HIPAA" }, evidence.ErrFramework},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := f.options()
			c.edit(&o)
			err := evidence.Export(io.Discard, src, o)
			if !errors.Is(err, c.err) {
				t.Fatalf("err %v, want %v", err, c.err)
			}
		})
	}
}

func TestHandlerStreamsALiveBundle(t *testing.T) {
	f := newFixture(t)
	f.playScenario()
	src, err := evidence.NewLive(evidence.LiveConfig{Ledger: f.l, Approvals: f.store, GatewayKey: f.gw, Engine: f.gate.Engine})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(evidence.NewHandler(src, evidence.HandlerOptions{MaxConcurrent: 1}))
	defer srv.Close()
	post := func(body string) (*http.Response, []byte) {
		resp, err := http.Post(srv.URL, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, b := post(`{"from":1,"to":12,"framework":"iso27001"}`)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/zip" ||
		resp.Header.Get("Content-Disposition") != `attachment; filename="evidence-financial-ai-assistant-ISO27001-1-12.zip"` ||
		resp.Header.Get("X-UAPK-Evidence-Range") != "1-12" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	rep := verify(t, b)
	if rep.Framework != "ISO27001" || rep.Records != 12 {
		t.Errorf("report %+v", rep)
	}
	var m evidence.Mapping
	json.Unmarshal(unzip(t, b)[evidence.FileMappingJSON], &m)
	if len(m.Controls) != 2 || m.Controls[0].ID != "ISO27001-A.9" {
		t.Errorf("ISO27001 bundle maps %d controls", len(m.Controls))
	}
	now := time.Now().UTC()
	for _, c := range []struct {
		method, body string
		status       int
		code         string
	}{
		{"POST", `{"from":"` + now.Format(time.DateOnly) + `","to":"` + now.Format(time.DateOnly) + `"}`, 200, ""},
		{"POST", `{"from":"2001-01-01","to":"2001-01-02"}`, 404, "no_records"},
		{"POST", `{"from":1,"to":2,"framework":"PCI"}`, 400, "bad_request"},
		{"POST", `{"from":5,"to":2}`, 400, "bad_request"},
		{"POST", `{"from":1,"colour":"red"}`, 400, "bad_request"},
		{"POST", `not json`, 400, "bad_request"},
		{"GET", ``, 405, "method_not_allowed"},
	} {
		req, _ := http.NewRequest(c.method, srv.URL, strings.NewReader(c.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status || c.code != "" && !bytes.Contains(b, []byte(`"error":"`+c.code+`"`)) {
			t.Errorf("%s %s: %d %.200s, want %d %s", c.method, c.body, resp.StatusCode, b, c.status, c.code)
		}
	}
}

func unzip(t testing.TB, b []byte) map[string][]byte {
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

// TestBundleWithLargeHeldBodiesVerifies: twenty held journal entries with
// 1 MiB bodies of markup (the attack used 10 MiB ones; the size here keeps
// the test quick, the proportion is what matters) export to an
// approvals.json near their size, not six times it, and the bundle verifies.
func TestBundleWithLargeHeldBodiesVerifies(t *testing.T) {
	f := newFixture(t)
	memo := strings.Repeat("<", 1<<20)
	for i := range 20 {
		v := f.call("POST", "/api/v1/journal-entries", fmt.Sprintf(`{"account":"2100","credit":%d,"memo":%q}`, 250000+i, memo),
			onBehalfOf("accountant@corp.example"))
		if v.ApprovalID == "" {
			t.Fatalf("entry %d not held: %+v", i, v)
		}
	}
	src := f.dirSource()
	b := export(t, src, f.options())
	files := unzip(t, b)
	if n := len(files[evidence.FileApprovals]); n > 22<<20 {
		t.Errorf("approvals.json is %d bytes for 20 MiB of held bodies", n)
	}
	verify(t, b)
}
