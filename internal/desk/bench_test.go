package desk_test

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/internal/approvalstore"
	"github.com/uapk-gateway/uapk-proxy/internal/desk"
	"github.com/uapk-gateway/uapk-proxy/internal/tokens"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/passkey"
	"github.com/uapk-gateway/uapk-proxy/passkey/passkeytest"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// BenchmarkQueue10k: the queue page and one API-sized page of the list at
// quarter-end scale, 10,000 pending approvals of 1 KiB bodies in a real
// bbolt ledger (make bench).
func BenchmarkQueue10k(b *testing.B) {
	l, err := ledger.Open(filepath.Join(b.TempDir(), "ledger.db"), ledger.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	store, err := approvalstore.Open(l)
	if err != nil {
		b.Fatal(err)
	}
	cfo := passkeytest.New("ES256")
	ps, err := rules.ParsePrincipals([]byte(fmt.Sprintf(`{"principals":[{"id":"cfo@corp.example","roles":["cfo"],"webauthn":[{"credential_id":%q,"public_key":%q}]}]}`,
		cfo.CredentialID(), cfo.PublicKeyPEM())), b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	raw, _ := os.ReadFile("../../examples/manifests/sox-financial.json")
	mf := filepath.Join(b.TempDir(), "m.json")
	os.WriteFile(mf, bytes.Replace(raw, []byte(`"app_id":`), []byte(`"max_pending": 20000, "app_id":`), 1), 0o644)
	m, err := rules.LoadManifest(mf)
	if err != nil {
		b.Fatal(err)
	}
	eng := rules.NewEngine(m, ps)
	_, gw, _ := ed25519.GenerateKey(nil)
	iss, _ := tokens.NewIssuer(gw)
	svc, err := approvals.New(approvals.Config{Store: store, Ledger: l, Tokens: iss, Engine: func() *rules.Engine { return eng }, Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(`{"account":"4000-Revenue","amount":1200000,"memo":"` + strings.Repeat("x", 1000) + `"}`)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := 0; i < 10000; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			a := svc.NewPending(approvals.Pending{App: "financial-ai-assistant", Method: "POST", URL: "http://erp/api/v1/journal-entries",
				Body: body, Digest: strings.Repeat("ab", 32), Decision: rules.Decision{Outcome: rules.Pending, Action: "journal_entry",
					Reason: record.AmountOverCap, Amount: "1200000", ApprovalTTL: 24 * time.Hour,
					Requirement: rules.Requirement{Policy: rules.DualApproval, Slots: [][]string{{"cfo"}, {"controller"}}}}})
			if _, err := svc.Hold(a, ledger.Entry{Kind: record.KindRequest, Decision: record.Pending, ApprovalID: a.ID}); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	srv := httptest.NewUnstartedServer(nil)
	srv.Start()
	defer srv.Close()
	rp := passkey.RP{ID: "127.0.0.1", Origin: srv.URL}
	d, err := desk.New(desk.Config{Approvals: svc, Principals: eng.Principals, RP: rp, Ledger: l, Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	srv.Config.Handler = d
	f := &fixture{t: b, srv: srv, rp: rp}
	br := f.browser()
	br.signin("cfo@corp.example", cfo)
	b.Run("ListPage100", func(b *testing.B) {
		for b.Loop() {
			if p, err := svc.ListPage(approvals.StatusPending, "", 100); err != nil || len(p.Approvals) != 100 {
				b.Fatal(err)
			}
		}
	})
	b.Run("QueuePage", func(b *testing.B) {
		for b.Loop() {
			resp, err := br.c.Get(srv.URL + "/ui/")
			if err != nil || resp.StatusCode != 200 {
				b.Fatal(err, resp.StatusCode)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
