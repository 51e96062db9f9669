package cli

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/internal/testbin"
)

// TestSIGTERMLosesNoDecisionLine runs the real binary, whose log is
// buffered: requests answered just before SIGTERM have their decision
// lines still in the buffer when the signal comes, and every one of them
// must reach stderr before the process exits 0.
func TestSIGTERMLosesNoDecisionLine(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "uapk-proxy")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/uapk-proxy").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	erp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"REC-1","status":"reconciled"}`)
	}))
	defer erp.Close()
	principals := filepath.Join(dir, "principals.yaml")
	if err := os.WriteFile(principals, []byte("principals:\n  - id: accountant@corp.example\n    roles: [staff_accountant]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--manifest", "../../examples/manifests/sox-financial.json",
		"--principals", principals, "--upstream", erp.URL, "--sidecar-addr", "127.0.0.1:0",
		"--admin-addr", "127.0.0.1:0", "--proxy-addr", "", "--data-dir", filepath.Join(dir, "data"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	testbin.DieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var lines []string
	listening := make(chan string, 1)
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			var l struct {
				Message     string `json:"message"`
				SidecarAddr string `json:"sidecar_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Message == "listening" {
				listening <- l.SidecarAddr
			}
		}
	}()
	defer func() { _ = cmd.Process.Kill() }() // only if the test failed before the SIGTERM
	var sidecar string
	select {
	case sidecar = <-listening:
	case <-exited:
		t.Fatalf("serve exited before listening:\n%s", strings.Join(lines, "\n"))
	case <-time.After(time.Minute):
		t.Fatal("serve not listening after a minute")
	}

	const workers, each = 8, 40
	var mu sync.Mutex
	var seqs []uint64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				req, _ := http.NewRequest("POST", "http://"+sidecar+"/api/v1/reconciliations",
					strings.NewReader(`{"account":"1010-Cash","period":"2026-Q3","statement_balance":"48210.55"}`))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-UAPK-On-Behalf-Of", "accountant@corp.example")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				seq, err := strconv.ParseUint(resp.Header.Get("X-UAPK-Record"), 10, 64)
				if resp.StatusCode != 200 || err != nil {
					t.Errorf("status %d, record %q", resp.StatusCode, resp.Header.Get("X-UAPK-Record"))
					return
				}
				mu.Lock()
				seqs = append(seqs, seq)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-exited
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v", err)
	}
	if t.Failed() {
		return
	}

	logged := map[uint64]bool{}
	stopped := false
	for _, line := range lines {
		var l struct {
			Message  string `json:"message"`
			Decision string `json:"decision"`
			Seq      uint64 `json:"seq"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Errorf("not a JSON line: %q", line)
			continue
		}
		if l.Message == "decision" && l.Decision == "allow" {
			logged[l.Seq] = true
		}
		stopped = stopped || l.Message == "stopped"
	}
	var missing []uint64
	for _, s := range seqs {
		if !logged[s] {
			missing = append(missing, s)
		}
	}
	if len(seqs) != workers*each || len(missing) > 0 {
		t.Errorf("%d requests answered; %d with no decision line: %v", len(seqs), len(missing), missing)
	}
	if !stopped {
		t.Errorf("no stopped line; the log ends:\n%s", strings.Join(lines[max(0, len(lines)-5):], "\n"))
	}
}
