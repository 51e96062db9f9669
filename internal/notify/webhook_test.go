package notify_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/uapk-gateway/uapk-proxy/internal/notify"
)

// receiver is a webhook endpoint that keeps what it was sent and answers
// with the statuses queued in codes (then 200).
type receiver struct {
	srv   *httptest.Server
	mu    sync.Mutex
	reqs  []received
	codes []int
}

type received struct {
	method, ctype, path string
	body                []byte
}

func newReceiver(t *testing.T, codes ...int) *receiver {
	r := &receiver{codes: codes}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.reqs = append(r.reqs, received{req.Method, req.Header.Get("Content-Type"), req.URL.RequestURI(), b})
		code := http.StatusOK
		if len(r.codes) > 0 {
			code, r.codes = r.codes[0], r.codes[1:]
		}
		r.mu.Unlock()
		if code == http.StatusFound {
			w.Header().Set("Location", "/elsewhere")
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) got() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reqs)
}

func hookConfig(t *testing.T, rec *recorder, hooks ...notify.Webhook) notify.Config {
	cfg := config(t, rec)
	cfg.From = ""
	cfg.Webhooks = hooks
	return cfg
}

func keys(m map[string]json.RawMessage) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// Both formats: the JSON shape, the link, and nothing but the summary.
func TestWebhookFormats(t *testing.T) {
	long := strings.Repeat("word ", 100) // 500 characters
	tests := []struct {
		format string
		ctype  string
		check  func(t *testing.T, body []byte)
	}{
		{notify.FormatSlack, "application/json", func(t *testing.T, body []byte) {
			var top map[string]json.RawMessage
			if err := json.Unmarshal(body, &top); err != nil {
				t.Fatal(err)
			}
			if ks := keys(top); !slices.Equal(ks, []string{"text"}) {
				t.Errorf("keys %q, want only text", ks)
			}
			var text string
			_ = json.Unmarshal(top["text"], &text)
			for _, want := range []string{
				"*Approval needed*: journal_entry 1,200,000 (apr_01J8)",
				"<" + testUI + "/ui/approvals/apr_01J8|Open the approval>",
				"Required roles: cfo, controller",
				"App: finance-agent",
				"&lt;!channel&gt; &amp;",
			} {
				if !strings.Contains(text, want) {
					t.Errorf("text lacks %q:\n%s", want, text)
				}
			}
			if strings.Contains(text, "<!channel>") || strings.Contains(text, "<https://evil") {
				t.Errorf("agent text reaches Slack as mrkdwn:\n%s", text)
			}
		}},
		{notify.FormatCloudEvents, "application/cloudevents+json; charset=utf-8", func(t *testing.T, body []byte) {
			var top map[string]json.RawMessage
			if err := json.Unmarshal(body, &top); err != nil {
				t.Fatal(err)
			}
			if ks, want := keys(top), []string{"data", "datacontenttype", "id", "source", "specversion", "subject", "time", "type"}; !slices.Equal(ks, want) {
				t.Errorf("attributes %q, want %q", ks, want)
			}
			var ce struct {
				SpecVersion, Type, Source, ID, Time, Subject, DataContentType string
				Data                                                          map[string]json.RawMessage
			}
			if err := json.Unmarshal(body, &ce); err != nil {
				t.Fatal(err)
			}
			if ce.SpecVersion != "1.0" || ce.Type != "com.uapk.approval.pending" || ce.Source != testUI ||
				ce.ID == "" || ce.Subject != "apr_01J8" || ce.DataContentType != "application/json" {
				t.Errorf("attributes %+v", ce)
			}
			if tm, err := time.Parse(time.RFC3339Nano, ce.Time); err != nil || !tm.Equal(testNow) {
				t.Errorf("time %q, want %s", ce.Time, testNow)
			}
			want := []string{"action", "amount", "app", "approval_id", "expires_at", "justification", "link", "required_roles", "still_needed"}
			if ks := keys(ce.Data); !slices.Equal(ks, want) {
				t.Errorf("data %q, want %q", ks, want)
			}
			str := func(k string) string {
				var s string
				_ = json.Unmarshal(ce.Data[k], &s)
				return s
			}
			if str("link") != testUI+"/ui/approvals/apr_01J8" || str("amount") != "1200000" || str("action") != "journal_entry" ||
				str("expires_at") != "2026-03-05T05:06:07Z" {
				t.Errorf("data %s", body)
			}
			if j := str("justification"); utf8.RuneCountInString(j) > notify.MaxJustification || !strings.HasSuffix(j, "…") {
				t.Errorf("justification of %d characters: %q", utf8.RuneCountInString(j), j)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			r := newReceiver(t)
			rec := &recorder{}
			n := start(t, hookConfig(t, rec, notify.Webhook{URL: r.srv.URL + "/hook?token=s3cret", Format: tt.format}))
			e := pending("apr_01J8", notify.Recipient{ID: "cfo", Email: "cfo@corp.example"})
			e.Justification = "<!channel> & <https://evil.example|Open the approval> " + long
			n.Notify(e)
			d := rec.waitFor(t, "delivery", finals(1))[0]
			u, _ := url.Parse(r.srv.URL)
			if !d.OK || d.Attempt != 1 || d.Channel != "webhook:"+u.Host {
				t.Errorf("outcome %+v, want delivered on webhook:%s", d, u.Host)
			}
			reqs := r.got()
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			if q := reqs[0]; q.method != http.MethodPost || q.ctype != tt.ctype || q.path != "/hook?token=s3cret" {
				t.Errorf("request %s %s %q", q.method, q.path, q.ctype)
			}
			body := reqs[0].body
			if len(body) > 2048 {
				t.Errorf("body of %d bytes: a summary is short", len(body))
			}
			if strings.Contains(string(body), "cfo@corp.example") {
				t.Error("the body names a recipient's address")
			}
			tt.check(t, body)
		})
	}
}

// A retry sends the same event (the same CloudEvents id); another event
// has another id.
func TestWebhookRetrySameID(t *testing.T) {
	r := newReceiver(t, http.StatusServiceUnavailable)
	rec := &recorder{}
	n := start(t, hookConfig(t, rec, notify.Webhook{URL: r.srv.URL, Format: notify.FormatCloudEvents}))
	n.Notify(pending("apr_r1"))
	ds := rec.waitFor(t, "delivery after a retry", finals(1))
	if len(ds) != 2 || ds[0].OK || ds[0].Final || ds[0].Error != "webhook answered 503" || !ds[1].OK || ds[1].Attempt != 2 {
		t.Fatalf("outcomes:\n%s", show(ds))
	}
	n.Notify(pending("apr_r2"))
	rec.waitFor(t, "second event", finals(2))
	reqs := r.got()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	id := func(b []byte) string {
		var ce struct{ ID string }
		_ = json.Unmarshal(b, &ce)
		return ce.ID
	}
	if string(reqs[0].body) != string(reqs[1].body) {
		t.Errorf("the retry sent other bytes:\n%s\n%s", reqs[0].body, reqs[1].body)
	}
	if id(reqs[1].body) == id(reqs[2].body) {
		t.Errorf("two events share id %q", id(reqs[2].body))
	}
}

// What a webhook's answer means: 2xx delivered; 3xx is not followed; a
// client error is final; a timeout, rate limit or server error is retried.
func TestWebhookStatus(t *testing.T) {
	tests := []struct {
		code     int
		attempts int // with MaxAttempts 2 and every answer the same
		ok       bool
	}{
		{http.StatusOK, 1, true},
		{http.StatusNoContent, 1, true},
		{http.StatusFound, 2, false},
		{http.StatusBadRequest, 1, false},
		{http.StatusNotFound, 1, false},
		{http.StatusRequestTimeout, 2, false},
		{http.StatusTooManyRequests, 2, false},
		{http.StatusInternalServerError, 2, false},
		{http.StatusBadGateway, 2, false},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.code), func(t *testing.T) {
			r := newReceiver(t, tt.code, tt.code)
			rec := &recorder{}
			cfg := hookConfig(t, rec, notify.Webhook{URL: r.srv.URL, Format: notify.FormatSlack})
			cfg.MaxAttempts = 2
			n := start(t, cfg)
			n.Notify(pending("apr_s"))
			ds := rec.waitFor(t, "final outcome", finals(1))
			last := ds[len(ds)-1]
			if len(ds) != tt.attempts || last.OK != tt.ok || last.Attempt != tt.attempts {
				t.Errorf("outcomes:\n%s\nwant %d attempts, ok=%v", show(ds), tt.attempts, tt.ok)
			}
			if !tt.ok && last.Error != "webhook answered "+strconv.Itoa(tt.code) {
				t.Errorf("error %q", last.Error)
			}
			if got := len(r.got()); got != tt.attempts {
				t.Errorf("%d requests, want %d (a redirect is not followed)", got, tt.attempts)
			}
		})
	}
}

// A webhook URL's path, query and user information (often its secret)
// appear neither in the channel nor in an error.
func TestWebhookSecretNotReported(t *testing.T) {
	addr := closedAddr(t)
	rec := &recorder{}
	cfg := hookConfig(t, rec, notify.Webhook{URL: "http://user:pa55word@" + addr + "/services/T0/B0/SeCrEtPaTh?token=QuErYsEcReT", Format: notify.FormatSlack})
	cfg.MaxAttempts = 2
	n := start(t, cfg)
	n.Notify(pending("apr_secret"))
	ds := rec.waitFor(t, "final failure", finals(1))
	for _, d := range ds {
		if d.OK || d.Channel != "webhook:"+addr || !strings.Contains(d.Error, "connection refused") {
			t.Errorf("outcome %+v", d)
		}
		for _, secret := range []string{"pa55word", "SeCrEtPaTh", "QuErYsEcReT", "user"} {
			if strings.Contains(d.Channel+d.Error, secret) {
				t.Errorf("outcome shows %q: %+v", secret, d)
			}
		}
	}
}

// A delivery waiting for its retry when Close comes is reported failed and
// Final at once, without waiting for the retry.
func TestCloseReportsPendingRetries(t *testing.T) {
	rec := &recorder{}
	cfg := hookConfig(t, rec, notify.Webhook{URL: "http://" + closedAddr(t) + "/hook", Format: notify.FormatSlack})
	cfg.Backoff = time.Hour
	cfg.MaxAttempts = 5
	n := start(t, cfg)
	n.Notify(pending("apr_pending_retry"))
	rec.waitFor(t, "first failure", func(ds []notify.Delivery) bool { return len(ds) == 1 })
	if err := n.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ds, _ := rec.snapshot()
	if len(ds) != 2 {
		t.Fatalf("outcomes:\n%s", show(ds))
	}
	if d := ds[1]; d.OK || !d.Final || d.Error != notify.ReasonClosed || d.Attempt != 1 {
		t.Errorf("outcome at Close %+v, want %s after attempt 1", d, notify.ReasonClosed)
	}
}

// An event the notifier cannot describe is reported on every channel, not
// sent; a Record that panics does not stop the notifier.
func TestInvalidEventAndPanickingRecord(t *testing.T) {
	r := newReceiver(t)
	rec := &recorder{}
	cfg := hookConfig(t, rec, notify.Webhook{URL: r.srv.URL, Format: notify.FormatSlack})
	cfg.SMTP, cfg.From = closedAddr(t), testFrom
	panicked := false
	cfg.Record = func(d notify.Delivery) {
		if !panicked {
			panicked = true
			panic("ledger on fire")
		}
		rec.record(d)
	}
	n := start(t, cfg)
	e := pending("apr_bad", notify.Recipient{ID: "cfo", Email: "cfo@corp.example"})
	e.Type = "approval.bogus"
	n.Notify(e)
	e = pending("", notify.Recipient{ID: "cfo", Email: "cfo@corp.example"})
	n.Notify(e)
	ds := rec.waitFor(t, "invalid events reported", finals(3)) // 4 outcomes, the first into the panic
	for _, d := range ds {
		if d.OK || d.Error != notify.ReasonInvalidEvent || d.Attempt != 0 {
			t.Errorf("outcome %+v, want %s", d, notify.ReasonInvalidEvent)
		}
	}
	if len(r.got()) != 0 {
		t.Error("an invalid event was posted")
	}
	n.Notify(pending("apr_good"))
	rec.waitFor(t, "a good event after the panic", func(ds []notify.Delivery) bool {
		return slices.ContainsFunc(ds, func(d notify.Delivery) bool { return d.OK && d.Event.ApprovalID == "apr_good" })
	})
}
