package verifier

import (
	"bytes"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/gowebpki/jcs"
	"github.com/uapk-gateway/uapk-proxy/ledger"
)

func TestVerifyRecords(t *testing.T) {
	kat := readKAT(t)
	tests := []struct {
		name      string
		records   [][]byte
		startPrev string
		startSeq  uint64
		wantOK    bool
		wantN     uint64
		wantSeq   uint64
		reason    string
	}{
		{name: "whole chain", records: kat, wantOK: true, wantN: 2},
		{name: "empty", wantOK: true},
		{name: "from the middle", records: kat[1:], startPrev: katHash1, startSeq: 2, wantOK: true, wantN: 1},
		{name: "from the middle, wrong anchor", records: kat[1:], startPrev: katHash2, startSeq: 2, wantSeq: 2, reason: ReasonPrevMismatch},
		{name: "first record missing", records: kat[1:], wantSeq: 1, reason: ReasonSeqGap},
		{name: "repeated record", records: [][]byte{kat[0], kat[0]}, wantN: 1, wantSeq: 2, reason: ReasonSeqOrder},
		{name: "reversed", records: [][]byte{kat[1], kat[0]}, wantSeq: 1, reason: ReasonSeqGap},
		{name: "trailing newline", records: [][]byte{append(bytes.Clone(kat[0]), '\n')}, wantSeq: 1, reason: ReasonBadRecord},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := VerifyRecords(stream(tt.records...), tt.startPrev, tt.startSeq)
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK != tt.wantOK || rep.Records != tt.wantN {
				t.Fatalf("report %+v problem %+v", rep, rep.Problem)
			}
			if tt.wantOK {
				return
			}
			if rep.Problem.Seq != tt.wantSeq || rep.Problem.Reason != tt.reason {
				t.Fatalf("problem %+v, want %d %s", rep.Problem, tt.wantSeq, tt.reason)
			}
		})
	}

	errRead := errors.New("unexpected EOF in zip")
	n := 0
	rep, err := VerifyRecords(func() ([]byte, bool, error) {
		if n++; n == 1 {
			return kat[0], true, nil
		}
		return nil, false, errRead
	}, "", 0)
	if !errors.Is(err, errRead) || rep.Records != 1 {
		t.Fatalf("read error: %v, %+v", err, rep)
	}
}

func TestVerifierAnchors(t *testing.T) {
	kat := readKAT(t)
	tests := []struct {
		name    string
		anchors []Head
		records [][]byte
		wantSeq uint64
		reason  string
	}{
		{"matching anchor", []Head{{Seq: 2, Hash: katHash2}}, kat, 0, ""},
		{"anchor before the start is ignored", []Head{{Seq: 0, Hash: katHash2}}, kat, 0, ""},
		{"rewritten history", []Head{{Seq: 1, Hash: katHash2}}, kat, 1, ReasonAnchorMismatch},
		{"chain stops short", []Head{{Seq: 1, Hash: katHash1}, {Seq: 5, Hash: katHash1}}, kat, 3, ReasonTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := New(1, "", tt.anchors...)
			for _, r := range tt.records {
				v.Add(r)
			}
			rep := v.Finish()
			if tt.reason == "" {
				if !rep.OK {
					t.Fatalf("problem %+v", rep.Problem)
				}
				return
			}
			if rep.OK || rep.Problem.Seq != tt.wantSeq || rep.Problem.Reason != tt.reason {
				t.Fatalf("report %+v problem %+v, want %d %s", rep, rep.Problem, tt.wantSeq, tt.reason)
			}
		})
	}
}

// TestParseRecordRejects feeds variants of the first known-answer record,
// each wrong in one way, and expects bad_record with a telling detail.
func TestParseRecordRejects(t *testing.T) {
	good := string(readKAT(t)[0])
	canon := func(s string) []byte {
		b, err := jcs.Transform([]byte(s))
		if err != nil {
			t.Fatalf("variant is not JSON: %v", err)
		}
		return b
	}
	edit := func(old, new string) []byte {
		if !strings.Contains(good, old) {
			t.Fatalf("no %q in the record", old)
		}
		return canon(strings.Replace(good, old, new, 1))
	}
	tests := []struct {
		name   string
		raw    []byte
		detail string
	}{
		{"empty", []byte{}, "not valid JSON"},
		{"null", []byte("null"), "not a JSON object"},
		{"array", []byte("[1]"), "not a JSON object"},
		{"string", []byte(`"x"`), "not a JSON object"},
		{"duplicate key", []byte(strings.Replace(good, `"app":"erp-agent"`, `"app":"erp-agent","app":"x"`, 1)), "Duplicate key"},
		{"invalid utf-8", []byte(strings.Replace(good, "€", "\xff", 1)), "not valid JSON"},
		{"whitespace", []byte(" " + good), "canonical"},
		{"escaped slash", []byte(strings.Replace(good, "erp-agent", `erp\/agent`, 1)), "canonical"},
		{"missing field", edit(`"reason":"auto_approve",`, ""), `missing field "reason"`},
		{"extra field", edit(`"v":1}`, `"v":1,"zz":1,"extra":2}`), `unknown field "extra"`},
		{"v 2", edit(`"v":1}`, `"v":2}`), "v is 2"},
		{"v string", edit(`"v":1}`, `"v":"1"}`), `v is "1"`},
		{"seq 0", edit(`"seq":1,`, `"seq":0,`), "out of range"},
		{"seq negative", edit(`"seq":1,`, `"seq":-1,`), "out of range"},
		{"seq float", edit(`"seq":1,`, `"seq":1.5,`), "not an integer"},
		{"seq string", edit(`"seq":1,`, `"seq":"1",`), "not an integer"},
		{"seq too big", edit(`"seq":1,`, `"seq":9007199254740994,`), "out of range"},
		{"app number", edit(`"app":"erp-agent"`, `"app":7`), `field "app": not a string`},
		{"digest null", edit(`"digest":"`+katDigest+`"`, `"digest":null`), `field "digest": not a string`},
		{"unknown kind", edit(`"kind":"request"`, `"kind":"Request"`), "unknown kind"},
		{"time without nanoseconds", edit(`14:30:00.123456789Z`, `14:30:00Z`), `field "time"`},
		{"time not utc", edit(`14:30:00.123456789Z`, `15:30:00.123456789+01:00`), `field "time"`},
		{"time garbage", edit(`2026-01-15T14:30:00.123456789Z`, `yesterday`), `field "time"`},
		{"prev upper case", edit(zeroHash, strings.Repeat("0", 63)+"A"), `field "prev"`},
		{"prev short", edit(zeroHash, "00"), `field "prev"`},
		{"hash not hex", edit(katHash1, strings.Repeat("g", 64)), `field "hash"`},
		{"data array", edit(`"data":{"amount":"1250.00","currency":"USD","lines":2,"memo":"accrual <Q1> & €"}`, `"data":[]`), `field "data": not an object`},
		{"data float", edit(`"lines":2`, `"lines":2.5`), "not an integer"},
		{"data exponent", edit(`"lines":2`, `"lines":1e300`), "not an integer"},
		{"data big int", edit(`"lines":2`, `"lines":-9007199254740994`), "outside"},
		{"nested float", edit(`"lines":2`, `"lines":[{"a":[0.1]}]`), "not an integer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := New(1, "")
			if v.Add(tt.raw) {
				t.Fatal("accepted")
			}
			rep := v.Finish()
			if rep.Problem.Reason != ReasonBadRecord || rep.Problem.Seq != 1 {
				t.Fatalf("problem %+v, want bad_record at 1", rep.Problem)
			}
			if !strings.Contains(rep.Problem.Detail, tt.detail) {
				t.Fatalf("detail %q does not mention %q", rep.Problem.Detail, tt.detail)
			}
		})
	}
}

// TestVerifyRecordsInBatches holds VerifyRecords, which checks records on
// every core, to one Verifier fed the same records in order: same report,
// same problem and words, wherever the damage falls against batch joins.
func TestVerifyRecordsInBatches(t *testing.T) {
	l := openAt(t, filepath.Join(t.TempDir(), "ledger.db"), ledger.Options{})
	const n = 40
	appendN(t, l, n)
	var recs [][]byte
	if err := l.Range(1, n, func(_ uint64, raw []byte) error { recs = append(recs, raw); return nil }); err != nil {
		t.Fatal(err)
	}
	edits := map[string]func(r [][]byte) [][]byte{
		"intact":      func(r [][]byte) [][]byte { return r },
		"edited at 7": func(r [][]byte) [][]byte { r[6] = bytes.Replace(r[6], []byte(`"n":6`), []byte(`"n":7`), 1); return r },
		"not canonical 9": func(r [][]byte) [][]byte {
			r[8] = bytes.Replace(r[8], []byte(`"seq":9`), []byte(`"seq": 9`), 1)
			return r
		},
		"removed 13":     func(r [][]byte) [][]byte { return append(r[:12:12], r[13:]...) },
		"swapped 20, 21": func(r [][]byte) [][]byte { r[19], r[20] = r[20], r[19]; return r },
		"repeated 30":    func(r [][]byte) [][]byte { return append(append(r[:30:30], r[29]), r[30:]...) },
		"garbage at 40":  func(r [][]byte) [][]byte { r[39] = []byte("{"); return r },
	}
	for name, edit := range edits {
		t.Run(name, func(t *testing.T) {
			var rs [][]byte
			for _, r := range recs {
				rs = append(rs, bytes.Clone(r))
			}
			rs = edit(rs)
			v := New(1, "")
			for _, r := range rs {
				if !v.Add(r) {
					break
				}
			}
			want := v.Finish()
			for _, size := range []int{1, 3, 256} {
				withBatch(t, size)
				// next hands out one buffer, overwritten each call.
				var buf []byte
				i := 0
				got, err := VerifyRecords(func() ([]byte, bool, error) {
					if i == len(rs) {
						return nil, false, nil
					}
					buf = append(buf[:0], rs[i]...)
					i++
					return buf, true, nil
				}, "", 1)
				if err != nil || !reflect.DeepEqual(got, want) {
					t.Fatalf("batches of %d: %+v %+v (%v), want %+v %+v", size, got, got.Problem, err, want, want.Problem)
				}
			}
			if (name == "intact") != want.OK || name == "intact" && want.Records != n {
				t.Fatalf("%s: %+v %+v", name, want, want.Problem)
			}
		})
	}
}
