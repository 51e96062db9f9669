package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/uapk-gateway/uapk-proxy/internal/keys"
	"github.com/uapk-gateway/uapk-proxy/internal/miniotest"
	"github.com/uapk-gateway/uapk-proxy/internal/pgtest"
)

// withFleetArchive is withFleet with an archive: section: instance name's
// segments go to s3://BUCKET/fleet/APP/name/ on srv (nil: DATA/archive).
func withFleetArchive(dsn, name string, srv *miniotest.Server) func(*serveOptions) {
	return func(o *serveOptions) {
		cfg := filepath.Join(filepath.Dir(o.Principals), "uapk-fleet-"+name+".yaml")
		y := "manifest: " + o.Manifest + "\napprovals:\n  postgres: " + dsn + "\n  instance: " + name + "\narchive:\n  instance: " + name + "\n"
		if srv != nil {
			y += fmt.Sprintf("  s3:\n    bucket: worm\n    prefix: fleet\n    region: %s\n    endpoint: %s\n    path_style: true\n", miniotest.Region, srv.Endpoint)
		}
		if err := os.WriteFile(cfg, []byte(y), 0o600); err != nil {
			panic(err)
		}
		o.Config = cfg
	}
}

// fleetOfThree runs three proxies over one PostgreSQL, archiving to
// MinIO, and plays requests spread over them: an entry held at A, decided
// at B and released at C; auto-approved reads at each. All three are
// stopped (their archivers seal what is pending) before it returns.
func fleetOfThree(t *testing.T, srv *miniotest.Server) (a, b, c *env) {
	pg := pgtest.Start(t)
	dsn := pg.NewDB(t)
	a = newEnv(t, withFleetArchive(dsn, "proxy-a", srv))
	share := func(o *serveOptions) { o.Principals, o.Upstream = a.opts.Principals, a.opts.Upstream }
	b = newEnv(t, share, withFleetArchive(dsn, "proxy-b", srv))
	c = newEnv(t, share, withFleetArchive(dsn, "proxy-c", srv))
	b.keyDir, b.erp, c.keyDir, c.erp = a.keyDir, a.erp, a.keyDir, a.erp
	for _, e := range []*env{a, b, c} {
		for i := 0; i < 3; i++ {
			if r := e.do("GET", "/api/v1/accounts/1010-Cash/balance", ""); r.status != 200 {
				t.Fatalf("read: %d %s", r.status, r.body)
			}
		}
	}
	body := `{"account":"4000-Revenue","credit":260000}`
	r := a.do("POST", "/api/v1/journal-entries", body, "X-UAPK-On-Behalf-Of", "accountant@corp.example")
	id := r.header.Get("X-UAPK-Approval-Id")
	if r.status != 202 || id == "" {
		t.Fatalf("held at A: %d %s", r.status, r.body)
	}
	if code, m := b.decide(id, "fm@corp.example", "fm", "approve", b.clock.Now()); code != 200 || m["status"] != "approved" {
		t.Fatalf("approval at B: %d %v", code, m)
	}
	if r := c.do("POST", "/api/v1/journal-entries", body, "X-UAPK-Approval-Id", id); r.status != 201 {
		t.Fatalf("release at C: %d %s", r.status, r.body)
	}
	a.stop()
	b.stop()
	c.stop()
	return a, b, c
}

func exporterKey(t *testing.T) string {
	t.Helper()
	pub, priv, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	prefix := filepath.Join(t.TempDir(), "exporter")
	if err := keys.WritePair(prefix, pub, priv); err != nil {
		t.Fatal(err)
	}
	return prefix + ".key"
}

// TestFleetEvidenceFromMinIO is issue 14's "done when": one export
// --config bundle over an archive written by three real proxies in MinIO
// (Object Lock) verifies, with the approval held at one, decided at
// another and released at the third; tampering with any instance's part
// of the bundle (even with SHA256SUMS re-signed: the exporter's key
// vouches for nothing) or with its archived segment is caught and named.
func TestFleetEvidenceFromMinIO(t *testing.T) {
	srv := miniotest.Start(t)
	srv.SetEnv(t)
	srv.MakeBucket(t, "worm", miniotest.BucketOptions{ObjectLock: true})
	a, _, _ := fleetOfThree(t, srv)
	key := exporterKey(t)
	from, to := exportDays()
	out := filepath.Join(t.TempDir(), "fleet.zip")
	start := time.Now()
	code, msg := runCommand(t, newExport(), "--config", a.opts.Config, "--key", key, "--from", from, "--to", to, "-o", out)
	if code != 0 || !strings.Contains(msg, "3 instances") {
		t.Fatalf("export --config: exit %d: %s", code, msg)
	}
	t.Logf("export of three instances took %v: %s", time.Since(start).Round(time.Millisecond), msg)
	code, msg = runCommand(t, verifyCmd(), out)
	if code != 0 || !strings.Contains(msg, "3 instances") || !strings.Contains(msg, "2 approved releases complete") {
		t.Fatalf("verify: exit %d: %s", code, msg)
	}
	for _, n := range []string{"proxy-a", "proxy-b", "proxy-c"} {
		if !strings.Contains(msg, "  "+n+": records 1 to ") {
			t.Errorf("verify does not report %s: %s", n, msg)
		}
	}
	// The same range gives the same bytes.
	again := filepath.Join(t.TempDir(), "again.zip")
	if code, msg := runCommand(t, newExport(), "--config", a.opts.Config, "--key", key, "--from", from, "--to", to, "-o", again); code != 0 {
		t.Fatalf("second export: %d %s", code, msg)
	}
	if x, y := mustRead(t, out), mustRead(t, again); !bytes.Equal(x, y) {
		t.Error("two exports of the same range differ")
	}
	files := unzipFiles(t, out)
	if !bytes.Contains(files["approvals.json"], []byte(`"instance": "proxy-b"`)) {
		t.Errorf("approvals.json does not name the deciding instance:\n%s", files["approvals.json"])
	}
	// Tampering, each with SHA256SUMS re-signed by another exporter key
	// put in keys/exporter.pub: only the instances' checkpoints stand in
	// the way.
	tamper := fleetTamper(t, files)
	recs := "instances/proxy-b/records.jsonl"
	tamper("a byte of a record", func(f map[string][]byte) {
		f[recs] = bytes.Replace(f[recs], []byte(`"method":"GET"`), []byte(`"method":"PUT"`), 1)
	}, "instance proxy-b", "chain_broken", "record 2")
	tamper("a record dropped", func(f map[string][]byte) {
		lines := bytes.SplitAfter(f["instances/proxy-c/records.jsonl"], []byte("\n"))
		f["instances/proxy-c/records.jsonl"] = bytes.Join(append(lines[:2:2], lines[3:]...), nil)
	}, "instance proxy-c", "record 3")
	tamper("records swapped between instances", func(f map[string][]byte) {
		f["instances/proxy-a/records.jsonl"], f[recs] = f[recs], f["instances/proxy-a/records.jsonl"]
	}, "instance proxy-a")
	tamper("another instance's checkpoint", func(f map[string][]byte) {
		var mine, theirs map[string]any
		json.Unmarshal(f["instances/proxy-a/anchor.json"], &mine)
		json.Unmarshal(f["instances/proxy-b/anchor.json"], &theirs)
		mine["checkpoint"] = theirs["checkpoint"]
		f["instances/proxy-a/anchor.json"], _ = json.MarshalIndent(mine, "", "  ")
	}, "instance proxy-a", "bad_checkpoint", "not signed by the gateway key")
	tamper("the whole anchor of another instance", func(f map[string][]byte) {
		f["instances/proxy-a/anchor.json"] = f["instances/proxy-b/anchor.json"]
	}, "instance proxy-a")
	tamper("a statement moved to another instance", func(f map[string][]byte) {
		f["approvals.json"] = bytes.Replace(f["approvals.json"], []byte(`"instance": "proxy-b"`), []byte(`"instance": "proxy-a"`), 1)
	}, "instance proxy-a")

	// proxy-b decided the approval proxy-c released: leaving it out is
	// refused, naming it; with it, the three export as before.
	code, msg = runCommand(t, newExport(), "--config", a.opts.Config, "--key", key, "--from", from, "--to", to, "--instance", "proxy-a", "--instance", "proxy-c", "-o", out)
	if code != 2 || !strings.Contains(msg, "proxy-b record ") || !strings.Contains(msg, "add --instance proxy-b") {
		t.Fatalf("export without the deciding instance: exit %d: %s", code, msg)
	}
	t.Logf("export without the deciding instance: %s", msg)
	code, msg = runCommand(t, newExport(), "--config", a.opts.Config, "--key", key, "--from", from, "--to", to, "--instance", "proxy-a", "--instance", "proxy-c", "--instance", "proxy-b", "-o", again)
	if code != 0 || !strings.Contains(msg, "3 instances") {
		t.Fatalf("export of the three named: exit %d: %s", code, msg)
	}
	if x, y := mustRead(t, out), mustRead(t, again); !bytes.Equal(x, y) {
		t.Error("the three instances named and all instances give different bundles")
	}
	// A --manifest no record was decided under is refused, as for one
	// proxy.
	other := filepath.Join(t.TempDir(), "other.json")
	os.WriteFile(other, append(mustRead(t, a.opts.Manifest), ' '), 0o644)
	code, msg = runCommand(t, newExport(), "--config", a.opts.Config, "--key", key, "--from", from, "--to", to, "--manifest", other, "-o", filepath.Join(t.TempDir(), "m.zip"))
	if code != 1 || !strings.Contains(msg, "manifest was not in force") || !strings.Contains(msg, other) {
		t.Errorf("export with an unused --manifest: exit %d: %s", code, msg)
	}
	if code, msg := runCommand(t, newExport(), "--config", a.opts.Config, "--key", key, "--from", from, "--to", to, "--manifest", a.opts.Manifest, "-o", filepath.Join(t.TempDir(), "m.zip")); code != 0 {
		t.Errorf("export with the --manifest in force: exit %d: %s", code, msg)
	}

	// In the archive: a new version of proxy-b's first segment with one
	// byte changed (Object Lock keeps the old one, but the current version
	// is what an export reads).
	ctx := context.Background()
	cl := srv.Client()
	list, err := cl.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("worm"), Prefix: aws.String("fleet/financial-ai-assistant/proxy-b/segments/")})
	if err != nil || len(list.Contents) == 0 {
		t.Fatalf("list proxy-b's segments: %v", err)
	}
	segKey := aws.ToString(list.Contents[0].Key)
	obj, err := cl.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("worm"), Key: aws.String(segKey)})
	if err != nil {
		t.Fatal(err)
	}
	var seg bytes.Buffer
	seg.ReadFrom(obj.Body)
	obj.Body.Close()
	forged := bytes.Replace(seg.Bytes(), []byte(`"method":"GET"`), []byte(`"method":"PUT"`), 1)
	sum := sha256.Sum256(forged)
	if _, err := cl.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("worm"), Key: aws.String(segKey), Body: bytes.NewReader(forged),
		ChecksumAlgorithm: types.ChecksumAlgorithmSha256, ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(sum[:]))}); err != nil {
		t.Fatalf("put a forged version: %v", err)
	}
	code, msg = runCommand(t, newExport(), "--config", a.opts.Config, "--key", key, "--from", from, "--to", to, "-o", filepath.Join(t.TempDir(), "x.zip"))
	if code != 1 || !strings.Contains(msg, "instance proxy-b") || !strings.Contains(msg, segKey) || !strings.Contains(msg, "record 2") {
		t.Errorf("export over a tampered segment: exit %d: %s", code, msg)
	}
	t.Logf("export over a tampered segment: %s", msg)
	// proxy-b left out now that its archive is broken before its
	// decision: the approval proxy-c released is not known approved, and
	// the bundle, which verify would refuse, is not written.
	x := filepath.Join(t.TempDir(), "x.zip")
	code, msg = runCommand(t, newExport(), "--config", a.opts.Config, "--key", key, "--from", from, "--to", to, "--instance", "proxy-a", "--instance", "proxy-c", "-o", x)
	if code != 1 || !strings.Contains(msg, "does not pass verify") || !strings.Contains(msg, "pending, not approved") || !strings.Contains(msg, "instance proxy-b, not exported") {
		t.Errorf("export of two instances around a broken one: exit %d: %s", code, msg)
	}
	if _, err := os.Stat(x); err == nil {
		t.Error("a bundle verify refuses was written")
	}
	t.Logf("export around a broken deciding instance: %s", msg)
}

// fleetTamper returns a check that changing files (then SHA256SUMS
// re-signed by another exporter key, put in keys/exporter.pub) makes
// verify fail, exit 1, naming each of want.
func fleetTamper(t *testing.T, files map[string][]byte) func(name string, change func(f map[string][]byte), want ...string) {
	forger := mustKey(t, exporterKey(t))
	return func(name string, change func(f map[string][]byte), want ...string) {
		t.Helper()
		f := cloneFiles(files)
		change(f)
		pub, err := keys.PublicPEM(forger.Public().(ed25519.PublicKey))
		if err != nil {
			t.Fatal(err)
		}
		f["keys/exporter.pub"] = pub
		resign(f, forger)
		p := filepath.Join(t.TempDir(), "tampered.zip")
		zipFiles(t, f, p)
		code, msg := runCommand(t, verifyCmd(), p)
		if code != 1 {
			t.Errorf("%s: verify exit %d: %s", name, code, msg)
			return
		}
		t.Logf("%s: %s", name, afterPath(msg))
		for _, w := range want {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: verify says %q, want it to name %q", name, afterPath(msg), w)
			}
		}
	}
}

// TestFleetEvidenceCitedRecords: an approval held at proxy-a before the
// range and decided at proxy-b before it, released at proxy-a in the
// range. proxy-b has no record in the range, yet approvals.json cites its
// decision: the bundle carries it (and proxy-a's held request) in
// cited.jsonl, chained to a signed checkpoint, and verifies; a changed
// cited record is caught and named; leaving proxy-b out is refused.
func TestFleetEvidenceCitedRecords(t *testing.T) {
	srv := miniotest.Start(t)
	srv.SetEnv(t)
	srv.MakeBucket(t, "worm", miniotest.BucketOptions{ObjectLock: true})
	pg := pgtest.Start(t)
	dsn := pg.NewDB(t)
	a := newEnv(t, withFleetArchive(dsn, "proxy-a", srv))
	share := func(o *serveOptions) { o.Principals, o.Upstream = a.opts.Principals, a.opts.Upstream }
	b := newEnv(t, share, withFleetArchive(dsn, "proxy-b", srv))
	b.keyDir, b.erp = a.keyDir, a.erp
	if r := a.do("GET", "/api/v1/accounts/1010-Cash/balance", ""); r.status != 200 {
		t.Fatalf("read: %d %s", r.status, r.body)
	}
	beforeHold := time.Now().UTC()
	time.Sleep(5 * time.Millisecond)
	body := `{"account":"4000-Revenue","credit":260000}`
	r := a.do("POST", "/api/v1/journal-entries", body, "X-UAPK-On-Behalf-Of", "accountant@corp.example")
	id := r.header.Get("X-UAPK-Approval-Id")
	if r.status != 202 || id == "" {
		t.Fatalf("held at A: %d %s", r.status, r.body)
	}
	if code, m := b.decide(id, "fm@corp.example", "fm", "approve", b.clock.Now()); code != 200 || m["status"] != "approved" {
		t.Fatalf("approval at B: %d %v", code, m)
	}
	time.Sleep(5 * time.Millisecond)
	mark := time.Now().UTC()
	time.Sleep(5 * time.Millisecond)
	if r := a.do("POST", "/api/v1/journal-entries", body, "X-UAPK-Approval-Id", id); r.status != 201 {
		t.Fatalf("release at A: %d %s", r.status, r.body)
	}
	if r := a.do("GET", "/api/v1/accounts/1010-Cash/balance", ""); r.status != 200 {
		t.Fatalf("read: %d %s", r.status, r.body)
	}
	a.stop()
	b.stop()

	key := exporterKey(t)
	_, to := exportDays()
	from := mark.Format(time.RFC3339Nano)
	out := filepath.Join(t.TempDir(), "fleet.zip")
	code, msg := runCommand(t, newExport(), "--config", a.opts.Config, "--key", key, "--from", from, "--to", to, "-o", out)
	if code != 0 || !strings.Contains(msg, "2 instances") || !strings.Contains(msg, "proxy-b: no records in the range, gateway key SHA256:") ||
		!strings.Contains(msg, "instances/proxy-b/cited.jsonl") || !strings.Contains(msg, "instances/proxy-a/cited.jsonl") {
		t.Fatalf("export --config from %s: exit %d: %s", from, code, msg)
	}
	t.Logf("export: %s", msg)
	code, msg = runCommand(t, verifyCmd(), out)
	if code != 0 || !strings.Contains(msg, "1 approvals, 1 signed statements verified, 1 approved releases complete") ||
		!strings.Contains(msg, "instance proxy-b: no record in the range; the records approvals.json cites") {
		t.Fatalf("verify: exit %d: %s", code, msg)
	}
	t.Logf("verify: %s", msg)
	files := unzipFiles(t, out)
	var ff struct {
		Instances []struct {
			Name    string
			Records uint64
			Cited   []uint64
		}
	}
	if err := json.Unmarshal(files["fleet.json"], &ff); err != nil {
		t.Fatal(err)
	}
	var bCited uint64
	for _, in := range ff.Instances {
		if len(in.Cited) != 1 || (in.Name == "proxy-b") != (in.Records == 0) {
			t.Errorf("fleet.json: %+v", in)
		}
		if in.Name == "proxy-b" {
			bCited = in.Cited[0]
		}
	}
	for _, name := range []string{"records.jsonl", "anchor.json", "report.html"} {
		if files["instances/proxy-b/"+name] != nil {
			t.Errorf("proxy-b, with no record in the range, has %s", name)
		}
	}
	bRecs := "instances/proxy-b/cited.jsonl"
	if !bytes.Contains(files[bRecs], []byte(fmt.Sprintf(`"seq":%d,`, bCited))) || !bytes.Contains(files[bRecs], []byte(id)) {
		t.Fatalf("proxy-b's cited.jsonl lacks its decision record %d:\n%s", bCited, files[bRecs])
	}

	tamper := fleetTamper(t, files)
	tamper("proxy-b's cited decision changed", func(f map[string][]byte) {
		f[bRecs] = bytes.Replace(f[bRecs], []byte(`"reason":"reviewed"`), []byte(`"reason":"rubber-stamped"`), 1)
	}, "instance proxy-b", "chain_broken", "cited.jsonl is not an intact chain", fmt.Sprintf("record %d", bCited))
	tamper("proxy-b's cited run cut short", func(f map[string][]byte) {
		lines := bytes.SplitAfter(f[bRecs], []byte("\n"))
		f[bRecs] = bytes.Join(lines[:len(lines)-2], nil)
	}, "instance proxy-b", "chain_broken", "records are missing")
	tamper("proxy-b's part dropped, as before cited records", func(f map[string][]byte) {
		for k := range f {
			if strings.HasPrefix(k, "instances/proxy-b/") {
				delete(f, k)
			}
		}
		f["fleet.json"] = bytes.Replace(f["fleet.json"], []byte(fmt.Sprintf(`"cited": [
        %d
      ]`, bCited)), []byte(`"cited": []`), 1)
	}, `"proxy-b"`, "has no part in this bundle")
	tamper("the statement pointed at another record of proxy-b", func(f map[string][]byte) {
		f["approvals.json"] = bytes.Replace(f["approvals.json"], []byte(fmt.Sprintf(`"record": %d`, bCited)), []byte(fmt.Sprintf(`"record": %d`, bCited+1)), 1)
	}, "instance proxy-b", fmt.Sprintf("record %d", bCited+1))
	tamper("proxy-a's held request changed", func(f map[string][]byte) {
		k := "instances/proxy-a/cited.jsonl"
		f[k] = bytes.Replace(f[k], []byte(`260000`), []byte(`2600000`), 1)
	}, "instance proxy-a", "chain_broken", "cited.jsonl is not an intact chain")

	// proxy-a alone: its range releases what proxy-b decided.
	code, msg = runCommand(t, newExport(), "--config", a.opts.Config, "--key", key, "--from", from, "--to", to, "--instance", "proxy-a", "-o", filepath.Join(t.TempDir(), "a.zip"))
	if code != 2 || !strings.Contains(msg, fmt.Sprintf("proxy-b record %d (approval/approve of approval %s)", bCited, id)) || !strings.Contains(msg, "add --instance proxy-b") {
		t.Errorf("export of proxy-a alone: exit %d: %s", code, msg)
	}
	t.Logf("export of proxy-a alone: %s", msg)

	// From before the hold: proxy-b's decision is in the range, its
	// config record before it; nothing is cited.
	out2 := filepath.Join(t.TempDir(), "fleet2.zip")
	code, msg = runCommand(t, newExport(), "--config", a.opts.Config, "--key", key, "--from", beforeHold.Format(time.RFC3339Nano), "--to", to, "-o", out2)
	if code != 0 || strings.Contains(msg, "cited.jsonl") || strings.Contains(msg, "no records in the range") {
		t.Fatalf("export from before the hold: exit %d: %s", code, msg)
	}
	if code, msg := runCommand(t, verifyCmd(), out2); code != 0 || !strings.Contains(msg, "proxy-b: records 2 to ") {
		t.Fatalf("verify from before the hold: exit %d: %s", code, msg)
	}
}

// TestFleetEvidenceBadInput: what export --config refuses, exit 2, and
// the local layout (DATA/archive/APP/INSTANCE/) exported and verified.
func TestFleetEvidenceBadInput(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.NewDB(t)
	d := newEnv(t, withFleetArchive(dsn, "proxy-d", nil))
	if r := d.do("GET", "/api/v1/accounts/1010-Cash/balance", ""); r.status != 200 {
		t.Fatalf("read: %d %s", r.status, r.body)
	}
	d.stop()
	key := exporterKey(t)
	from, to := exportDays()
	out := filepath.Join(t.TempDir(), "d.zip")
	code, msg := runCommand(t, newExport(), "--config", d.opts.Config, "--data-dir", d.opts.DataDir, "--key", key, "--from", from, "--to", to, "-o", out)
	if code != 0 || !strings.Contains(msg, "1 instances") || !strings.Contains(msg, "local:archive/financial-ai-assistant") {
		t.Fatalf("export of the local layout: exit %d: %s", code, msg)
	}
	if code, msg := runCommand(t, verifyCmd(), out); code != 0 || !strings.Contains(msg, "proxy-d: records 1 to ") {
		t.Fatalf("verify: exit %d: %s", code, msg)
	}
	noArchive := filepath.Join(t.TempDir(), "plain.yaml")
	os.WriteFile(noArchive, []byte("approvals:\n  postgres: "+dsn+"\n"), 0o600)
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no archive section", []string{"--config", noArchive, "--key", key}, "no archive: section"},
		{"an unknown instance", []string{"--config", d.opts.Config, "--data-dir", d.opts.DataDir, "--key", key, "--instance", "proxy-z"}, `"proxy-z" is not in local:archive/financial-ai-assistant, which has proxy-d`},
		{"empty range", []string{"--config", d.opts.Config, "--data-dir", d.opts.DataDir, "--key", key, "--from", "2001-01-01", "--to", "2001-01-02"}, "no records in the range"},
		{"no key", []string{"--config", d.opts.Config, "--data-dir", d.opts.DataDir}, "--config needs --key"},
		{"a seq range", []string{"--config", d.opts.Config, "--key", key, "--from-seq", "2"}, "by time"},
	} {
		args := append(c.args, "-o", filepath.Join(t.TempDir(), "x.zip"))
		if code, msg := runCommand(t, newExport(), args...); code != 2 || !strings.Contains(msg, c.want) {
			t.Errorf("%s: exit %d: %s (want 2 and %q)", c.name, code, msg, c.want)
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustKey(t *testing.T, path string) ed25519.PrivateKey {
	t.Helper()
	k, err := keys.LoadPrivateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
