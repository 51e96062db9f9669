package cli

import (
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/uapk-gateway/uapk-proxy/internal/notify"

	"github.com/uapk-gateway/uapk-proxy/passkey"
)

// uiFile is the config file's ui: section (docs/reference.md#dashboard).
type uiFile struct {
	URL     string `yaml:"url"`
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
}

// readUI reads and checks the ui: section: a url no browser would allow
// passkeys on is refused, and a TLS certificate comes with its key.
func readUI(path string) (uiFile, []string) {
	var f uiFile
	_, problems := readSection(path, "ui", &f)
	if len(problems) > 0 {
		return f, problems
	}
	if f.URL != "" {
		if _, err := passkey.OriginOf(f.URL); err != nil {
			problems = append(problems, fmt.Sprintf("config %s: ui.url: %v", path, err))
		}
	}
	if f.TLSCert != "" && f.URL == "" {
		problems = append(problems, fmt.Sprintf("config %s: ui.tls_cert needs ui.url (https://HOST:PORT), the one origin the desk accepts", path))
	}
	if (f.TLSCert == "") != (f.TLSKey == "") {
		problems = append(problems, fmt.Sprintf("config %s: ui.tls_cert and ui.tls_key go together", path))
	}
	for _, p := range []struct{ key, file string }{{"ui.tls_cert", f.TLSCert}, {"ui.tls_key", f.TLSKey}} {
		if p.file == "" {
			continue
		}
		if _, err := os.Stat(p.file); err != nil {
			problems = append(problems, fmt.Sprintf("config %s: %s: %v", path, p.key, err))
		}
	}
	return f, problems
}

// notifyFile is the config file's notify: section
// (docs/reference.md#notifications).
type notifyFile struct {
	Email *struct {
		SMTP     string `yaml:"smtp"`
		From     string `yaml:"from"`
		StartTLS bool   `yaml:"starttls"`
	} `yaml:"email"`
	Webhooks []struct {
		URL    string `yaml:"url"`
		Format string `yaml:"format"`
	} `yaml:"webhooks"`
}

// readNotify reads and checks the notify: section; nil when there is none.
func readNotify(path string) (*notify.Config, []string) {
	var f notifyFile
	found, problems := readSection(path, "notify", &f)
	if !found || len(problems) > 0 {
		return nil, problems
	}
	cfg := &notify.Config{}
	if f.Email != nil {
		cfg.SMTP, cfg.From, cfg.StartTLS = f.Email.SMTP, f.Email.From, f.Email.StartTLS
	}
	for _, w := range f.Webhooks {
		cfg.Webhooks = append(cfg.Webhooks, notify.Webhook{URL: w.URL, Format: w.Format})
	}
	check := *cfg
	check.UIURL = "https://ui.example" // serve fills in ui.url; checked on its own
	if err := check.Check(); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			problems = append(problems, fmt.Sprintf("config %s: %s", path, line))
		}
	}
	return cfg, problems
}

// approvalsFile is the config file's approvals: section
// (docs/reference.md#many-proxies).
type approvalsFile struct {
	Postgres string `yaml:"postgres"`
	Instance string `yaml:"instance"`
}

func readApprovals(path string) (approvalsFile, []string) {
	var f approvalsFile
	_, problems := readSection(path, "approvals", &f)
	if len(problems) > 0 {
		return f, problems
	}
	if f.Postgres != "" {
		u, err := url.Parse(f.Postgres)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
			problems = append(problems, fmt.Sprintf("config %s: approvals.postgres: want postgres://USER@HOST:PORT/DB", path))
		}
	}
	if f.Instance != "" && f.Postgres == "" {
		problems = append(problems, fmt.Sprintf("config %s: approvals.instance needs approvals.postgres", path))
	}
	return f, problems
}

// archiveInstance is the archive's instance: archive.instance, else, in a
// fleet (approvals.postgres), the host name; "" for a proxy on its own.
func archiveInstance(af *archiveFile, ap approvalsFile) string {
	if af != nil && af.Instance != "" {
		return af.Instance
	}
	if ap.Postgres == "" {
		return ""
	}
	if ap.Instance != "" {
		return ap.Instance
	}
	h, _ := os.Hostname()
	return h
}
