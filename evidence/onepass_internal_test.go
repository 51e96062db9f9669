package evidence

import (
	"archive/zip"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/gowebpki/jcs"

	"github.com/uapk-gateway/uapk-proxy/verifier"
)

// rezipSigned zips files again; with key, SHA256SUMS is rewritten and
// signed first (an insider's bundle), without it kept as it is.
func rezipSigned(t *testing.T, files map[string][]byte, key ed25519.PrivateKey) []byte {
	t.Helper()
	var names []string
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	if key != nil {
		var sums bytes.Buffer
		for _, name := range names {
			if name != FileSums && name != FileSumsSig {
				h := sha256.Sum256(files[name])
				fmt.Fprintf(&sums, "%s  %s\n", hex.EncodeToString(h[:]), name)
			}
		}
		files[FileSums] = sums.Bytes()
		files[FileSumsSig] = []byte(base64.StdEncoding.EncodeToString(ed25519.Sign(key, sums.Bytes())) + "\n")
	}
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, name := range names {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(files[name])
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// rechain rewrites records.jsonl from record from on through edit, each
// re-hashed onto the one before (a self-consistent fork), and anchor.json's
// last record with it.
func rechain(t *testing.T, files map[string][]byte, from uint64, edit func(r map[string]any)) {
	t.Helper()
	lines := bytes.Split(bytes.TrimSuffix(files[FileRecords], newline), newline)
	prev := ""
	var last map[string]any
	for i, line := range lines {
		d := json.NewDecoder(bytes.NewReader(line))
		d.UseNumber()
		var r map[string]any
		if err := d.Decode(&r); err != nil {
			t.Fatal(err)
		}
		seq, _ := r["seq"].(json.Number).Int64()
		if uint64(seq) < from {
			prev = r["hash"].(string)
			continue
		}
		if uint64(seq) == from {
			edit(r)
		}
		r["prev"] = prev
		delete(r, "hash")
		b, _ := json.Marshal(r)
		body, err := verifier.CanonicalWithoutHash(b)
		if err != nil {
			t.Fatal(err)
		}
		if r["hash"], err = verifier.ComputeHash(prev, body); err != nil {
			t.Fatal(err)
		}
		prev = r["hash"].(string)
		b, _ = json.Marshal(r)
		if lines[i], err = jcs.Transform(b); err != nil {
			t.Fatal(err)
		}
		last = r
	}
	files[FileRecords] = append(bytes.Join(lines, newline), '\n')
	var a map[string]any
	json.Unmarshal(files[FileAnchor], &a)
	a["last"].(map[string]any)["hash"] = last["hash"]
	files[FileAnchor], _ = json.MarshalIndent(a, "", "  ")
}

// TestVerifyOnceIsSequential holds Verify, which reads records.jsonl once
// (hashing, prescanning and checking it together, checkpoint anchors held
// to the records afterwards), to the checks run one after another, each
// file read on its own: the same report, problem and words, for intact and
// damaged bundles, whichever problem comes first.
func TestVerifyOnceIsSequential(t *testing.T) {
	if testing.Short() {
		t.Skip("appends a few hundred fsynced records")
	}
	c := goldenChain(t, 40) // records 41 and 42 checkpoint and archive record 40
	zb, _, err := c.export(Range{})
	if err != nil {
		t.Fatal(err)
	}
	replaceIn := func(files map[string][]byte, name, old, new string) {
		if !bytes.Contains(files[name], []byte(old)) {
			t.Fatalf("no %q in %s", old, name)
		}
		files[name] = bytes.Replace(files[name], []byte(old), []byte(new), 1)
	}
	cases := map[string]func(f map[string][]byte) []byte{
		"intact": func(f map[string][]byte) []byte { return zb },
		"records changed, not re-signed": func(f map[string][]byte) []byte {
			replaceIn(f, FileRecords, `"seq":7,`, `"seq":8,`)
			return rezipSigned(t, f, nil)
		},
		"report changed, not re-signed": func(f map[string][]byte) []byte {
			replaceIn(f, FileReport, "<html", "<HTML")
			return rezipSigned(t, f, nil)
		},
		"report and records changed, not re-signed": func(f map[string][]byte) []byte {
			replaceIn(f, FileReport, "<html", "<HTML")
			replaceIn(f, FileRecords, `"seq":7,`, `"seq":8,`)
			return rezipSigned(t, f, nil)
		},
		"anchor broken, re-signed": func(f map[string][]byte) []byte {
			replaceIn(f, FileAnchor, `"format"`, `"formats"`)
			return rezipSigned(t, f, c.gw)
		},
		"anchor broken, re-signed, then records changed": func(f map[string][]byte) []byte {
			replaceIn(f, FileAnchor, `"format"`, `"formats"`)
			rezipSigned(t, f, c.gw)
			replaceIn(f, FileRecords, `"seq":7,`, `"seq":8,`)
			return rezipSigned(t, f, nil)
		},
		"record edited, re-signed": func(f map[string][]byte) []byte {
			replaceIn(f, FileRecords, `reconciliations?n=8"`, `reconciliations?n=88"`)
			return rezipSigned(t, f, c.gw)
		},
		"fork before the checkpoint, re-signed": func(f map[string][]byte) []byte {
			rechain(t, f, 30, func(r map[string]any) { r["decision"] = "deny" })
			return rezipSigned(t, f, c.gw)
		},
		"fork of the checkpointed record, re-signed": func(f map[string][]byte) []byte {
			rechain(t, f, 40, func(r map[string]any) { r["reason"] = "denylisted" })
			return rezipSigned(t, f, c.gw)
		},
		"fork after the checkpoint, re-signed": func(f map[string][]byte) []byte {
			rechain(t, f, 44, func(r map[string]any) { r["reason"] = "denylisted" })
			return rezipSigned(t, f, c.gw)
		},
		"last records cut, re-signed": func(f map[string][]byte) []byte {
			lines := bytes.SplitAfter(f[FileRecords], newline)
			f[FileRecords] = bytes.Join(lines[:len(lines)-4], nil)
			return rezipSigned(t, f, c.gw)
		},
		"no newline at the end, re-signed": func(f map[string][]byte) []byte {
			f[FileRecords] = bytes.TrimSuffix(f[FileRecords], newline)
			return rezipSigned(t, f, c.gw)
		},
		"an approval named, re-signed": func(f map[string][]byte) []byte {
			rechain(t, f, 12, func(r map[string]any) { r["approval_id"] = "apr_x" })
			return rezipSigned(t, f, c.gw)
		},
		"a line not a record, re-signed": func(f map[string][]byte) []byte {
			lines := bytes.SplitAfter(f[FileRecords], newline)
			lines[20] = []byte("{\"seq\":21}\n")
			f[FileRecords] = bytes.Join(lines, nil)
			return rezipSigned(t, f, c.gw)
		},
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			b := damage(unzipAll(t, zb))
			once, seq := runVerifier(t, b, false), runVerifier(t, b, true)
			if !reflect.DeepEqual(once, seq) {
				t.Fatalf("one pass:\n%+v\n%+v\none after another:\n%+v\n%+v", once, once.Problem, seq, seq.Problem)
			}
			if (name == "intact") != once.OK {
				t.Fatalf("%s: %+v", name, once.Problem)
			}
			if strings.HasPrefix(name, "fork") && !strings.Contains(name, "after") && once.Problem.Code != ProblemChain {
				t.Errorf("%s: %+v", name, once.Problem)
			}
			t.Logf("%+v", once.Problem)
		})
	}
}

func runVerifier(t *testing.T, b []byte, sequential bool) Report {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	v := &bundleVerifier{required: bundleFiles, sumsKey: FileGatewayPub}
	var p *Problem
	if sequential {
		p = v.sequential(zr)
	} else {
		p = v.run(zr)
	}
	v.rep.OK, v.rep.Problem = p == nil, p
	return v.rep
}
