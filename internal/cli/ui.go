package cli

import (
	"fmt"
	"os"

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
