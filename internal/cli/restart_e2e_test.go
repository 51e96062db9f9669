package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/checkpoint"
	"github.com/uapk-gateway/uapk-proxy/examples/erp-mock/erpmock"
	"github.com/uapk-gateway/uapk-proxy/internal/adminauth"
	"github.com/uapk-gateway/uapk-proxy/internal/keys"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
)

// The "Done when" for graceful restarts, with the real binary and a
// real SIGTERM: K journal entries are held on their connections and a stream
// of auto-approved reconciliations is in flight (some of them parked inside
// the ERP) when the signal arrives. Every held agent must get its 202 and
// approval id with nothing of it at the ERP; every reconciliation must have
// reached the ERP exactly once if its client got 200, and not at all if its
// client got any other answer; a connection error may mean either, never
// twice. After a restart on the same data dir the held approvals are still
// pending, are approved, and each retry reaches the ERP once. The chain
// verifies offline and holds one request record per answered request.
//
// Deadlines here are safety bounds only; nothing asserts how fast anything is.
func TestSIGTERMUnderLoadLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binary")
	}
	const (
		heldN     = 20  // journal entries held on their connections
		streamers = 6   // goroutines sending reconciliations one after another
		streamMax = 150 // most reconciliations one streamer sends
		pauseAt   = 40  // a streamer waits here for the SIGTERM, so the stream stays bounded if it is late
		latched   = 3   // reconciliations parked inside the ERP across the SIGTERM
		grace     = 10 * time.Second
	)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	bin := buildProxyBinary(t, ctx)
	dir := t.TempDir()
	principals := writePrincipals(t, dir)
	mo := &serveOptions{Manifest: "../../examples/manifests/sox-financial.json", Principals: principals}
	withHold("5m")(mo)
	if b, err := os.ReadFile(mo.Manifest); err != nil || !bytes.Contains(b, []byte(`"hold": "5m"`)) {
		t.Fatalf("manifest with a hold: %v", err)
	}
	dataDir := filepath.Join(dir, "data")
	// The gateway key is made here, not on first start, so that its
	// signed-note verifier key has a '+' in its base64, as about half of
	// all keys do: the archive's checkpoints must be signable with it.
	gwPub := writeGatewayKeyWithPlus(t, dataDir, "uapk-proxy/financial-ai-assistant")

	front := newERPFront()
	erpSrv := httptest.NewServer(front)
	t.Cleanup(erpSrv.Close)
	t.Cleanup(front.release) // runs first: nothing stays parked when the ERP closes

	serveArgs := []string{
		"--manifest", mo.Manifest, "--principals", principals, "--upstream", erpSrv.URL,
		"--sidecar-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--proxy-addr=",
		"--data-dir", dataDir, "--shutdown-grace", grace.String(),
	}
	p := startProxyProcess(t, ctx, bin, serveArgs...)

	heldTr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	streamTr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: streamers}
	t.Cleanup(heldTr.CloseIdleConnections)
	t.Cleanup(streamTr.CloseIdleConnections)
	heldClient := &http.Client{Transport: heldTr}
	streamClient := &http.Client{Transport: streamTr}
	nonce := randomHex(4)

	// 1. K journal entries, each a distinct body, held on their connections.
	type heldReq struct {
		body, sha string
		out       httpOutcome
	}
	held := make([]heldReq, heldN)
	var heldWG sync.WaitGroup
	heldDone := make(chan int, heldN)
	for i := range held {
		held[i].body = fmt.Sprintf(`{"account":"4000-Revenue","debit":0,"credit":%d,"description":"Q3 accrual held-%02d-%s"}`, 250000+i, i, nonce)
		held[i].sha = sha256Hex([]byte(held[i].body))
		heldWG.Add(1)
		go func(i int) {
			defer heldWG.Done()
			held[i].out = sendRequest(ctx, heldClient, "POST", p.sidecar+"/api/v1/journal-entries", held[i].body,
				"X-UAPK-Justification", "quarter-end accrual "+strconv.Itoa(i))
			heldDone <- i
		}(i)
	}
	waitUntil(t, ctx, "all journal entries held", func() bool {
		select {
		case i := <-heldDone:
			t.Fatalf("held request %d answered before the SIGTERM: %+v", i, held[i].out)
		default:
		}
		return metricValue(ctx, heldClient, p.admin, "uapk_held_connections") == heldN
	})

	// 2. A bounded stream of auto-approved reconciliations, each body marked.
	type streamReq struct {
		marker, sha string
		afterSig    bool      // sent after the SIGTERM was
		answeredAt  time.Time // when the answer (or error) came
		out         httpOutcome
	}
	var (
		streamMu sync.Mutex
		stream   []streamReq
		streamWG sync.WaitGroup
	)
	sigSent := make(chan struct{})
	for g := range streamers {
		streamWG.Add(1)
		go func(g int) {
			defer streamWG.Done()
			for i := range streamMax {
				if i == pauseAt {
					select {
					case <-sigSent:
					case <-ctx.Done():
						return
					}
				}
				var after bool
				select {
				case <-sigSent:
					after = true
				default:
				}
				marker := fmt.Sprintf("rec-%s-g%d-%03d", nonce, g, i)
				body := `{"account":"1010-Cash","period":"2026-Q3","statement_balance":"48210.55","memo":"` + marker + `"}`
				out := sendRequest(ctx, streamClient, "POST", p.sidecar+"/api/v1/reconciliations", body,
					"X-UAPK-On-Behalf-Of", "accountant@corp.example")
				streamMu.Lock()
				stream = append(stream, streamReq{marker: marker, sha: sha256Hex([]byte(body)), afterSig: after, answeredAt: time.Now(), out: out})
				streamMu.Unlock()
				if out.err != nil {
					return // after the SIGTERM: the door is closed from here on
				}
			}
		}(g)
	}
	waitUntil(t, ctx, "reconciliations flowing", func() bool { return front.reconciliations() >= 60 })

	// 3. Park the next few forwards inside the ERP, so they are in flight
	// when the signal arrives; the others keep streaming.
	front.arm(latched)
	waitUntil(t, ctx, "forwards parked in the ERP", func() bool { return front.parkedCount() == latched })

	// 4. SIGTERM.
	sigAt := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	close(sigSent)

	// Every held agent is answered while the parked forwards are still in
	// flight (the process cannot drain before they finish).
	waitUntil(t, ctx, "held agents answered", func() bool { return len(heldDone) == heldN })
	heldWG.Wait()
	select {
	case <-p.exited:
		t.Errorf("the proxy exited while forwards were in flight: %v", p.waitErr)
	default:
	}
	front.release()
	code := p.wait(t, grace+30*time.Second)
	t.Logf("first stop: exit %d, %v after SIGTERM", code, time.Since(sigAt).Round(time.Millisecond))
	if code != 0 {
		t.Fatalf("serve exited %d after SIGTERM, want 0; log:\n%s", code, p.log.tail(60))
	}
	streamDone := make(chan struct{})
	go func() { streamWG.Wait(); close(streamDone) }()
	select {
	case <-streamDone:
	case <-ctx.Done():
		t.Fatal("reconciliation stream did not end")
	}

	// What the clients were told against what the ERP saw.
	hits := front.hitsBySHA()
	known := map[string]bool{}
	heldIDs := map[string]bool{}
	for i, h := range held {
		known[h.sha] = true
		o := h.out
		if o.err != nil || o.status != 202 {
			t.Errorf("held %d: %d %v %s, want 202", i, o.status, o.err, o.body)
			continue
		}
		var pb struct {
			Status     string `json:"status"`
			ApprovalID string `json:"approval_id"`
		}
		_ = json.Unmarshal(o.body, &pb)
		id := o.header.Get("X-UAPK-Approval-Id")
		if id == "" || pb.ApprovalID != id || pb.Status != "PENDING_APPROVAL" || o.header.Get("X-UAPK-Decision") != "pending" {
			t.Errorf("held %d: 202 without its approval id: %v %s", i, o.header, o.body)
		}
		if heldIDs[id] {
			t.Errorf("held %d: approval id %s given twice", i, id)
		}
		heldIDs[id] = true
		if hits[h.sha] != 0 {
			t.Errorf("held %d reached the ERP %d times before any approval", i, hits[h.sha])
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	parked := map[string]bool{}
	for _, sha := range front.parkedSHAs() {
		parked[sha] = true
	}
	var ok200, got503, connErr, connErrAtERP, afterSig, okAfterSig, inFlight int
	connErrKinds := map[string]int{}
	for _, r := range stream {
		known[r.sha] = true
		n := hits[r.sha]
		if r.afterSig {
			afterSig++
		} else if r.answeredAt.After(sigAt) {
			inFlight++ // sent before the SIGTERM, answered after it
		} else if r.out.err != nil || r.out.status != 200 {
			t.Errorf("%s: %d %v %s before the SIGTERM", r.marker, r.out.status, r.out.err, r.out.body)
		}
		switch {
		case r.out.deadline:
			t.Errorf("%s: the test's deadline passed: %v", r.marker, r.out.err)
		case r.out.err != nil:
			connErr++
			connErrAtERP += n
			msg := r.out.err.Error()
			connErrKinds[msg[strings.LastIndex(msg, ": ")+2:]]++
			if n > 1 {
				t.Errorf("%s: connection error (%v) and at the ERP %d times", r.marker, r.out.err, n)
			}
		case r.out.status == 200:
			ok200++
			if r.afterSig {
				okAfterSig++
			}
			if n != 1 || r.out.header.Get("X-UAPK-Decision") != "allow" {
				t.Errorf("%s: 200 (%s) but at the ERP %d times", r.marker, r.out.header.Get("X-UAPK-Decision"), n)
			}
		case r.out.status == 503:
			got503++
			if n != 0 {
				t.Errorf("%s: 503 %s but at the ERP %d times", r.marker, r.out.body, n)
			}
		default:
			t.Errorf("%s: unexpected %d %s (ERP %d times)", r.marker, r.out.status, r.out.body, n)
		}
		if parked[r.sha] && (r.out.err != nil || r.out.status != 200) {
			t.Errorf("%s was in flight at the SIGTERM and did not finish: %d %v", r.marker, r.out.status, r.out.err)
		}
	}
	for sha, n := range hits {
		if !known[sha] {
			t.Errorf("the ERP got a body no client sent (sha256 %s, %d times)", sha, n)
		}
	}
	t.Logf("stream: %d sent (%d in flight at the SIGTERM, %d after it), %d answered 200 (%d of those sent after it), %d 503, %d connection errors %v (%d of them at the ERP), %d parked in the ERP across the SIGTERM",
		len(stream), inFlight, afterSig, ok200, okAfterSig, got503, connErr, connErrKinds, connErrAtERP, len(parked))
	if t.Failed() {
		t.FailNow()
	}

	// 5. Restart on the same data dir; approve and retry every held request.
	p2 := startProxyProcess(t, ctx, bin, serveArgs...)
	fmKey, err := keys.LoadPrivateFile(filepath.Join(dir, "fm.key"))
	if err != nil {
		t.Fatal(err)
	}
	adminClient := &http.Client{Transport: heldTr}
	adminToken, err := adminauth.ReadTokenFile(filepath.Join(dataDir, adminauth.FileName))
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range held {
		id := h.out.header.Get("X-UAPK-Approval-Id")
		var a approvals.Approval
		if o := sendRequest(ctx, adminClient, "GET", p2.admin+"/v1/approvals/"+id, "", "Authorization", "Bearer "+adminToken); o.err != nil || o.status != 200 {
			t.Fatalf("held %d: GET approval after restart: %d %v %s", i, o.status, o.err, o.body)
		} else if err := json.Unmarshal(o.body, &a); err != nil {
			t.Fatal(err)
		}
		if a.Status != approvals.StatusPending || a.Body != h.body {
			t.Fatalf("held %d: approval after restart is %s with body %q", i, a.Status, a.Body)
		}
		at := time.Now().UTC().Format(time.RFC3339)
		sub, _ := json.Marshal(approvals.Submission{Approver: "fm@corp.example", Decision: "approve", Reason: "accrual reviewed",
			SignedAt: at, Signature: approvals.Sign(fmKey, id, a.Digest, "approve", "fm@corp.example", at)})
		o := sendRequest(ctx, adminClient, "POST", p2.admin+"/v1/approvals/"+id+"/decisions", string(sub), "Authorization", "Bearer "+adminToken)
		var st struct{ Status string }
		_ = json.Unmarshal(o.body, &st)
		if o.err != nil || o.status != 200 || st.Status != "approved" {
			t.Fatalf("held %d: approve: %d %v %s", i, o.status, o.err, o.body)
		}
		r := sendRequest(ctx, heldClient, "POST", p2.sidecar+"/api/v1/journal-entries", h.body, "X-UAPK-Approval-Id", id)
		if r.err != nil || r.status != 201 || r.header.Get("X-UAPK-Decision") != "allow" {
			t.Fatalf("held %d: retry with its approval id: %d %v %s", i, r.status, r.err, r.body)
		}
		if n := front.hitsBySHA()[h.sha]; n != 1 {
			t.Fatalf("held %d: at the ERP %d times after its approved retry", i, n)
		}
	}
	sig2 := time.Now()
	if err := p2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p2.wait(t, grace+30*time.Second); code != 0 {
		t.Fatalf("second serve exited %d after SIGTERM, want 0; log:\n%s", code, p2.log.tail(60))
	}
	t.Logf("second stop: %v after SIGTERM", time.Since(sig2).Round(time.Millisecond))

	// 6. The chain verifies offline, with the binary.
	vctx, vcancel := context.WithTimeout(ctx, time.Minute)
	defer vcancel()
	vout, err := exec.CommandContext(vctx, bin, "verify", "--data-dir", dataDir).CombinedOutput()
	if err != nil {
		t.Fatalf("uapk-proxy verify --data-dir: %v\n%s", err, vout)
	}
	t.Logf("verify: %s", strings.TrimSpace(string(vout)))

	// 7. The records against what the clients were told and what the ERP saw.
	hits = front.hitsBySHA()
	totalHits := 0
	for _, n := range hits {
		totalHits += n
	}
	if st := front.erp.Stats(); st.Total != totalHits || st.LeakedUAPKHeaders != 0 || st.LeakedHopByHop != 0 {
		t.Errorf("ERP stats %+v, counted %d hits", st, totalHits)
	}
	l, err := ledger.Open(filepath.Join(dataDir, "ledger.db"), ledger.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var (
		requests  []ledger.Record
		bySHA     = map[string][]ledger.Record{}
		bySeq     = map[uint64]ledger.Record{}
		forwardOf = map[uint64][]ledger.Record{} // request seq -> its forward records
		archives  []ledger.Record
		configs   int
	)
	err = l.Range(1, l.Head().Seq, func(_ uint64, raw []byte) error {
		var r ledger.Record
		if err := json.Unmarshal(raw, &r); err != nil {
			return err
		}
		switch r.Kind {
		case record.KindRequest:
			requests = append(requests, r)
			sha, _ := r.Data["body_sha256"].(string)
			bySHA[sha] = append(bySHA[sha], r)
			bySeq[r.Seq] = r
		case record.KindForward:
			rs, _ := r.Data["request_record"].(float64)
			forwardOf[uint64(rs)] = append(forwardOf[uint64(rs)], r)
		case record.KindConfig:
			configs++
		case record.KindArchive:
			archives = append(archives, r)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if configs != 2 {
		t.Errorf("%d config records, want one per start (2)", configs)
	}
	// One request record per request the proxy answered (202, 200, 201; a
	// 503 says the record could not be written, so it has none), and none
	// for anything no client sent. A client that got a connection error was
	// told nothing, so its request may have one record or none; fasthttp
	// can close a keep-alive connection as idle just after it has read a
	// request from it (a check-then-close window in closeIdleConns), so
	// "none" cannot be asserted for those. Each is counted and named.
	answered := 2*heldN + ok200
	var unanswered []string
	for _, r := range stream {
		if r.out.err != nil && len(bySHA[r.sha]) > 0 {
			unanswered = append(unanswered, fmt.Sprintf("%s (%v, at the ERP %d times)", r.marker, r.out.err, hits[r.sha]))
		}
	}
	if len(requests) != answered+len(unanswered) {
		t.Errorf("%d request records, want %d: one per answered request (%d held, %d retries, %d reconciliations) + %d recorded without an answer %v",
			len(requests), answered+len(unanswered), heldN, heldN, ok200, len(unanswered), unanswered)
	}
	if len(unanswered) > 0 {
		t.Logf("recorded, then the client's connection failed: %v", unanswered)
	}
	for sha, rs := range bySHA {
		if !known[sha] {
			t.Errorf("request records %+v for a body no client sent", rs)
		}
	}
	for i, h := range held {
		id := h.out.header.Get("X-UAPK-Approval-Id")
		rs := bySHA[h.sha]
		if len(rs) != 2 || rs[0].Decision != "pending" || rs[0].ApprovalID != id ||
			rs[1].Decision != "allow" || rs[1].Reason != "approved" || rs[1].ApprovalID != id {
			t.Errorf("held %d: request records %+v, want pending then allow/approved for %s", i, rs, id)
		}
	}
	for _, r := range stream {
		rs := bySHA[r.sha]
		switch {
		case r.out.err == nil && r.out.status == 200:
			if len(rs) != 1 || rs[0].Decision != "allow" {
				t.Errorf("%s: 200 with request records %+v", r.marker, rs)
			}
		case r.out.err == nil: // 503
			if len(rs) != 0 {
				t.Errorf("%s: %d with request records %+v", r.marker, r.out.status, rs)
			}
		default:
			if len(rs) > 1 {
				t.Errorf("%s: connection error with %d request records", r.marker, len(rs))
			}
		}
	}
	// Nothing reached the ERP without a durable allow record before it, and
	// every forward's outcome was recorded, the in-flight ones included.
	forwards := 0
	for sha, n := range hits {
		var allows []ledger.Record
		for _, r := range bySHA[sha] {
			if r.Decision == "allow" {
				allows = append(allows, r)
			}
		}
		if len(allows) != n {
			t.Errorf("body %s reached the ERP %d times with %d allow records", sha, n, len(allows))
		}
		for _, r := range allows {
			fw := forwardOf[r.Seq]
			if len(fw) != 1 || fw[0].Reason != "forwarded" || fw[0].Seq <= r.Seq {
				t.Errorf("request record %d (at the ERP) has forward records %+v", r.Seq, fw)
			}
		}
	}
	for seq, fw := range forwardOf {
		forwards += len(fw)
		if r, ok := bySeq[seq]; !ok || r.Decision != "allow" {
			t.Errorf("forward records %+v point at request record %d, not an allowed request", fw, seq)
		}
	}
	if forwards != totalHits {
		t.Errorf("%d forward records, %d requests at the ERP", forwards, totalHits)
	}
	// Each stop sealed what was recorded into DATA/archive, with a
	// checkpoint signed by the gateway key. Request records are durable
	// before their answer, so every one of them is sealed; forward records
	// are written behind and may be left for the next start.
	var archivedTo uint64
	for _, a := range archives {
		last, _ := a.Data["last"].(float64)
		lastHash, _ := a.Data["last_hash"].(string)
		segKey, _ := a.Data["key"].(string)
		cpKey, _ := a.Data["checkpoint_key"].(string)
		if _, err := os.Stat(filepath.Join(dataDir, "archive", filepath.FromSlash(segKey))); err != nil {
			t.Errorf("archive record %d: segment: %v", a.Seq, err)
		}
		note, err := os.ReadFile(filepath.Join(dataDir, "archive", filepath.FromSlash(cpKey)))
		if err != nil {
			t.Errorf("archive record %d: checkpoint: %v", a.Seq, err)
			continue
		}
		cp, err := checkpoint.Open(note, "uapk-proxy/financial-ai-assistant", gwPub)
		if err != nil || cp.Size != uint64(last) || cp.Hash != lastHash {
			t.Errorf("archive record %d: checkpoint %+v (%v) for last %d %s", a.Seq, cp, err, uint64(last), lastHash)
		}
		archivedTo = max(archivedTo, uint64(last))
	}
	if len(archives) < 2 || archivedTo < requests[len(requests)-1].Seq {
		t.Errorf("%d archive records, sealed up to seq %d; want one per stop, sealing up to the last request record %d",
			len(archives), archivedTo, requests[len(requests)-1].Seq)
	}
	t.Logf("ledger: %d records, %d requests, %d forwards, %d archive segments up to seq %d; ERP: %d hits",
		l.Head().Seq, len(requests), forwards, len(archives), archivedTo, totalHits)
}

// writeGatewayKeyWithPlus makes DATA/gateway.key (as serve would on first
// start) from a key whose checkpoint verifier key for origin has a '+' in its
// base64 part, and returns its public key.
func writeGatewayKeyWithPlus(t *testing.T, dataDir, origin string) ed25519.PublicKey {
	t.Helper()
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for range 1000 { // each try has about even odds
		pub, priv, err := keys.Generate()
		if err != nil {
			t.Fatal(err)
		}
		vkey, err := checkpoint.VerifierKey(origin, pub)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(vkey, "+") < 3 { // name+hash+key: none in the key
			continue
		}
		pemBytes, err := keys.PrivatePEM(priv)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dataDir, "gateway.key"), pemBytes, 0o600); err != nil {
			t.Fatal(err)
		}
		return pub
	}
	t.Fatal("no key with a '+' in its verifier key in 1000 tries")
	return nil
}

// buildProxyBinary builds this package's binary, with the race detector
// when the test binary has it, so the child's shutdown path is checked too
// (a race makes it exit 66).
func buildProxyBinary(t *testing.T, ctx context.Context) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go tool: %v", err)
	}
	out := filepath.Join(t.TempDir(), "uapk-proxy")
	args := []string{"build", "-o", out}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" && s.Value == "true" {
				args = append(args, "-race")
			}
		}
	}
	bctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(bctx, goBin, append(args, "../../cmd/uapk-proxy")...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return out
}

// proxyProcess is `uapk-proxy serve` running as a child process.
type proxyProcess struct {
	cmd     *exec.Cmd
	log     *procLog
	sidecar string // base URL of the sidecar door
	admin   string // base URL of the admin API
	exited  chan struct{}
	waitErr error // set before exited closes
}

// startProxyProcess runs serve with args and waits for its "listening" log
// line, which names the addresses it bound (args ask for port 0).
func startProxyProcess(t *testing.T, ctx context.Context, bin string, args ...string) *proxyProcess {
	t.Helper()
	return startProcess(t, ctx, bin, "serve", args...)
}

// startProcess runs the command sub (serve or hub) with args and waits
// for its "listening" log line.
func startProcess(t *testing.T, ctx context.Context, bin, sub string, args ...string) *proxyProcess {
	t.Helper()
	p := &proxyProcess{log: newProcLog(), exited: make(chan struct{})}
	p.cmd = exec.Command(bin, append([]string{sub}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "UAPK_") { // only the flags configure it
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.waitErr = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill() // only the child this test started
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s (pid %d) log tail:\n%s", sub, p.cmd.Process.Pid, p.log.tail(40))
		}
	})
	wait, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	select {
	case a := <-p.log.listening:
		p.sidecar, p.admin = "http://"+a.SidecarAddr, "http://"+a.AdminAddr
	case <-p.exited:
		t.Fatalf("%s exited before listening: %v\n%s", sub, p.waitErr, p.log.tail(40))
	case <-wait.Done():
		t.Fatalf("%s not listening after a minute:\n%s", sub, p.log.tail(40))
	}
	return p
}

// wait returns the exit code once the process ends, failing after limit.
func (p *proxyProcess) wait(t *testing.T, limit time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(limit):
		t.Fatalf("serve still running %v after SIGTERM:\n%s", limit, p.log.tail(40))
	}
	var ee *exec.ExitError
	if p.waitErr != nil && !errors.As(p.waitErr, &ee) {
		t.Fatalf("wait: %v", p.waitErr)
	}
	return p.cmd.ProcessState.ExitCode()
}

type listeningLine struct {
	SidecarAddr string `json:"sidecar_addr"`
	AdminAddr   string `json:"admin_addr"`
}

// procLog keeps a child's output and spots its "listening" line.
type procLog struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	partial   []byte
	seen      bool
	listening chan listeningLine
}

func newProcLog() *procLog { return &procLog{listening: make(chan listeningLine, 1)} }

func (l *procLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(b)
	l.partial = append(l.partial, b...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := l.partial[:i]
		l.partial = l.partial[i+1:]
		var m struct {
			Message string `json:"message"`
			listeningLine
		}
		if !l.seen && bytes.Contains(line, []byte(`"listening"`)) && json.Unmarshal(line, &m) == nil && m.Message == "listening" {
			l.seen = true
			l.listening <- m.listeningLine
		}
	}
	return len(b), nil
}

func (l *procLog) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(l.buf.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// erpFront sits in front of the mock ERP: it counts each request body's
// arrivals by SHA-256 (without the mock's 1000-request memory limit) and,
// when armed, parks the next few reconciliations until released.
type erpFront struct {
	erp       *erpmock.Server
	mu        sync.Mutex
	hits      map[string]int
	recs      int
	parkLeft  int
	parked    []string // body SHA-256 of the parked requests
	unpark    chan struct{}
	unparkOne sync.Once
}

func newERPFront() *erpFront {
	return &erpFront{erp: erpmock.New(), hits: map[string]int{}, unpark: make(chan struct{})}
}

func (f *erpFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	sha := sha256Hex(body)
	f.mu.Lock()
	f.hits[sha]++
	park := false
	if r.URL.Path == "/api/v1/reconciliations" {
		f.recs++
		if f.parkLeft > 0 {
			f.parkLeft--
			f.parked = append(f.parked, sha)
			park = true
		}
	}
	f.mu.Unlock()
	if park {
		<-f.unpark
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	f.erp.ServeHTTP(w, r)
}

func (f *erpFront) arm(n int) {
	f.mu.Lock()
	f.parkLeft = n
	f.mu.Unlock()
}

func (f *erpFront) release() { f.unparkOne.Do(func() { close(f.unpark) }) }

func (f *erpFront) parkedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.parked)
}

func (f *erpFront) parkedSHAs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.parked...)
}

func (f *erpFront) reconciliations() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.recs
}

func (f *erpFront) hitsBySHA() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int, len(f.hits))
	for k, v := range f.hits {
		out[k] = v
	}
	return out
}

// httpOutcome is what one client got: an answer, or an error before one.
type httpOutcome struct {
	status   int
	header   http.Header
	body     []byte
	err      error
	deadline bool // err is the test's own deadline, not the proxy's doing
}

// sendRequest sends one request; a failure to send it or to read the whole
// answer is err.
func sendRequest(ctx context.Context, c *http.Client, method, url, body string, headers ...string) httpOutcome {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return httpOutcome{err: err}
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.Do(req)
	if err == nil {
		defer resp.Body.Close()
		var b []byte
		if b, err = io.ReadAll(resp.Body); err == nil {
			return httpOutcome{status: resp.StatusCode, header: resp.Header, body: b}
		}
	}
	return httpOutcome{err: err, deadline: ctx.Err() != nil}
}

// metricValue reads an unlabelled sample from the admin API's /metrics, or
// -1 if it cannot.
func metricValue(ctx context.Context, c *http.Client, admin, name string) float64 {
	o := sendRequest(ctx, c, "GET", admin+"/metrics", "")
	if o.err != nil || o.status != 200 {
		return -1
	}
	for line := range strings.SplitSeq(string(o.body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// waitUntil polls cond until it holds, failing at ctx's deadline or after
// two minutes, whichever comes first.
func waitUntil(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("gave up waiting: %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
