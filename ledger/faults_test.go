package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/uapk-gateway/uapk-proxy/record"
)

// Tests of the faults a fault-injection pass found: a crash between an
// allow record and its forward record, a full disk, a stuck commit.

func forwardEntry(reqSeq uint64, reason record.Reason) Entry {
	d := record.Forward{RequestRecord: reqSeq, Status: 201, ResponseSHA256: katDigest, ResponseSize: 17, LatencyMS: 3, LatencyUS: 3100}
	return Entry{Kind: record.KindForward, App: "erp-agent", Action: "create_journal_entry", Decision: record.Allow,
		Reason: reason, Digest: katDigest, Policy: katPolicy, Data: d.Map()}
}

func overrideUse() Entry {
	e := entry(0)
	e.Kind, e.Reason, e.ApprovalID = record.KindOverride, record.Override, "apr_0123"
	return e
}

func denied() Entry {
	e := entry(0)
	e.Decision, e.Reason = record.Deny, record.PolicyDeny
	return e
}

func held() Entry {
	e := entry(0)
	e.Decision, e.Reason = record.Pending, record.ApprovalRequired
	return e
}

func mustAppend(t testing.TB, l *Ledger, e Entry) Record {
	t.Helper()
	rec, err := l.Append(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// records reads every record of the chain.
func records(t testing.TB, l *Ledger) []Record {
	t.Helper()
	var out []Record
	if err := l.Range(1, l.Head().Seq, func(_ uint64, raw []byte) error {
		var r Record
		if err := json.Unmarshal(raw, &r); err != nil {
			return err
		}
		out = append(out, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// outcomes maps request seq -> the outcome records naming it.
func outcomes(t testing.TB, l *Ledger) map[uint64][]Record {
	t.Helper()
	out := map[uint64][]Record{}
	for _, r := range records(t, l) {
		if r.Kind == record.KindOutcome {
			seq, _ := r.Data["request_record"].(float64)
			out[uint64(seq)] = append(out[uint64(seq)], r)
		}
	}
	return out
}

// crashChildEnv makes the test binary the child of TestRecoverAfterKill.
const crashChildEnv = "UAPK_LEDGER_CRASH_CHILD"

// TestCrashChild is not a test: it is the process TestRecoverAfterKill
// kills. It writes, each durably: an allow record with its forward record,
// an allow record without, a denial, an override use without a forward
// record, a held request, an allow record whose forward record is queued
// but maybe not committed, then SIGKILLs itself.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashChildEnv)
	if path == "" {
		t.Skip("helper process of TestRecoverAfterKill")
	}
	l, err := Open(path, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	a := mustAppend(t, l, entry(1))                    // 1: allow, forwarded
	mustAppend(t, l, forwardEntry(a.Seq, "forwarded")) // 2
	mustAppend(t, l, entry(2))                         // 3: allow, no forward
	mustAppend(t, l, denied())                         // 4
	mustAppend(t, l, overrideUse())                    // 5: override allow, no forward
	mustAppend(t, l, held())                           // 6
	c := mustAppend(t, l, entry(3))                    // 7: allow, forward maybe
	l.AppendAsync(forwardEntry(c.Seq, "forwarded"), nil)
	fmt.Println("ready")
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

// TestRecoverAfterKill: a process killed (-9) between allow records and
// their forward records leaves them pending; the next start writes exactly
// one outcome record for each, none for requests with a forward record or
// that were not allowed, none twice across restarts, and the chain
// verifies.
func TestRecoverAfterKill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path)
	out, err := cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(string(out), "ready") {
		t.Fatalf("child: %v, output %q", err, out)
	}
	if st, ok := ee.Sys().(syscall.WaitStatus); !ok || !st.Signaled() || st.Signal() != syscall.SIGKILL {
		t.Fatalf("child not killed by SIGKILL: %v", err)
	}

	l := openAt(t, path, Options{})
	head := l.Head().Seq
	if head != 7 && head != 8 {
		t.Fatalf("head %d after the kill, want 7 or 8", head)
	}
	want := []uint64{3, 5}
	if head == 7 { // the last forward record did not make it
		want = append(want, 7)
	}
	pend, err := l.Pending()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(pend) != fmt.Sprint(want) {
		t.Fatalf("pending %v, want %v", pend, want)
	}
	n, err := l.Recover(context.Background())
	if err != nil || n != len(want) {
		t.Fatalf("Recover = %d, %v; want %d outcome records", n, err, len(want))
	}
	got := outcomes(t, l)
	if len(got) != len(want) {
		t.Errorf("outcome records for %d requests, want %d: %v", len(got), len(want), got)
	}
	for _, seq := range want {
		os := got[seq]
		if len(os) != 1 {
			t.Fatalf("request %d: %d outcome records", seq, len(os))
		}
		o := os[0]
		req, _ := l.Get(seq)
		var r Record
		_ = json.Unmarshal(req, &r)
		if o.Decision != record.Unknown || o.Reason != record.CrashRecovery || o.Seq <= head ||
			o.App != r.App || o.Action != r.Action || o.Digest != r.Digest || o.ApprovalID != r.ApprovalID || o.Policy != r.Policy ||
			o.Data["request_hash"] != r.Hash || o.Data["request_kind"] != string(r.Kind) ||
			o.Data["request_reason"] != string(r.Reason) || o.Data["erp_received"] != "unknown" || o.Data["detail"] == "" {
			t.Errorf("request %d (%+v): outcome %+v", seq, r, o)
		}
	}
	if pend, _ := l.Pending(); len(pend) != 0 {
		t.Errorf("still pending after Recover: %v", pend)
	}
	mustVerify(t, l, head+uint64(len(want)))

	// Again, and after a restart: nothing more.
	if n, err := l.Recover(context.Background()); n != 0 || err != nil {
		t.Errorf("second Recover = %d, %v", n, err)
	}
	l.Close()
	l = openAt(t, path, Options{})
	if n, err := l.Recover(context.Background()); n != 0 || err != nil {
		t.Errorf("Recover after a restart = %d, %v", n, err)
	}
	mustVerify(t, l, head+uint64(len(want)))
}

// TestPendingFollowsForwardRecords: an allow record is pending until its
// forward (or outcome) record commits; other records never are; a clean
// close with every forward written leaves nothing to recover.
func TestPendingFollowsForwardRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openAt(t, path, Options{})
	a := mustAppend(t, l, entry(0))
	b := mustAppend(t, l, overrideUse())
	mustAppend(t, l, denied())
	mustAppend(t, l, held())
	if p, _ := l.Pending(); fmt.Sprint(p) != fmt.Sprint([]uint64{a.Seq, b.Seq}) {
		t.Fatalf("pending %v, want [%d %d]", p, a.Seq, b.Seq)
	}
	done := make(chan error, 2)
	l.AppendAsync(forwardEntry(a.Seq, "forwarded"), func(_ Record, err error) { done <- err })
	l.AppendAsync(forwardEntry(b.Seq, "upstream_timeout"), func(_ Record, err error) { done <- err })
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if p, _ := l.Pending(); len(p) != 0 {
		t.Fatalf("pending %v after the forward records", p)
	}
	l.Close()
	l = openAt(t, path, Options{})
	if n, err := l.Recover(context.Background()); n != 0 || err != nil {
		t.Fatalf("Recover after a clean close = %d, %v", n, err)
	}
	mustVerify(t, l, 6)
}

// TestPendingBuiltForAnOlderFile: a file written before the bucket existed
// gets it built from the chain once, at Open.
func TestPendingBuiltForAnOlderFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openAt(t, path, Options{})
	a := mustAppend(t, l, entry(0))
	mustAppend(t, l, forwardEntry(a.Seq, "forwarded"))
	b := mustAppend(t, l, entry(1))
	if err := l.DB().Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketPending) }); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l = openAt(t, path, Options{})
	if p, _ := l.Pending(); fmt.Sprint(p) != fmt.Sprint([]uint64{b.Seq}) {
		t.Fatalf("pending %v, want [%d]", p, b.Seq)
	}
	if n, err := l.Recover(context.Background()); n != 1 || err != nil {
		t.Fatalf("Recover = %d, %v", n, err)
	}
	mustVerify(t, l, 4)
}

// TestRecoverManyIsBatched: thousands of cut-short requests cost a few
// commits, not one each.
func TestRecoverManyIsBatched(t *testing.T) {
	const n = 2500
	path := filepath.Join(t.TempDir(), "ledger.db")
	l := openAt(t, path, Options{})
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		l.AppendAsync(entry(0), func(_ Record, err error) {
			if err != nil {
				t.Error(err)
			}
			wg.Done()
		})
	}
	wg.Wait()
	l.Close()
	l = openAt(t, path, Options{})
	got, err := l.Recover(context.Background())
	if err != nil || got != n {
		t.Fatalf("Recover = %d, %v; want %d", got, err, n)
	}
	if s := l.Stats(); s.Commits > 10 || s.Outcomes != n {
		t.Errorf("stats %+v: want at most 10 commits for %d outcome records", s, n)
	}
	mustVerify(t, l, 2*n)
}

var errNoSpace = fmt.Errorf("write ledger.db: %w", syscall.ENOSPC)

// TestProbeClearsFailureWithoutTraffic: after a failed commit, the ledger
// becomes healthy again by itself once the disk is writable, with no
// append and no record written by the probe; while the probe fails it
// stays unhealthy.
func TestProbeClearsFailureWithoutTraffic(t *testing.T) {
	l := openTemp(t, Options{ProbeEvery: 20 * time.Millisecond})
	mustAppend(t, l, denied())
	l.failCommit = func() error { return errNoSpace }
	if _, err := l.Append(context.Background(), denied()); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("append: %v", err)
	}
	l.failCommit = nil // the writer reads it only inside a commit, and none runs now
	probeErr := fmt.Errorf("probe: %w", syscall.ENOSPC)
	failing := func() error { return probeErr }
	l.failProbe.Store(&failing)
	time.Sleep(150 * time.Millisecond)
	err := l.Healthy()
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "free space on that volume") {
		t.Fatalf("healthy while the probe fails: %v", err)
	}
	l.failProbe.Store(nil)
	deadline := time.Now().Add(5 * time.Second)
	for l.Healthy() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("still unhealthy with the disk writable and no traffic: %v", l.Healthy())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if h := l.Head(); h.Seq != 1 {
		t.Errorf("head %d: the probe wrote a record", h.Seq)
	}
	mustVerify(t, l, 1)
}

// TestLostForwardGetsOutcome: a forward record that fails with its commit
// (a full disk) becomes an outcome record, forward_not_recorded with what
// the forward record said, once the ledger is writable again, without
// waiting for a restart or for traffic.
func TestLostForwardGetsOutcome(t *testing.T) {
	l := openTemp(t, Options{ProbeEvery: 20 * time.Millisecond})
	a := mustAppend(t, l, entry(0))
	l.failCommit = func() error { return errNoSpace }
	done := make(chan error, 1)
	l.AppendAsync(forwardEntry(a.Seq, "forwarded"), func(_ Record, err error) { done <- err })
	if err := <-done; !errors.Is(err, ErrNoSpace) {
		t.Fatalf("forward record: %v", err)
	}
	l.failCommit = nil
	deadline := time.Now().Add(5 * time.Second)
	for l.Head().Seq < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no outcome record; healthy: %v", l.Healthy())
		}
		time.Sleep(10 * time.Millisecond)
	}
	o := outcomes(t, l)[a.Seq]
	if len(o) != 1 || o[0].Reason != record.ForwardNotRecorded || o[0].Decision != record.Unknown ||
		o[0].Data["forward_reason"] != "forwarded" || o[0].Data["erp_received"] != "yes" {
		t.Fatalf("outcome records %+v", o)
	}
	fw, _ := o[0].Data["forward"].(map[string]any)
	if fw["status"] != float64(201) || fw["response_sha256"] != katDigest {
		t.Errorf("outcome's forward data %v", fw)
	}
	if p, _ := l.Pending(); len(p) != 0 {
		t.Errorf("pending %v", p)
	}
	// A restart writes nothing more.
	if n, err := l.Recover(context.Background()); n != 0 || err != nil {
		t.Errorf("Recover = %d, %v", n, err)
	}
	mustVerify(t, l, 2)
}

// stallCommits makes the next commit hang inside its transaction, as a
// frozen file system's fsync does, until the returned release is called.
func stallCommits(t *testing.T, l *Ledger) (entered <-chan struct{}, release func()) {
	in, gate := make(chan struct{}), make(chan struct{})
	var once, released sync.Once
	l.failCommit = func() error {
		once.Do(func() {
			close(in)
			<-gate
		})
		return nil
	}
	release = func() { released.Do(func() { close(gate) }) }
	t.Cleanup(release)
	return in, release
}

// TestStuckCommit: while a commit hangs, Healthy reports the ledger stuck
// after StuckAfter, and an Append waiting on that commit returns at its
// caller's deadline (ErrCommitInFlight) instead of when the disk answers.
// When the commit does end, the allow record its caller gave up on gets
// an outcome record (not_forwarded), and the ledger is healthy again.
func TestStuckCommit(t *testing.T) {
	l := openTemp(t, Options{StuckAfter: 200 * time.Millisecond})
	entered, release := stallCommits(t, l)
	type res struct {
		err  error
		took time.Duration
	}
	resc := make(chan res, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := l.Append(ctx, entry(0)) // as the gate does: its append timeout
		resc <- res{err, time.Since(start)}
	}()
	<-entered
	if err := l.Healthy(); err != nil {
		t.Fatalf("unhealthy at once: %v", err)
	}
	var r res
	select {
	case r = <-resc:
	case <-time.After(3 * time.Second):
		t.Fatal("Append still waiting 3s after its 500ms deadline, on a stuck commit")
	}
	if !errors.Is(r.err, ErrCommitInFlight) || !errors.Is(r.err, context.DeadlineExceeded) || r.took > 2*time.Second {
		t.Fatalf("append = %v after %s; want ErrCommitInFlight at its deadline", r.err, r.took)
	}
	err := l.Healthy()
	if !errors.Is(err, ErrStuck) {
		t.Fatalf("healthy during a stuck commit: %v", err)
	}
	if d := l.InFlight(); d < 200*time.Millisecond {
		t.Errorf("in flight %s", d)
	}
	release()
	deadline := time.Now().Add(5 * time.Second)
	for l.Head().Seq < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no outcome record for the abandoned allow record (head %d)", l.Head().Seq)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := l.Healthy(); err != nil {
		t.Errorf("unhealthy after the commit ended: %v", err)
	}
	o := outcomes(t, l)[1]
	if len(o) != 1 || o[0].Reason != record.NotForwarded || o[0].Decision != record.Deny || o[0].Data["erp_received"] != "no" {
		t.Fatalf("outcome records %+v", o)
	}
	if s := l.Stats(); s.Slow != 1 {
		t.Errorf("stats %+v, want 1 slow commit", s)
	}
	if p, _ := l.Pending(); len(p) != 0 {
		t.Errorf("pending %v", p)
	}
	mustVerify(t, l, 2)
}

// TestStuckCommitOfOtherRecords: a record that lets nothing through (a
// denial) and is abandoned the same way gets no outcome record.
func TestStuckCommitOfOtherRecords(t *testing.T) {
	l := openTemp(t, Options{StuckAfter: 100 * time.Millisecond})
	entered, release := stallCommits(t, l)
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := l.Append(ctx, denied())
		errc <- err
	}()
	<-entered
	if err := <-errc; !errors.Is(err, ErrCommitInFlight) {
		t.Fatalf("append: %v", err)
	}
	release()
	mustAppend(t, l, held()) // after the stalled commit
	time.Sleep(50 * time.Millisecond)
	if h := l.Head().Seq; h != 2 {
		t.Fatalf("head %d, want the denial and the held request only", h)
	}
	mustVerify(t, l, 2)

	// Any other record (a forward record, an approval decision) waits for
	// its commit's result once taken: its caller acts on it.
	l = openTemp(t, Options{StuckAfter: 100 * time.Millisecond})
	entered, release = stallCommits(t, l)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := l.Append(ctx, forwardEntry(1, "forwarded"))
		errc <- err
	}()
	<-entered
	time.Sleep(100 * time.Millisecond)
	release()
	if err := <-errc; err != nil {
		t.Fatalf("forward record past its deadline: %v, want the commit's result", err)
	}
	mustVerify(t, l, 1)
}

func TestSpaceErrorMessage(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ledger.db")
	err := SpaceError(path, fmt.Errorf("commit: %w", syscall.ENOSPC))
	var ne *NoSpaceError
	if !errors.As(err, &ne) || !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("SpaceError = %#v", err)
	}
	msg := err.Error()
	for _, want := range []string{"no space left on device writing " + path, "bytes free on /", "free space on that volume and start again"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}
	if other := errors.New("disk on fire"); SpaceError(path, other) != other || SpaceError(path, nil) != nil {
		t.Error("SpaceError changed another error")
	}
}

// mountTmpfs mounts a tmpfs of size bytes for the test: the only way to
// see a real ENOSPC. It skips only when the kernel refuses the mount (not
// root, no CAP_SYS_ADMIN).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs to fill (%v: %s): run as root to test a full disk", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fill writes a file in dir until the volume is full.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return path
		}
	}
}

// TestDiskFull: on a real full volume appends fail with ErrNoSpace naming
// the file and the free bytes, nothing is half written, and once space is
// freed the ledger is healthy again by itself (no traffic), a forward
// record lost to the full disk becomes an outcome record, and the chain
// verifies.
func TestDiskFull(t *testing.T) {
	dir := mountTmpfs(t, "4m")
	path := filepath.Join(dir, "ledger.db")
	l := openAt(t, path, Options{ProbeEvery: 20 * time.Millisecond})
	a := mustAppend(t, l, entry(0))
	filler := fill(t, dir)
	big := denied()
	big.Data = map[string]any{"justification": strings.Repeat("x", 2000)}
	var err error
	for i := 0; i < 5000 && err == nil; i++ {
		_, err = l.Append(context.Background(), big)
	}
	var ne *NoSpaceError
	if !errors.As(err, &ne) || ne.Path != path || ne.Free < 0 {
		t.Fatalf("append on a full disk: %v", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "no space left on device writing "+path) || !strings.Contains(msg, "on "+dir) {
		t.Errorf("message %q", msg)
	}
	done := make(chan error, 1)
	l.AppendAsync(forwardEntry(a.Seq, "forwarded"), func(_ Record, err error) { done <- err })
	lostForward := <-done != nil
	if !lostForward {
		t.Log("the forward record found room; no outcome record expected")
	}
	if err := l.Healthy(); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("healthy on a full disk: %v", err)
	}
	head := l.Head().Seq
	time.Sleep(100 * time.Millisecond)
	if err := l.Healthy(); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("the probe cleared the failure with the disk still full: %v", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for l.Healthy() != nil || lostForward && l.Head().Seq == head {
		if time.Now().After(deadline) {
			t.Fatalf("space freed, no traffic: healthy %v, head %d", l.Healthy(), l.Head().Seq)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if lostForward {
		if o := outcomes(t, l)[a.Seq]; len(o) != 1 || o[0].Reason != record.ForwardNotRecorded {
			t.Fatalf("outcome records %+v", o)
		}
	}
	if p, _ := l.Pending(); len(p) != 0 {
		t.Errorf("pending %v", p)
	}
	mustAppend(t, l, denied())
	mustVerify(t, l, l.Head().Seq)
}
