package archive

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"go.uber.org/goleak"

	"github.com/uapk-gateway/uapk-proxy/internal/miniotest"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
)

// These tests run against a real MinIO (bin/minio, `make minio`): Object
// Lock is only proven by a server that refuses.

func s3Config(srv *miniotest.Server, bucket, prefix string) Config {
	return Config{
		App: "erp-agent", Key: testKey(1),
		S3: &S3Config{
			Bucket: bucket, Prefix: prefix, Region: miniotest.Region,
			Endpoint: srv.Endpoint, PathStyle: true,
		},
		SegmentRecords: 10, SegmentInterval: time.Hour,
		RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond,
		RequestTimeout: 10 * time.Second, FlushTimeout: 10 * time.Second,
	}
}

func startMinio(t testing.TB) *miniotest.Server {
	t.Helper()
	srv := miniotest.Start(t)
	srv.SetEnv(t) // the archiver gets credentials from the standard chain
	srv.MakeBucket(t, "worm", miniotest.BucketOptions{ObjectLock: true})
	return srv
}

// versions returns every version of every object under prefix.
func versions(t testing.TB, c *s3.Client, bucket, prefix string) map[string][]types.ObjectVersion {
	t.Helper()
	out := map[string][]types.ObjectVersion{}
	p := s3.NewListObjectVersionsPaginator(c, &s3.ListObjectVersionsInput{Bucket: &bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range page.Versions {
			out[*v.Key] = append(out[*v.Key], v)
		}
		if len(page.DeleteMarkers) > 0 {
			t.Errorf("delete markers under %s: %d", prefix, len(page.DeleteMarkers))
		}
	}
	return out
}

// lastTime is the time of record seq.
func lastTime(t testing.TB, l *ledger.Ledger, seq uint64) string {
	t.Helper()
	raw, err := l.Get(seq)
	if err != nil {
		t.Fatal(err)
	}
	var r ledger.Record
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	return r.Time
}

func TestS3SegmentsAreLockedInComplianceMode(t *testing.T) {
	srv := startMinio(t)
	ctx := context.Background()
	c := srv.Client()
	l := openTemp(t, ledger.Options{})
	appendN(t, l, 25)
	cfg := s3Config(srv, "worm", "audit/uapk")
	a := mustArchiver(t, l, cfg, nil)
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	st := a.Status()
	if !st.Checked || st.Bucket.Versioning != "Enabled" || !st.Bucket.ObjectLock || st.Mode != "COMPLIANCE" || st.ArchivedSeq != 29 {
		t.Fatalf("status %+v", st)
	}

	objs := versions(t, c, "worm", "audit/uapk/erp-agent/")
	if len(objs) != 6 { // 3 segments, 3 checkpoints
		t.Fatalf("objects %v", objs)
	}
	for _, r := range [][2]uint64{{1, 10}, {11, 20}, {21, 29}} {
		for _, key := range []string{
			segmentKey("audit/uapk/erp-agent", r[0], r[1]),
			checkpointKey("audit/uapk/erp-agent", r[1]),
		} {
			vs := objs[key]
			if len(vs) != 1 {
				t.Fatalf("%s: %d versions, want 1", key, len(vs))
			}
			vid := vs[0].VersionId
			ret, err := c.GetObjectRetention(ctx, &s3.GetObjectRetentionInput{Bucket: aws.String("worm"), Key: &key, VersionId: vid})
			if err != nil {
				t.Fatal(err)
			}
			want := retainUntil(lastTime(t, l, r[1]), 7)
			if ret.Retention.Mode != types.ObjectLockRetentionModeCompliance || !aws.ToTime(ret.Retention.RetainUntilDate).Equal(want) {
				t.Errorf("%s: retention %s until %s, want COMPLIANCE until %s", key, ret.Retention.Mode,
					aws.ToTime(ret.Retention.RetainUntilDate).UTC(), want)
			}
			head, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("worm"), Key: &key, VersionId: vid, ChecksumMode: types.ChecksumModeEnabled})
			if err != nil {
				t.Fatal(err)
			}
			obj, _, err := (&s3Store{client: c, bucket: "worm"}).get(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(obj)
			if got := aws.ToString(head.ChecksumSHA256); got != base64.StdEncoding.EncodeToString(sum[:]) {
				t.Errorf("%s: stored SHA-256 checksum %q, want %q", key, got, base64.StdEncoding.EncodeToString(sum[:]))
			}
			if head.ChecksumCRC32 != nil || head.ChecksumCRC32C != nil || head.ChecksumCRC64NVME != nil {
				t.Errorf("%s: a CRC checksum was sent besides the SHA-256", key)
			}
			if strings.Contains(key, "/segments/") && !bytes.Equal(obj, rangeBytes(t, l, r[0], r[1])) {
				t.Errorf("%s differs from records %d-%d", key, r[0], r[1])
			}

			// The server refuses to delete the version...
			_, err = c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("worm"), Key: &key, VersionId: vid})
			if err == nil {
				t.Errorf("%s: the server deleted a locked version", key)
			}
			_, err = c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("worm"), Key: &key, VersionId: vid, BypassGovernanceRetention: aws.Bool(true)})
			if err == nil {
				t.Errorf("%s: the server deleted a COMPLIANCE version with governance bypass", key)
			}
			// ...and to shorten its retention.
			_, err = c.PutObjectRetention(ctx, &s3.PutObjectRetentionInput{
				Bucket: aws.String("worm"), Key: &key, VersionId: vid, BypassGovernanceRetention: aws.Bool(true),
				Retention: &types.ObjectLockRetention{Mode: types.ObjectLockRetentionModeCompliance, RetainUntilDate: aws.Time(time.Now().Add(24 * time.Hour))},
			})
			if err == nil {
				t.Errorf("%s: the server shortened a COMPLIANCE retention", key)
			}
		}
	}
	// Still all there, unchanged.
	if after := versions(t, c, "worm", "audit/uapk/erp-agent/"); len(after) != 6 {
		t.Fatalf("after the attacks: %v", after)
	}
	rep := mustVerifyArchive(t, l, cfg, nil, 29)
	if rep.Segments != 3 || rep.Checkpoints != 3 {
		t.Errorf("report %+v", rep)
	}
	ars := recordsOfKind(t, l, record.KindArchive)
	if d := ars[0]["data"].(map[string]any); d["version_id"] == "" || d["object_lock_mode"] != "COMPLIANCE" ||
		d["retain_until"] != s3Time(retainUntil(lastTime(t, l, 10), 7)) {
		t.Errorf("archive record %v", d)
	}
}

func TestS3GovernanceModeAndBucketDefaults(t *testing.T) {
	srv := startMinio(t)
	ctx := context.Background()
	c := srv.Client()
	srv.MakeBucket(t, "gov", miniotest.BucketOptions{ObjectLock: true})
	_, err := c.PutObjectLockConfiguration(ctx, &s3.PutObjectLockConfigurationInput{
		Bucket: aws.String("gov"),
		ObjectLockConfiguration: &types.ObjectLockConfiguration{
			ObjectLockEnabled: types.ObjectLockEnabledEnabled,
			Rule:              &types.ObjectLockRule{DefaultRetention: &types.DefaultRetention{Mode: types.ObjectLockRetentionModeGovernance, Days: aws.Int32(1)}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	l := openTemp(t, ledger.Options{})
	appendN(t, l, 3)
	cfg := s3Config(srv, "gov", "")
	cfg.Mode, cfg.RetentionYears = "GOVERNANCE", 10
	a := mustArchiver(t, l, cfg, nil)
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if b := a.Status().Bucket; b.DefaultMode != "GOVERNANCE" || b.DefaultRetention != "1d" {
		t.Errorf("bucket defaults %+v", b)
	}
	key := segmentKey("erp-agent", 1, 3)
	ret, err := c.GetObjectRetention(ctx, &s3.GetObjectRetentionInput{Bucket: aws.String("gov"), Key: &key})
	if err != nil {
		t.Fatal(err)
	}
	if ret.Retention.Mode != types.ObjectLockRetentionModeGovernance || !aws.ToTime(ret.Retention.RetainUntilDate).Equal(retainUntil(lastTime(t, l, 3), 10)) {
		t.Errorf("retention %+v", ret.Retention)
	}
	mustVerifyArchive(t, l, cfg, nil, 3)
}

func TestS3RefusesBucketWithoutObjectLock(t *testing.T) {
	srv := startMinio(t)
	srv.MakeBucket(t, "versioned", miniotest.BucketOptions{Versioning: true})
	srv.MakeBucket(t, "bare", miniotest.BucketOptions{})
	for _, bucket := range []string{"versioned", "bare", "no-such-bucket"} {
		t.Run(bucket, func(t *testing.T) {
			l := openTemp(t, ledger.Options{})
			appendN(t, l, 12)
			cfg := s3Config(srv, bucket, "")
			a := mustArchiver(t, l, cfg, nil)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			waitFor(t, "the refusal", func() bool { return a.Status().Refused != "" })
			time.Sleep(100 * time.Millisecond) // a few retries: still nothing written
			cancel()
			<-done
			st := a.Status()
			if st.Ready() == nil || st.Checked || st.ArchivedSeq != 0 || st.Backlog != 12 {
				t.Errorf("status %+v", st)
			}
			if bucket != "no-such-bucket" && !strings.Contains(st.Refused, "Object Lock") {
				t.Errorf("refused %q, want it to name Object Lock", st.Refused)
			}
			if l.Head().Seq != 12 {
				t.Errorf("head %d: nothing may be recorded", l.Head().Seq)
			}
			if bucket != "no-such-bucket" {
				if objs := versions(t, srv.Client(), bucket, ""); len(objs) != 0 {
					t.Errorf("unprotected objects written: %v", objs)
				}
			}
			if err := a.Flush(context.Background()); !errors.Is(err, ErrRefused) {
				t.Errorf("flush: %v", err)
			}
			rep, err := Verify(context.Background(), l, cfg, testKey(1).Public().(ed25519.PublicKey))
			if err != nil || rep.OK || rep.Problem.Reason != ReasonRefused {
				t.Errorf("verify: %v %+v", err, rep.Problem)
			}
		})
	}
}

// TestS3OutageLosesNothing stops MinIO while records keep coming, then
// restarts it on the same port and data: the backlog drains, every record
// is archived once, in order.
func TestS3OutageLosesNothing(t *testing.T) {
	srv := startMinio(t)
	l := openTemp(t, ledger.Options{})
	cfg := s3Config(srv, "worm", "p")
	cfg.SegmentInterval = 50 * time.Millisecond
	a := mustArchiver(t, l, cfg, nil)
	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background()) }()

	appendN(t, l, 15)
	waitFor(t, "the first segments", func() bool { return a.Status().ArchivedSeq >= 15 && a.Status().Backlog == 0 })

	srv.Stop()
	start := time.Now()
	appendN(t, l, 40) // requests keep flowing: the chain is durable locally
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("40 appends took %s during the outage", d)
	}
	waitFor(t, "a failure to show", func() bool { return a.Status().Failures >= 1 })
	st := a.Status()
	if st.Backlog < 40 || st.LastError == "" || st.BacklogAgeSeconds <= 0 || st.Ready() != nil {
		t.Fatalf("during the outage: %+v", st)
	}

	srv.Restart()
	waitFor(t, "the backlog to drain", func() bool { return a.Status().Backlog == 0 })
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	archived := a.Status().ArchivedSeq
	if archived < 55 {
		t.Fatalf("archived %d, want at least the 55 appended", archived)
	}
	for key, vs := range versions(t, srv.Client(), "worm", "p/") {
		if len(vs) != 1 {
			t.Errorf("%s: %d versions", key, len(vs))
		}
	}
	mustVerify(t, l, l.Head().Seq)
	mustVerifyArchive(t, l, cfg, nil, archived)
}

// TestS3CrashMidUpload kills the seal after the object is in the bucket and
// before the chain records it; a new archiver redoes the same segment (the
// re-put of the same bytes succeeds without a new version) and carries on.
func TestS3CrashMidUpload(t *testing.T) {
	srv := startMinio(t)
	for i, stage := range []string{"segment", "checkpoint", "checkpoint_record"} {
		t.Run(stage, func(t *testing.T) {
			l := openTemp(t, ledger.Options{})
			appendN(t, l, 13)
			cfg := s3Config(srv, "worm", fmt.Sprintf("crash%d", i))
			a := mustArchiver(t, l, cfg, nil)
			ctx, cancel := context.WithCancel(context.Background())
			a.hook = func(s string) {
				if s == stage {
					cancel()
				}
			}
			if err := a.Flush(ctx); !errors.Is(err, context.Canceled) {
				t.Fatalf("flush: %v", err)
			}
			appendN(t, l, 4)

			b := mustArchiver(t, l, cfg, nil)
			if err := b.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			objs := versions(t, srv.Client(), "worm", cfg.S3.Prefix+"/")
			first := segmentKey(cfg.S3.Prefix+"/erp-agent", 1, 10)
			if len(objs[first]) != 1 {
				t.Errorf("%s: %d versions, want 1", first, len(objs[first]))
			}
			for key, vs := range objs {
				if len(vs) != 1 {
					t.Errorf("%s: %d versions", key, len(vs))
				}
			}
			cps, ars := recordsOfKind(t, l, record.KindCheckpoint), recordsOfKind(t, l, record.KindArchive)
			if len(cps) != len(ars) || len(ars)*2 != len(objs) {
				t.Errorf("%d checkpoint records, %d archive records, %d objects", len(cps), len(ars), len(objs))
			}
			mustVerify(t, l, l.Head().Seq)
			mustVerifyArchive(t, l, cfg, nil, b.Status().ArchivedSeq)
		})
	}
}

// TestS3VerifyArchiveCatchesDifferences: an overwrite (a new version over a
// locked one, which versioning allows) and a tampered copy in another bucket
// both fail verification at the first changed record.
func TestS3VerifyArchiveCatchesDifferences(t *testing.T) {
	srv := startMinio(t)
	ctx := context.Background()
	c := srv.Client()
	l := openTemp(t, ledger.Options{})
	appendN(t, l, 20)
	cfg := s3Config(srv, "worm", "v")
	if err := mustArchiver(t, l, cfg, nil).Flush(ctx); err != nil {
		t.Fatal(err)
	}
	mustVerifyArchive(t, l, cfg, nil, 20)
	pub := testKey(1).Public().(ed25519.PublicKey)
	seg2 := segmentKey("v/erp-agent", 11, 20)
	get := func(bucket, key string) []byte {
		out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &key})
		if err != nil {
			t.Fatal(err)
		}
		defer out.Body.Close()
		b, _ := io.ReadAll(out.Body)
		return b
	}
	put := func(bucket, key string, b []byte) {
		if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: bytes.NewReader(b)}); err != nil {
			t.Fatal(err)
		}
	}
	tampered := bytes.Replace(get("worm", seg2), []byte(`"amount":"116.00"`), []byte(`"amount":"916.00"`), 1)

	// A tampered copy in a second bucket.
	srv.MakeBucket(t, "copy", miniotest.BucketOptions{ObjectLock: true})
	keys, err := (&s3Store{client: c, bucket: "worm"}).list(ctx, "v/erp-agent/segments")
	if err != nil {
		t.Fatal(err)
	}
	cpKeys, _ := (&s3Store{client: c, bucket: "worm"}).list(ctx, "v/erp-agent/checkpoints")
	for _, k := range append(keys, cpKeys...) {
		b := get("worm", k)
		if k == seg2 {
			b = tampered
		}
		out, err := c.PutObject(ctx, &s3.PutObjectInput{
			Bucket: aws.String("copy"), Key: &k, Body: bytes.NewReader(b),
			ObjectLockMode: types.ObjectLockModeGovernance, ObjectLockRetainUntilDate: aws.Time(time.Now().AddDate(8, 0, 0)),
			ChecksumAlgorithm: types.ChecksumAlgorithmSha256,
		})
		if err != nil || out.VersionId == nil {
			t.Fatal(err)
		}
	}
	cfgCopy := s3Config(srv, "copy", "v")
	rep, err := Verify(ctx, l, cfgCopy, pub)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || rep.Problem.Reason != ReasonMismatch || rep.Problem.Key != seg2 || rep.Problem.Seq != 17 {
		t.Fatalf("tampered copy: %+v", rep.Problem)
	}

	// An overwrite in the archive bucket itself: the locked version stays,
	// but the current one differs, and verify says so.
	put("worm", seg2, tampered)
	rep, err = Verify(ctx, l, cfg, pub)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK || rep.Problem.Reason != ReasonMismatch || rep.Problem.Seq != 17 || rep.ArchivedSeq != 10 {
		t.Fatalf("overwritten: %+v", rep)
	}
	if vs := versions(t, c, "worm", seg2); len(vs[seg2]) != 2 {
		t.Errorf("%d versions of %s, want the locked original and the overwrite", len(vs[seg2]), seg2)
	}

	// An object without Object Lock is reported too.
	nolock := segmentKey("v/erp-agent", 1, 10)
	put("worm", nolock, get("worm", nolock))
	rep, _ = Verify(ctx, l, cfg, pub)
	if rep.OK || rep.Problem.Reason != ReasonNoObjectLock || rep.Problem.Key != nolock {
		t.Fatalf("unlocked: %+v", rep.Problem)
	}
}

// TestS3ConflictNeverOverwrites: another segment already under the key (a
// ledger reset over an old prefix) is an alarm; the archiver writes nothing,
// not even a new version, and records nothing.
func TestS3ConflictNeverOverwrites(t *testing.T) {
	srv := startMinio(t)
	ctx := context.Background()
	c := srv.Client()
	key := segmentKey("erp-agent", 1, 6)
	old := []byte("{\"seq\":1}\n")
	s := &s3Store{client: c, bucket: "worm"}
	lock := objectLock{Mode: "COMPLIANCE", RetainUntil: time.Now().Add(time.Hour).Truncate(time.Second)}
	if _, err := s.putIfAbsent(ctx, key, old, lock); err != nil {
		t.Fatal(err)
	}
	// If-None-Match is enforced by the server, whatever the bytes.
	if _, err := s.putIfAbsent(ctx, key, old, lock); !errors.Is(err, errObjectExists) {
		t.Fatalf("second put: %v, want errObjectExists", err)
	}

	l := openTemp(t, ledger.Options{})
	appendN(t, l, 6)
	a := mustArchiver(t, l, s3Config(srv, "worm", ""), nil)
	err := a.Flush(ctx)
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("flush: %v", err)
	}
	if st := a.Status(); st.Conflict == "" || st.Ready() == nil || st.ArchivedSeq != 0 {
		t.Errorf("status %+v", st)
	}
	vs := versions(t, c, "worm", "erp-agent/")
	if len(vs) != 1 || len(vs[key]) != 1 {
		t.Fatalf("objects %v: the archiver wrote something", vs)
	}
	got, _, err := s.get(ctx, key)
	if err != nil || !bytes.Equal(got, old) {
		t.Fatalf("the existing object changed: %q %v", got, err)
	}
	if l.Head().Seq != 6 {
		t.Errorf("head %d: a conflict records nothing", l.Head().Seq)
	}
}

// TestS3ArchiverLeavesNoGoroutines: after Close, nothing of the archiver or
// its HTTP client is left running (the doors' tests check for leaks).
func TestS3ArchiverLeavesNoGoroutines(t *testing.T) {
	srv := startMinio(t)
	l := openTemp(t, ledger.Options{})
	ignore := goleak.IgnoreCurrent()
	a := mustArchiver(t, l, s3Config(srv, "worm", "leak"), nil)
	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background()) }()
	appendN(t, l, 12)
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.Close()
	<-done
	goleak.VerifyNone(t, ignore)
}
