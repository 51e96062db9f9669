package adminauth

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/uapk-gateway/uapk-proxy/internal/fsutil"
)

// Scope is what a token lets its holder do.
type Scope string

// The scopes (docs/reference.md#admin-tokens).
const (
	Read     Scope = "read"     // approvals, overrides without tokens, the ledger
	Decide   Scope = "decide"   // post signed decisions
	Override Scope = "override" // ask for overrides, read an approved override's token
	Evidence Scope = "evidence" // export evidence bundles
)

// Scopes lists every scope, in the order the reference gives them.
var Scopes = []Scope{Read, Decide, Override, Evidence}

func (s Scope) known() bool {
	for _, x := range Scopes {
		if s == x {
			return true
		}
	}
	return false
}

// FileName is the generated token's file under the data directory.
const FileName = "admin.token"

// MaxTokenLen bounds a presented token; longer ones are refused unhashed.
const MaxTokenLen = 1024

// Holder is the holder of a recognised token.
type Holder struct {
	Name   string
	scopes map[Scope]bool
}

// Has reports whether the holder's token carries scope s.
func (h Holder) Has(s Scope) bool { return h.scopes[s] }

// Scopes returns the holder's scopes in reference order.
func (h Holder) Scopes() []Scope {
	var out []Scope
	for _, s := range Scopes {
		if h.scopes[s] {
			out = append(out, s)
		}
	}
	return out
}

type entry struct {
	sum    [sha256.Size]byte
	holder Holder
}

// Set is the tokens the admin API accepts.
type Set struct {
	entries []entry
	// Source says where the set came from, for the start-up log line.
	Source string
}

// Authenticate checks an Authorization header value.
func (s *Set) Authenticate(authorization string) (Holder, error) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(authorization), " ")
	if authorization == "" {
		return Holder{}, ErrMissing
	}
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" || len(tok) > MaxTokenLen {
		return Holder{}, ErrInvalid
	}
	sum := sha256.Sum256([]byte(tok))
	found := -1
	for i := range s.entries {
		// Every entry is compared, match or not.
		if subtle.ConstantTimeCompare(sum[:], s.entries[i].sum[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return Holder{}, ErrInvalid
	}
	return s.entries[found].holder, nil
}

// Len is how many tokens the set holds.
func (s *Set) Len() int { return len(s.entries) }

// Hash returns the hex SHA-256 of a token, as a tokens file lists it.
func Hash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

type fileDoc struct {
	Tokens []struct {
		Name   string   `yaml:"name"`
		SHA256 string   `yaml:"sha256"`
		Scopes []string `yaml:"scopes"`
	} `yaml:"tokens"`
}

// LoadFile reads a tokens file strictly; every problem is listed, with the
// entry it is in.
func LoadFile(path string) (*Set, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("admin tokens: %w", err)
	}
	var doc fileDoc
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("admin tokens %s: %s", path, strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	var problems []string
	bad := func(i int, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("admin tokens %s: tokens[%d]: %s", path, i, fmt.Sprintf(format, args...)))
	}
	set := &Set{Source: path}
	names, sums := map[string]bool{}, map[[sha256.Size]byte]bool{}
	for i, t := range doc.Tokens {
		if t.Name == "" {
			bad(i, "name is required")
		} else if names[t.Name] {
			bad(i, "name %q is listed twice", t.Name)
		}
		names[t.Name] = true
		var sum [sha256.Size]byte
		b, err := hex.DecodeString(t.SHA256)
		switch {
		case err != nil || len(b) != sha256.Size || t.SHA256 != strings.ToLower(t.SHA256):
			bad(i, "sha256 must be 64 lower-case hex digits, the SHA-256 of the token (printf %%s \"$TOKEN\" | sha256sum)")
		default:
			copy(sum[:], b)
			if sums[sum] {
				bad(i, "sha256 is listed twice")
			}
			sums[sum] = true
		}
		h := Holder{Name: t.Name, scopes: map[Scope]bool{}}
		if len(t.Scopes) == 0 {
			bad(i, "scopes is required: any of read, decide, override, evidence")
		}
		for _, s := range t.Scopes {
			if !Scope(s).known() {
				bad(i, "unknown scope %q: want read, decide, override or evidence", s)
			}
			h.scopes[Scope(s)] = true
		}
		set.entries = append(set.entries, entry{sum: sum, holder: h})
	}
	if len(doc.Tokens) == 0 {
		problems = append(problems, fmt.Sprintf("admin tokens %s: no tokens listed (want tokens: [{name, sha256, scopes}])", path))
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	return set, nil
}

// LoadOrCreate reads DATA/admin.token, or writes a new random token with
// every scope there (0600) when there is none. created says which.
func LoadOrCreate(dataDir string) (set *Set, path string, created bool, err error) {
	path = filepath.Join(dataDir, FileName)
	tok, err := ReadTokenFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, path, false, err
		}
		tok = "uapk_" + base64.RawURLEncoding.EncodeToString(b[:])
		if err := fsutil.WriteNew(path, []byte(tok+"\n"), 0o600); err != nil {
			return nil, path, false, fmt.Errorf("write the admin token: %w", err)
		}
		created = true
	} else if err != nil {
		return nil, path, false, err
	}
	all := map[Scope]bool{}
	for _, s := range Scopes {
		all[s] = true
	}
	set = &Set{Source: path, entries: []entry{{sum: sha256.Sum256([]byte(tok)), holder: Holder{Name: FileName, scopes: all}}}}
	return set, path, created, nil
}

// ReadTokenFile reads a token written by LoadOrCreate (or by an operator):
// one line, surrounding white space ignored. A file others may read is
// refused: the token is a bearer secret.
func ReadTokenFile(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("admin token %s: not a regular file", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("admin token %s: mode %04o lets others read it; chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	raw, err := fsutil.ReadRegular(path, 4096)
	if err != nil {
		return "", fmt.Errorf("admin token %s: %w", path, err)
	}
	tok := strings.TrimSpace(string(raw))
	if tok == "" || strings.ContainsAny(tok, " \t\r\n") || len(tok) > MaxTokenLen {
		return "", fmt.Errorf("admin token %s: want one token on one line", path)
	}
	return tok, nil
}
