package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/internal/miniotest"
	"github.com/uapk-gateway/uapk-proxy/internal/pgtest"
)

// proxyBin is the uapk-proxy binary every scenario runs: built once by
// TestMain, or $FAULTS_PROXY_BIN.
var proxyBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if p := os.Getenv("FAULTS_PROXY_BIN"); p != "" {
		proxyBin = p
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "uapk-faults-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	proxyBin = filepath.Join(dir, "uapk-proxy")
	out, err := exec.Command("go", "build", "-o", proxyBin, "../../cmd/uapk-proxy").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build ../../cmd/uapk-proxy: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// faultsRuns is $FAULTS_RUNS (default 1): it multiplies the kill -9
// rounds and the requests of every scenario.
func faultsRuns() int {
	n, err := strconv.Atoi(os.Getenv("FAULTS_RUNS"))
	if err != nil || n < 1 {
		return 1
	}
	return n
}

func (tl *tally) line(name string, ok bool) string {
	if tl.skipped != "" {
		return fmt.Sprintf("%-22s skipped: %s", name, tl.skipped)
	}
	s := fmt.Sprintf("%-22s runs %d requests %d acknowledged %d lost %d duplicated %d", name, tl.runs, tl.requests, tl.acked, tl.lost, tl.dup)
	switch {
	case len(tl.failed) > 0:
		s += " FAIL: " + strings.Join(tl.failed, ", ")
	case !ok:
		s += " FAIL"
	default:
		s += " ok"
	}
	return s
}

// TestFaults runs the scenarios one after another (they share two cores
// with the proxies they start) and prints the summary.
func TestFaults(t *testing.T) {
	if os.Getenv("UAPK_FAULTS") == "" {
		t.Skip("skipped: the fault-injection suite runs real serve processes, mounts file systems and kills servers; `make faults` runs it (UAPK_FAULTS=1)")
	}
	runs := faultsRuns()
	var lines []string
	sc := func(name string, f func(t *testing.T, tl *tally)) {
		tl := &tally{runs: 1}
		start := time.Now()
		ran := false
		ok := t.Run(name, func(t *testing.T) { ran = true; f(t, tl) })
		if ran { // not left out by -run
			lines = append(lines, tl.line(name, ok))
			t.Logf("%s: %v", name, time.Since(start).Round(time.Millisecond))
		}
	}
	sc("kill9", func(t *testing.T, tl *tally) { scenarioKill9(t, tl, runs) })
	sc("enospc", func(t *testing.T, tl *tally) { scenarioENOSPC(t, tl, runs) })
	sc("enospc-restart", func(t *testing.T, tl *tally) { scenarioENOSPCRestart(t, tl, runs) })
	sc("fsfreeze", func(t *testing.T, tl *tally) { scenarioFsfreeze(t, tl, runs) })
	sc("minio-kill", func(t *testing.T, tl *tally) { scenarioMinIO(t, tl, runs, false) })
	sc("minio-stop", func(t *testing.T, tl *tally) { scenarioMinIO(t, tl, runs, true) })
	for _, e := range erpCases {
		sc("erp-"+e.name, func(t *testing.T, tl *tally) { scenarioERP(t, tl, runs, e) })
	}
	sc("erp-client-gone", func(t *testing.T, tl *tally) { scenarioClientGone(t, tl, runs) })
	sc("held-sigterm", func(t *testing.T, tl *tally) { scenarioHeld(t, tl, runs, false) })
	sc("held-kill9", func(t *testing.T, tl *tally) { scenarioHeld(t, tl, runs, true) })
	sc("postgres-kill", func(t *testing.T, tl *tally) { scenarioPostgres(t, tl, runs) })

	if len(lines) == 0 {
		return
	}
	head := fmt.Sprintf("# faults %s, %s, FAULTS_RUNS=%d", time.Now().UTC().Format("2006-01-02"), machine(), runs)
	out := head + "\n" + strings.Join(lines, "\n") + "\n"
	fmt.Print("\n" + out)
	if p := os.Getenv("FAULTS_SUMMARY"); p != "" {
		if err := os.WriteFile(p, []byte(out), 0o644); err != nil {
			t.Errorf("FAULTS_SUMMARY: %v", err)
		}
	}
}

// machine names this machine for the summary: kernel, cores, CPU model.
func machine() string {
	var u syscall.Utsname
	kernel := runtime.GOOS
	if syscall.Uname(&u) == nil {
		kernel = fmt.Sprintf("%s %s %s", utsString(u.Sysname[:]), utsString(u.Release[:]), utsString(u.Machine[:]))
	}
	cpu := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d cores %s", kernel, runtime.NumCPU(), cpu)
}

func utsString(b []int8) string {
	var s strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		s.WriteByte(byte(c))
	}
	return s.String()
}

// ---------------------------------------------------------------------------
// Shared steps.

// serveN sends n reconciliations one after another and checks each is
// forwarded (200 allow).
func serveN(t *testing.T, tl *tally, name string, cl *clients, base string, n int) {
	t.Helper()
	hc := newHTTPClient(t, 20*time.Second)
	tl.check(t, name, func(t *testing.T) {
		bad := 0
		for range n {
			s := cl.make(false)
			send(context.Background(), hc, base, s)
			if s.err != nil || s.status != 200 || s.decision != "allow" {
				if bad++; bad <= 5 {
					t.Errorf("%s: %d %s %v %s, want 200 allow", s.nonce, s.status, s.decision, s.err, s.respBody)
				}
			}
		}
	})
}

// restartAndStop starts serve again on data (the start writes an outcome
// record for every allow the fault left without its forward record), sends
// a few requests and stops it.
func restartAndStop(t *testing.T, tl *tally, f *fixture, data string, up *upstream, cl *clients) {
	t.Helper()
	p := startServe(t, f.serveArgs(data, up.URL)...)
	serveN(t, tl, "serves-after-restart", cl, p.sidecar, 5)
	stopClean(t, tl, p)
}

// stopClean sends SIGTERM and checks serve exits 0.
func stopClean(t *testing.T, tl *tally, p *proc) {
	t.Helper()
	code := p.term(40 * time.Second)
	tl.check(t, "clean-stop", func(t *testing.T) {
		if code != 0 {
			t.Errorf("serve exited %d after SIGTERM, want 0; log:\n%s", code, p.log.tail(30))
		}
	})
}

func waitAcked(t *testing.T, cl *clients, n int, limit time.Duration) {
	t.Helper()
	if !waitFor(limit, func() bool { return cl.ackedCount() >= n }) {
		t.Fatalf("not %d acknowledged requests after %v: %s", n, limit, statusCounts(cl.sents()))
	}
}

func requireRoot(tl *tally, t *testing.T, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		tl.skip(t, what+" needs root (CI runs as root)")
	}
}

// mountTmpfs mounts a tmpfs of size (mount's size=) and unmounts it at
// cleanup; the error says why the kernel refused.
func mountTmpfs(t *testing.T, size string) (string, error) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", err
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		return "", fmt.Errorf("mount -t tmpfs: %v: %s", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { unmount(t, dir) })
	return dir, nil
}

func unmount(t *testing.T, dir string) {
	if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
		t.Logf("umount %s: %v %s; lazy unmount", dir, err, out)
		_ = exec.Command("umount", "-l", dir).Run()
	}
}

// fill writes zeros to path until the file system is full.
func fill(path string) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			return 0, nil
		}
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	var n int64
	for {
		m, err := f.Write(buf)
		n += int64(m)
		if errors.Is(err, syscall.ENOSPC) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// ---------------------------------------------------------------------------
// kill -9 at random points.

func scenarioKill9(t *testing.T, tl *tally, runs int) {
	f := newFixture(t, "0s")
	up := startUpstream(t)
	up.setDelay(15 * time.Millisecond) // forwards are always in flight when the kill comes
	data := filepath.Join(t.TempDir(), "data")
	cl := newClients()
	hc := newHTTPClient(t, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rounds := 8 * runs
	for i := range rounds {
		p := startServe(t, f.serveArgs(data, up.URL)...)
		stop := make(chan struct{})
		before := cl.ackedCount()
		wait := cl.load(ctx, hc, p.sidecar, 6, 5000, stop)
		waitAcked(t, cl, before+10, 30*time.Second)
		time.Sleep(time.Duration(100+rand.IntN(1500)) * time.Millisecond)
		p.kill9(t)
		close(stop)
		wait()
		t.Logf("round %d: %d acknowledged so far, %s", i+1, cl.ackedCount(), statusCounts(cl.sents()))
	}
	tl.runs = rounds
	// Before any start applies the journal, the offline readers of the
	// killed proxy's directory see every acknowledged request already.
	tl.check(t, "offline-reader-sees-acked", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, proxyBin, "verify", "--data-dir", data).CombinedOutput()
		if err != nil {
			t.Errorf("uapk-proxy verify --data-dir after kill -9: %v\n%s", err, out)
		}
		t.Logf("verify after the last kill -9: %s", strings.TrimSpace(string(out)))
		v := readLedger(data)
		if v.readError != nil {
			t.Fatalf("reading the killed proxy's ledger: %v", v.readError)
		}
		missing := 0
		for _, s := range cl.sents() {
			if !s.acked() {
				continue
			}
			found := len(v.bySHA[s.sha]) > 0
			if seq, err := strconv.ParseUint(s.record, 10, 64); err == nil {
				_, found = v.bySeq[seq]
			}
			if !found {
				if missing++; missing <= 5 {
					t.Errorf("%s answered %d (record %q): not in what an offline reader sees", s.nonce, s.status, s.record)
				}
			}
		}
		if missing > 5 {
			t.Errorf("... %d in all", missing)
		}
	})
	// The start after the last kill closes what it left open; then a clean stop.
	p := startServe(t, f.serveArgs(data, up.URL)...)
	serveN(t, tl, "serves-after-restart", cl, p.sidecar, 10)
	stopClean(t, tl, p)
	checkAll(t, tl, data, cl, up)
}

// ---------------------------------------------------------------------------
// ENOSPC on a tmpfs, and recovery without a restart.

func scenarioENOSPC(t *testing.T, tl *tally, runs int) {
	requireRoot(tl, t, "mounting a tmpfs")
	mnt, err := mountTmpfs(t, "16m")
	if err != nil {
		tl.skip(t, "no tmpfs: "+err.Error())
	}
	f := newFixture(t, "0s")
	up := startUpstream(t)
	data := filepath.Join(mnt, "data")
	cl := newClients()
	hc := newHTTPClient(t, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := startServe(t, f.serveArgs(data, up.URL)...)
	stop := make(chan struct{})
	wait := cl.load(ctx, hc, p.sidecar, 4, 3000*runs, stop)
	waitAcked(t, cl, 30, 30*time.Second)

	filler := filepath.Join(mnt, "filler")
	n, err := fill(filler)
	if err != nil {
		close(stop)
		wait()
		t.Fatalf("filling the tmpfs: %v", err)
	}
	fullAt := time.Now()
	t.Logf("filled the tmpfs with %d bytes", n)
	tl.check(t, "refuses-while-full", func(t *testing.T) {
		if !waitFor(10*time.Second, func() bool {
			for _, s := range cl.sents() {
				if s.start.After(fullAt) && !s.end.IsZero() && s.err == nil && s.status == 503 {
					return true
				}
			}
			return false
		}) {
			t.Errorf("no request answered 503 in 10 s of a full disk: %s", statusCounts(cl.sents()))
		}
	})
	tl.check(t, "readyz-503-while-full", func(t *testing.T) {
		if !waitFor(5*time.Second, func() bool { c, _ := readyz(p.admin); return c == 503 }) {
			c, b := readyz(p.admin)
			t.Errorf("/readyz %d %s on a full disk, want 503", c, b)
		}
	})
	close(stop)
	wait()
	time.Sleep(500 * time.Millisecond) // nothing in flight: recovery must come without traffic

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freedAt := time.Now()
	tl.check(t, "readyz-recovers", func(t *testing.T) {
		if !waitFor(5*time.Second, func() bool { c, _ := readyz(p.admin); return c == 200 }) {
			c, b := readyz(p.admin)
			t.Errorf("/readyz still %d %s 5 s after the disk had room again, with no traffic; want 200 within a few seconds", c, b)
		} else {
			t.Logf("/readyz 200 %v after the filler was removed", time.Since(freedAt).Round(time.Millisecond))
		}
	})
	serveN(t, tl, "serves-after-recovery", cl, p.sidecar, 20)
	stopClean(t, tl, p)
	restartAndStop(t, tl, f, data, up, cl)
	checkAll(t, tl, data, cl, up)
}

// A restart while the disk is full must say what to free and exit 2.
func scenarioENOSPCRestart(t *testing.T, tl *tally, runs int) {
	requireRoot(tl, t, "mounting a tmpfs")
	mnt, err := mountTmpfs(t, "16m")
	if err != nil {
		tl.skip(t, "no tmpfs: "+err.Error())
	}
	f := newFixture(t, "0s")
	up := startUpstream(t)
	data := filepath.Join(mnt, "data")
	cl := newClients()
	p := startServe(t, f.serveArgs(data, up.URL)...)
	serveN(t, tl, "serves-before", cl, p.sidecar, 20*runs)
	filler := filepath.Join(mnt, "filler")
	if _, err := fill(filler); err != nil {
		t.Fatalf("filling the tmpfs: %v", err)
	}
	hc := newHTTPClient(t, 20*time.Second)
	for range 5 {
		send(context.Background(), hc, p.sidecar, cl.make(false))
	}
	code := p.term(40 * time.Second)
	t.Logf("stop on a full disk: exit %d", code)

	p2 := launch(t, append([]string{"serve"}, f.serveArgs(data, up.URL)...)...)
	tl.check(t, "restart-full-exit2", func(t *testing.T) {
		if err := p2.listening(30 * time.Second); err == nil {
			t.Errorf("serve started listening on a full disk; log:\n%s", p2.log.tail(20))
			p2.term(40 * time.Second)
			return
		}
		code := p2.waitExit(10 * time.Second)
		out := p2.log.all()
		if code != 2 {
			t.Errorf("serve on a full disk exited %d, want 2 (a configuration problem: free space); output:\n%s", code, out)
		}
		if !strings.Contains(strings.ToLower(out), "free") || !strings.Contains(out, data) {
			t.Errorf("serve on a full disk did not say what to free (want the word \"free\" and the data directory %s); output:\n%s", data, out)
		}
	})
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	p3 := startServe(t, f.serveArgs(data, up.URL)...)
	serveN(t, tl, "serves-after-free", cl, p3.sidecar, 10)
	stopClean(t, tl, p3)
	checkAll(t, tl, data, cl, up)
}

// ---------------------------------------------------------------------------
// fsfreeze: the ledger stuck, not failing.

func scenarioFsfreeze(t *testing.T, tl *tally, runs int) {
	requireRoot(tl, t, "fsfreeze on a loop-mounted ext4")
	if _, err := exec.LookPath("fsfreeze"); err != nil {
		tl.skip(t, "no fsfreeze: "+err.Error())
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "ext4.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("truncate", "-s", "64M", img).CombinedOutput(); err != nil {
		tl.skip(t, fmt.Sprintf("truncate: %v %s", err, out))
	}
	if out, err := exec.Command("mkfs.ext4", "-q", img).CombinedOutput(); err != nil {
		tl.skip(t, fmt.Sprintf("no ext4 image (mkfs.ext4: %v %s)", err, strings.TrimSpace(string(out))))
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		tl.skip(t, fmt.Sprintf("no loop mount (the kernel refused: %v %s)", err, strings.TrimSpace(string(out))))
	}
	t.Cleanup(func() { unmount(t, mnt) })
	frozen := false
	thaw := func() {
		if frozen {
			if out, err := exec.Command("fsfreeze", "-u", mnt).CombinedOutput(); err != nil {
				t.Errorf("fsfreeze -u: %v %s", err, out)
			}
			frozen = false
		}
	}

	f := newFixture(t, "0s")
	up := startUpstream(t)
	data := filepath.Join(mnt, "data")
	cl := newClients()
	hc := newHTTPClient(t, 60*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := startServe(t, f.serveArgs(data, up.URL)...)
	t.Cleanup(thaw) // before the process cleanup: a frozen writer cannot die
	stop := make(chan struct{})
	wait := cl.load(ctx, hc, p.sidecar, 4, 3000*runs, stop)
	waitAcked(t, cl, 30, 30*time.Second)

	if out, err := exec.Command("fsfreeze", "-f", mnt).CombinedOutput(); err != nil {
		close(stop)
		wait()
		tl.skip(t, fmt.Sprintf("fsfreeze -f refused: %v %s", err, strings.TrimSpace(string(out))))
	}
	frozen = true
	frozeAt := time.Now()
	tl.check(t, "readyz-503-while-frozen", func(t *testing.T) {
		if !waitFor(6*time.Second, func() bool { c, _ := readyz(p.admin); return c == 503 }) {
			c, b := readyz(p.admin)
			t.Errorf("/readyz %d %s with the ledger's file system frozen for %v, want 503", c, b, time.Since(frozeAt).Round(time.Second))
		}
	})
	if d := 3*time.Second - time.Since(frozeAt); d > 0 {
		time.Sleep(d)
	}
	thaw()
	tl.check(t, "readyz-recovers", func(t *testing.T) {
		if !waitFor(5*time.Second, func() bool { c, _ := readyz(p.admin); return c == 200 }) {
			c, b := readyz(p.admin)
			t.Errorf("/readyz %d %s 5 s after the thaw, want 200", c, b)
		}
	})
	close(stop)
	wait()
	serveN(t, tl, "serves-after-thaw", cl, p.sidecar, 20)
	stopClean(t, tl, p)
	restartAndStop(t, tl, f, data, up, cl)
	checkAll(t, tl, data, cl, up)
}

// ---------------------------------------------------------------------------
// MinIO killed (kill -9, then restarted) and SIGSTOPped (then SIGCONT).

type archiveState struct {
	Archive struct {
		Segments    int     `json:"segments"`
		Failures    int     `json:"failures"`
		Backlog     int     `json:"backlog"`
		ArchivedSeq uint64  `json:"archived_seq"`
		HeadSeq     uint64  `json:"head_seq"`
		BacklogAge  float64 `json:"backlog_age_seconds"`
		LastError   string  `json:"last_error"`
	} `json:"archive"`
}

func archiveOf(admin string) (archiveState, int) {
	code, b := readyz(admin)
	var a archiveState
	_ = json.Unmarshal([]byte(b), &a)
	return a, code
}

// childPID finds the process this test binary started that listens on
// addr (MinIO's --address).
func childPID(addr string) (int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	me := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
		fields := strings.Fields(rest)
		if len(fields) < 2 || fields[1] != strconv.Itoa(me) {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		args := strings.Split(string(cmdline), "\x00")
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "--address" && args[i+1] == addr {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no child process listening on %s", addr)
}

func isSlowUploadWarn(line string) bool {
	l := strings.ToLower(line)
	return strings.Contains(l, `"level":"warn"`) && strings.Contains(l, "slow")
}

func scenarioMinIO(t *testing.T, tl *tally, runs int, sigstop bool) {
	ms := miniotest.Start(t)
	ms.SetEnv(t)
	ms.MakeBucket(t, "faults", miniotest.BucketOptions{ObjectLock: true})
	addr := strings.TrimPrefix(ms.Endpoint, "http://")
	pid, err := childPID(addr)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	cont := func() {
		if stopped {
			_ = syscall.Kill(pid, syscall.SIGCONT)
			stopped = false
		}
	}
	t.Cleanup(cont) // before miniotest's stop
	f := newFixture(t, "0s")
	cfg := filepath.Join(f.dir, "config.yaml")
	const segRecords = 25
	conf := fmt.Sprintf("archive:\n  s3:\n    bucket: faults\n    endpoint: %s\n    path_style: true\n    region: %s\n  segment_records: %d\n  segment_interval: 1s\n",
		ms.Endpoint, miniotest.Region, segRecords)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	up := startUpstream(t)
	data := filepath.Join(t.TempDir(), "data")
	cl := newClients()
	hc := newHTTPClient(t, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := startServe(t, f.serveArgs(data, up.URL, "--config", cfg)...)
	stop := make(chan struct{})
	// A bounded rate: two workers, a pause in the ERP.
	up.setDelay(10 * time.Millisecond)
	wait := cl.load(ctx, hc, p.sidecar, 2, 4000*runs, stop)
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wait()
	}()
	if !waitFor(30*time.Second, func() bool { a, _ := archiveOf(p.admin); return a.Archive.Segments >= 1 }) {
		a, _ := archiveOf(p.admin)
		t.Fatalf("no segment archived to MinIO in 30 s: %+v", a)
	}
	faultAt := time.Now()
	var segsAtFault int
	{
		a, _ := archiveOf(p.admin)
		segsAtFault = a.Archive.Segments
	}
	if sigstop {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		stopped = true
		// Up to 20 s of a hung S3 (far less than the SDK's 2 minutes), ending
		// as soon as the proxy says so.
		warned := waitFor(20*time.Second, func() bool { _, ok := p.log.find(isSlowUploadWarn); return ok })
		t.Logf("MinIO stopped for %v (warned: %v)", time.Since(faultAt).Round(time.Millisecond), warned)
		tl.check(t, "readyz-ok-during-hang", func(t *testing.T) {
			if c, b := readyz(p.admin); c != 200 {
				t.Errorf("/readyz %d %s while S3 hangs; an outage is not a failure", c, b)
			}
		})
		cont()
	} else {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		time.Sleep(4 * time.Second)
		tl.check(t, "readyz-ok-during-outage", func(t *testing.T) {
			if c, b := readyz(p.admin); c != 200 {
				t.Errorf("/readyz %d %s while S3 is down; an outage is not a failure", c, b)
			}
		})
		ms.Restart()
	}
	backAt := time.Now()
	tl.check(t, "serves-during-fault", func(t *testing.T) {
		n, bad := 0, 0
		for _, s := range cl.sents() {
			if s.start.After(faultAt) && s.end.Before(backAt) && !s.end.IsZero() {
				n++
				if s.err != nil || s.status != 200 {
					if bad++; bad <= 5 {
						t.Errorf("%s: %d %v %s while S3 was out", s.nonce, s.status, s.err, s.respBody)
					}
				}
			}
		}
		if n < 10 {
			t.Errorf("only %d requests answered while S3 was out", n)
		}
	})
	if sigstop {
		tl.check(t, "s3-slow-warn", func(t *testing.T) {
			if !waitFor(5*time.Second, func() bool { _, ok := p.log.find(isSlowUploadWarn); return ok }) {
				t.Errorf("S3 hung %v and the proxy logged no warn-level line about a slow upload", backAt.Sub(faultAt).Round(time.Second))
			}
		})
	}
	tl.check(t, "backlog-drains", func(t *testing.T) {
		if !waitFor(60*time.Second, func() bool {
			a, _ := archiveOf(p.admin)
			return a.Archive.Segments > segsAtFault+1 && a.Archive.Backlog < 3*segRecords
		}) {
			a, _ := archiveOf(p.admin)
			t.Errorf("the archive backlog did not drain within 60 s of S3's return: %+v", a)
		}
	})
	close(stop)
	wait()
	stopClean(t, tl, p)
	tl.check(t, "archive-verifies", func(t *testing.T) {
		vctx, vcancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer vcancel()
		out, err := exec.CommandContext(vctx, proxyBin, "verify", "--data-dir", data, "--archive", "--manifest", f.manifest, "--config", cfg).CombinedOutput()
		if err != nil {
			t.Errorf("verify --archive: %v\n%s", err, out)
		}
	})
	checkAll(t, tl, data, cl, up)
}

// ---------------------------------------------------------------------------
// The ERP refused, reset, partial, hung and slow.

type erpCase struct {
	name            string
	mode            string        // upstream mode; "refused": nothing listens
	delay           time.Duration // modeOK
	upstreamTimeout string
	status          int
	errCode         string // the answer's "error"
}

var erpCases = []erpCase{
	{name: "refused", mode: "refused", upstreamTimeout: "5s", status: 502, errCode: "upstream_unavailable"},
	{name: "reset", mode: modeReset, upstreamTimeout: "5s", status: 502, errCode: "upstream_error"},
	{name: "partial", mode: modePartial, upstreamTimeout: "5s", status: 502, errCode: "upstream_error"},
	{name: "hung", mode: modeHung, upstreamTimeout: "2s", status: 504, errCode: "upstream_timeout"},
	{name: "slow", mode: modeOK, delay: 1500 * time.Millisecond, upstreamTimeout: "5s", status: 200},
}

func scenarioERP(t *testing.T, tl *tally, runs int, e erpCase) {
	f := newFixture(t, "0s")
	up := startUpstream(t)
	url := up.URL
	if e.mode == "refused" {
		url = closedPortURL(t)
	} else {
		up.setMode(e.mode)
		up.setDelay(e.delay)
	}
	data := filepath.Join(t.TempDir(), "data")
	cl := newClients()
	hc := newHTTPClient(t, 30*time.Second)
	p := startServe(t, f.serveArgs(data, url, "--upstream-timeout", e.upstreamTimeout)...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl.load(ctx, hc, p.sidecar, 3, 3*runs, nil)()
	tl.check(t, "answers-"+e.name, func(t *testing.T) {
		for _, s := range cl.sents() {
			var body struct {
				Error string `json:"error"`
			}
			_ = json.Unmarshal(s.respBody, &body)
			if s.err != nil || s.status != e.status || body.Error != e.errCode || s.decision != "allow" {
				t.Errorf("%s: %d %q (%s) %v %s; want %d %q", s.nonce, s.status, body.Error, s.decision, s.err, s.respBody, e.status, e.errCode)
			}
		}
	})
	up.close() // hung connections end before the stop
	stopClean(t, tl, p)
	checkAll(t, tl, data, cl, up)
}

// A client that gives up on a hung ERP: the proxy must hang up on the ERP
// too, within a second or two, not hold the call for --upstream-timeout.
func scenarioClientGone(t *testing.T, tl *tally, runs int) {
	f := newFixture(t, "0s")
	up := startUpstream(t)
	up.setMode(modeHung)
	data := filepath.Join(t.TempDir(), "data")
	cl := newClients()
	p := startServe(t, f.serveArgs(data, up.URL, "--upstream-timeout", "30s")...)
	hc := newHTTPClient(t, time.Second) // the client gives up after 1 s
	n := 3 * runs
	var gone []*sent
	done := make(chan struct{}, n)
	for range n {
		s := cl.make(false)
		gone = append(gone, s)
		go func() { send(context.Background(), hc, p.sidecar, s); done <- struct{}{} }()
	}
	for range n {
		<-done
	}
	tl.check(t, "upstream-cancel", func(t *testing.T) {
		waitFor(6*time.Second, func() bool { return len(up.hangUpsSeen()) >= n })
		at := map[string]time.Time{}
		for _, h := range up.hangUpsSeen() {
			at[h.nonce] = h.at
		}
		for _, s := range gone {
			if s.err == nil {
				t.Errorf("%s: answered %d before the client gave up", s.nonce, s.status)
				continue
			}
			if up.hitsOf(s.nonce) != 1 {
				t.Errorf("%s reached the upstream %d times", s.nonce, up.hitsOf(s.nonce))
				continue
			}
			h, ok := at[s.nonce]
			switch {
			case !ok:
				t.Errorf("%s: the client gave up at %s and the upstream call was still open %v later (--upstream-timeout 30s); want it closed within 2 s",
					s.nonce, s.end.Format("15:04:05.000"), time.Since(s.end).Round(100*time.Millisecond))
			case h.Sub(s.end) > 2*time.Second:
				t.Errorf("%s: the upstream call closed %v after the client gave up, want within 2 s", s.nonce, h.Sub(s.end).Round(10*time.Millisecond))
			default:
				t.Logf("%s: upstream call closed %v after the client gave up", s.nonce, h.Sub(s.end).Round(time.Millisecond))
			}
		}
	})
	up.close()
	stopClean(t, tl, p)
	checkAll(t, tl, data, cl, up)
}

// ---------------------------------------------------------------------------
// Held approvals across SIGTERM and kill -9.

func scenarioHeld(t *testing.T, tl *tally, runs int, kill bool) {
	f := newFixture(t, "5m")
	up := startUpstream(t)
	data := filepath.Join(t.TempDir(), "data")
	cl := newClients()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := startServe(t, f.serveArgs(data, up.URL)...)
	heldN := 6 * runs
	heldClient := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: 2 * time.Minute}
	var held []*sent
	done := make(chan struct{}, heldN)
	for range heldN {
		s := cl.make(true)
		held = append(held, s)
		go func() { send(ctx, heldClient, p.sidecar, s); done <- struct{}{} }()
	}
	stop := make(chan struct{})
	wait := cl.load(ctx, newHTTPClient(t, 20*time.Second), p.sidecar, 2, 2000*runs, stop)
	if !waitFor(30*time.Second, func() bool { return metricValue(p.admin, "uapk_held_connections") == float64(heldN) }) {
		close(stop)
		wait()
		t.Fatalf("%d requests not held after 30 s (uapk_held_connections %v)", heldN, metricValue(p.admin, "uapk_held_connections"))
	}
	waitAcked(t, cl, 20, 30*time.Second)
	if kill {
		p.kill9(t)
	} else {
		stopClean(t, tl, p)
	}
	close(stop)
	wait()
	for range heldN {
		<-done
	}
	tl.check(t, "held-not-forwarded", func(t *testing.T) {
		for _, s := range held {
			if n := up.hitsOf(s.nonce); n != 0 {
				t.Errorf("held %s reached the upstream %d times before any approval", s.nonce, n)
			}
		}
	})
	if !kill {
		tl.check(t, "held-answered-202", func(t *testing.T) {
			for _, s := range held {
				if s.err != nil || s.status != 202 || s.approval == "" || s.decision != "pending" {
					t.Errorf("held %s: %d %s %v %s, want 202 pending with its approval id", s.nonce, s.status, s.decision, s.err, s.respBody)
				}
			}
		})
	}

	p2 := startServe(t, f.serveArgs(data, up.URL)...)
	token := adminToken(t, data)
	pending, err := pendingByBody(ctx, p2.admin, token)
	if err != nil {
		t.Fatal(err)
	}
	tl.check(t, "held-survive-restart", func(t *testing.T) {
		for _, s := range held {
			id, ok := pending[s.body]
			switch {
			case !ok:
				t.Errorf("held %s (%d %v) has no pending approval after the restart", s.nonce, s.status, s.err)
			case s.approval != "" && s.approval != id:
				t.Errorf("held %s: told approval %s, pending after the restart is %s", s.nonce, s.approval, id)
			}
		}
	})
	tl.check(t, "approved-retry-forwarded-once", func(t *testing.T) {
		retryClient := newHTTPClient(t, 30*time.Second)
		for _, s := range held {
			id, ok := pending[s.body]
			if !ok {
				continue
			}
			if err := approve(ctx, f, p2.admin, token, id); err != nil {
				t.Errorf("held %s: %v", s.nonce, err)
				continue
			}
			r := cl.retry(s)
			send(ctx, retryClient, p2.sidecar, r, "X-UAPK-Approval-Id", id)
			if r.err != nil || r.status != 200 || r.decision != "allow" {
				t.Errorf("held %s: retry with approval %s: %d %s %v %s", s.nonce, id, r.status, r.decision, r.err, r.respBody)
			}
			if n := up.hitsOf(s.nonce); n != 1 {
				t.Errorf("held %s: at the upstream %d times after its approved retry", s.nonce, n)
			}
		}
	})
	stopClean(t, tl, p2)
	checkAll(t, tl, data, cl, up)
}

// ---------------------------------------------------------------------------
// PostgreSQL (the fleet's approval store) killed under load.

func scenarioPostgres(t *testing.T, tl *tally, runs int) {
	pg := pgtest.Start(t)
	dsn := pg.NewDB(t)
	f := newFixture(t, "0s")
	cfg := filepath.Join(f.dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte("approvals:\n  postgres: "+dsn+"\n  instance: faults-a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	up := startUpstream(t)
	data := filepath.Join(t.TempDir(), "data")
	cl := newClients()
	hc := newHTTPClient(t, 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p := startServe(t, f.serveArgs(data, up.URL, "--config", cfg)...)
	stop := make(chan struct{})
	wait := cl.loadMixed(ctx, hc, p.sidecar, 3, 3000*runs, 4, stop) // every 4th a journal entry (202 at once)
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wait()
	}()
	waitAcked(t, cl, 30, 30*time.Second)
	pg.Kill()
	killedAt := time.Now()
	time.Sleep(3 * time.Second)
	t.Logf("PostgreSQL down for 3 s: %s", statusCounts(cl.sents()))
	if err := pg.Restart(); err != nil {
		t.Fatalf("PostgreSQL restart: %v", err)
	}
	backAt := time.Now()
	tl.check(t, "reconciliations-during-outage", func(t *testing.T) {
		for _, s := range cl.sents() {
			if !s.held && s.start.After(killedAt) && !s.end.IsZero() && s.end.Before(backAt) && (s.err != nil || s.status != 200) {
				t.Errorf("%s (auto-approved, needs no approval store): %d %v %s", s.nonce, s.status, s.err, s.respBody)
			}
		}
	})
	tl.check(t, "held-recovers", func(t *testing.T) {
		if !waitFor(30*time.Second, func() bool {
			for _, s := range cl.sents() {
				if s.held && s.start.After(backAt) && s.status == 202 {
					return true
				}
			}
			return false
		}) {
			t.Errorf("no journal entry answered 202 in the 30 s after PostgreSQL came back: %s", statusCounts(cl.sents()))
		}
	})
	close(stop)
	wait()
	token := adminToken(t, data)
	tl.check(t, "acked-approvals-in-store", func(t *testing.T) {
		var last *sent
		for _, s := range cl.sents() {
			if !s.held || s.status != 202 {
				continue
			}
			code, b, err := adminDo(ctx, "GET", p.admin+"/v1/approvals/"+s.approval, token, "")
			if err != nil || code != 200 {
				t.Errorf("%s answered 202 with approval %q, which the store does not have: %d %v %s", s.nonce, s.approval, code, err, b)
				continue
			}
			last = s
		}
		if last == nil {
			t.Fatal("no approval to approve")
		}
		if err := approve(ctx, f, p.admin, token, last.approval); err != nil {
			t.Fatal(err)
		}
		r := cl.retry(last)
		send(ctx, hc, p.sidecar, r, "X-UAPK-Approval-Id", last.approval)
		if r.err != nil || r.status != 200 || up.hitsOf(r.nonce) != 1 {
			t.Errorf("retry of %s with approval %s: %d %v %s, at the upstream %d times", r.nonce, last.approval, r.status, r.err, r.respBody, up.hitsOf(r.nonce))
		}
	})
	stopClean(t, tl, p)
	checkAll(t, tl, data, cl, up)
}
