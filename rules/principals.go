package rules

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/uapk-gateway/uapk-proxy/internal/fsutil"
	"github.com/uapk-gateway/uapk-proxy/internal/keys"
	"github.com/uapk-gateway/uapk-proxy/passkey"
)

// Principals is the validated principals file (docs/reference.md#principals): who exists,
// which roles they hold, and the Ed25519 key each approver signs with. It is
// read-only once loaded.
type Principals struct {
	list []*Principal
	byID map[string]*Principal // by id, canonical (CheckID)
	// apps are the agents' keys (apps:): an app listed here must sign its
	// requests (X-UAPK-Signature), so that the proxy can prove which app
	// called.
	apps map[string]ed25519.PublicKey
}

// AppKey returns the key the principals file lists for app id (apps:);
// ok is false when it lists none, and the app need not sign.
func (p *Principals) AppKey(id string) (ed25519.PublicKey, bool) {
	if p == nil {
		return nil, false
	}
	k, ok := p.apps[id]
	return k, ok
}

// maxKeyFile bounds what a public_key path may make us read.
const maxKeyFile = 64 << 10

// LoadPrincipals reads the principals file at path. Relative public_key paths
// resolve against the file's directory.
func LoadPrincipals(path string) (*Principals, error) {
	data, err := fsutil.ReadRegular(path, 16<<20)
	if err != nil {
		return nil, fmt.Errorf("read principals: %w", err)
	}
	return ParsePrincipals(data, filepath.Dir(path))
}

// ParsePrincipals parses a principals file (YAML, or JSON). public_key is an
// inline PKIX "PUBLIC KEY" PEM or a path to one; relative paths resolve
// against baseDir. Any problem makes it fail with a *ValidationError listing
// all of them.
//
// Every id must be in canonical form (CheckID), so that one person has one
// spelling and ids compare as bytes everywhere; an id in another form is a
// problem at its path, never quietly folded. The same public key on two
// principals is refused: one person must not count twice.
func ParsePrincipals(data []byte, baseDir string) (*Principals, error) {
	root, probs, err := decodeTree(data)
	if err != nil {
		return nil, err
	}
	c := &checker{probs: probs}
	ps := &Principals{byID: map[string]*Principal{}}
	c.principals(ps, root, baseDir)
	if len(c.probs) > 0 {
		return nil, &ValidationError{Problems: c.probs, Warnings: c.warns}
	}
	return ps, nil
}

// Get returns the principal whose id is exactly id. An id not in canonical
// form (CheckID) is nobody's: it is never folded to find someone, since a
// fold that differs from the one a comparison elsewhere uses lets one person
// pass for two (ToLower("İ") is "i", EqualFold("İ", "i") is false).
func (p *Principals) Get(id string) (*Principal, bool) {
	if p == nil {
		return nil, false
	}
	pr, ok := p.byID[id]
	return pr, ok
}

// MaxIDLen is the longest principal id, in bytes.
const MaxIDLen = 256

// CheckID returns nil when id is a principal id in canonical form, the one
// form taken wherever an id is named: the principals file, signed
// decisions, the X-UAPK-On-Behalf-Of caller, the bundle verifier. The form
// is 1 to MaxIDLen bytes, each printable ASCII other than space (0x21 to
// 0x7e) and none an upper-case letter: id == strings.ToLower(id), and since
// it is ASCII no Unicode case mapping or folding changes it. Two canonical
// ids name one person exactly when their bytes are equal. Ids appear on
// their own line in the signed approval statement, which is one more
// reason for no whitespace or control characters.
func CheckID(id string) error {
	if id == "" {
		return errors.New("empty id")
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("id longer than %d bytes", MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		if b := id[i]; b <= ' ' || b == 0x7f {
			return fmt.Errorf("id %q has a space or control character", id)
		}
	}
	for i := 0; i < len(id); i++ {
		if id[i] >= 0x80 {
			return fmt.Errorf("id %q is not ASCII (an id is printable ASCII in lower case, so that each person has one spelling)", id)
		}
	}
	if low := strings.ToLower(id); low != id {
		return fmt.Errorf("id %q has upper case; write it %q (an id is printable ASCII in lower case, so that each person has one spelling)", id, low)
	}
	return nil
}

// All returns the principals in file order.
func (p *Principals) All() []*Principal {
	if p == nil {
		return nil
	}
	return append([]*Principal(nil), p.list...)
}

// HasRole reports whether the principal holds role r.
func (pr *Principal) HasRole(r string) bool {
	if pr == nil {
		return false
	}
	for _, x := range pr.Roles {
		if x == r {
			return true
		}
	}
	return false
}

// CanSign reports whether the principal has a public key, and so can sign
// approval decisions.
func (pr *Principal) CanSign() bool {
	return pr != nil && (len(pr.PublicKey) == ed25519.PublicKeySize || len(pr.Passkeys) > 0)
}

// PublicKeyPEM returns the public key as a PKIX "PUBLIC KEY" PEM block, or ""
// when the principal has none.
func (pr *Principal) PublicKeyPEM() string {
	if pr == nil || len(pr.PublicKey) != ed25519.PublicKeySize {
		return ""
	}
	der, err := x509.MarshalPKIXPublicKey(pr.PublicKey)
	if err != nil {
		return ""
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func (c *checker) principals(ps *Principals, root *value, baseDir string) {
	var list, apps *value
	ok := c.fields("", root, map[string]func(string, *value){
		"principals": func(p string, v *value) {
			if v.kind != kArray {
				c.typeErr(p, "a list of {id, roles, public_key}", v)
				return
			}
			list = v
		},
		"apps": func(p string, v *value) {
			if v.kind != kArray {
				c.typeErr(p, "a list of {id, public_key}", v)
				return
			}
			apps = v
		},
	})
	if apps != nil {
		defer c.apps(ps, apps, baseDir)
	}
	if !ok {
		return
	}
	if root.get("principals") == nil {
		c.errf("principals", "required")
		return
	}
	if list == nil {
		return
	}
	if len(list.items) == 0 {
		c.errf("principals", "must list at least one principal")
		return
	}
	seenKeys := map[string]string{}  // public key bytes -> path of first use
	seenCreds := map[string]string{} // credential id -> path of first use
	ids := map[string]string{}       // id -> path of first use
	for i, it := range list.items {
		p := joinIndex("principals", i)
		pr := &Principal{}
		good := true
		ok := c.fields(p, it, map[string]func(string, *value){
			"id": func(p string, v *value) {
				s, ok := c.str(p, v)
				if !ok {
					good = false
					return
				}
				if err := CheckID(s); err != nil {
					c.errf(p, "%v", err)
					good = false
					return
				}
				if first, dup := ids[s]; dup {
					c.errf(p, "duplicate id %q (first at %s)", s, first)
					good = false
					return
				}
				ids[s] = p
				pr.ID = s
			},
			"roles": func(p string, v *value) {
				roles, ok := c.roles(p, v)
				if ok && len(v.items) == 0 {
					c.errf(p, "must name at least one role")
				}
				if !ok || len(roles) != len(v.items) {
					good = false
				}
				pr.Roles = roles
			},
			"public_key": func(p string, v *value) {
				s, ok := c.str(p, v)
				if !ok {
					good = false
					return
				}
				key, err := readPublicKey(s, baseDir)
				if err != nil {
					// An unsafe key is what an attacker would plant: name
					// whose entry holds it, not only where.
					if iv := it.get("id"); errors.Is(err, keys.ErrUnsafeKey) && iv != nil && iv.kind == kString {
						c.errf(p, "principal %q: %v", iv.text, err)
					} else {
						c.errf(p, "%v", err)
					}
					good = false
					return
				}
				if first, dup := seenKeys[keys.Identity(key)]; dup {
					c.errf(p, "same public key as %s: one key must not stand for two principals", first)
					good = false
					return
				}
				seenKeys[keys.Identity(key)] = p
				pr.PublicKey = key
			},
			"email": func(p string, v *value) {
				s, ok := c.str(p, v)
				if !ok {
					good = false
					return
				}
				if at := strings.IndexByte(s, '@'); at <= 0 || at == len(s)-1 || strings.ContainsAny(s, " \t\r\n<>,;\"") || len(s) > 254 {
					c.errf(p, "%q is not one mail address (local@domain)", s)
					good = false
					return
				}
				pr.Email = s
			},
			"webauthn": func(p string, v *value) {
				if v.kind != kArray {
					c.typeErr(p, "a list of {credential_id, public_key}", v)
					good = false
					return
				}
				for j, cv := range v.items {
					cp := joinIndex(p, j)
					var pk Passkey
					ok := c.fields(cp, cv, map[string]func(string, *value){
						"credential_id": func(p string, v *value) {
							s, ok := c.str(p, v)
							if !ok {
								return
							}
							id, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
							if err != nil || len(id) == 0 || len(id) > 1023 {
								c.errf(p, "want the credential id in base64url (1 to 1023 bytes)")
								return
							}
							if first, dup := seenCreds[string(id)]; dup {
								c.errf(p, "same credential as %s", first)
								return
							}
							seenCreds[string(id)] = p
							pk.ID = id
						},
						"public_key": func(p string, v *value) {
							s, ok := c.str(p, v)
							if !ok {
								return
							}
							data, err := readKeyText(s, baseDir)
							if err != nil {
								c.errf(p, "%v", err)
								return
							}
							k, err := keys.ParsePasskey(data)
							if err != nil {
								c.errf(p, "%v", err)
								return
							}
							if first, dup := seenKeys[keys.Identity(k)]; dup {
								c.errf(p, "same public key as %s: one key must not stand for two principals, nor two passkeys", first)
								return
							}
							seenKeys[keys.Identity(k)] = p
							pk.PublicKey = k
							pk.PEM, _ = passkey.PublicKeyPEM(k)
						},
					})
					if !ok || pk.ID == nil || pk.PublicKey == nil {
						if ok && cv.get("credential_id") == nil {
							c.errf(joinKey(cp, "credential_id"), "required")
						}
						if ok && cv.get("public_key") == nil {
							c.errf(joinKey(cp, "public_key"), "required")
						}
						good = false
						continue
					}
					pr.Passkeys = append(pr.Passkeys, pk)
				}
			},
		})
		if !ok {
			continue
		}
		if it.get("id") == nil {
			c.errf(joinKey(p, "id"), "required")
			good = false
		}
		if it.get("roles") == nil {
			c.errf(joinKey(p, "roles"), "required")
			good = false
		}
		if good {
			ps.list = append(ps.list, pr)
			ps.byID[pr.ID] = pr
		}
	}
}

// readKeyText returns an inline PEM as it is, or the content of the file
// a path names (relative to baseDir).
func readKeyText(s, baseDir string) ([]byte, error) {
	if strings.Contains(s, "-----BEGIN") {
		return []byte(s), nil
	}
	path := strings.TrimSpace(s)
	if path == "" {
		return nil, fmt.Errorf("empty public_key")
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(baseDir, path)
	}
	data, err := fsutil.ReadRegular(path, maxKeyFile)
	if err != nil {
		return nil, fmt.Errorf("public key file: %w", err)
	}
	return data, nil
}

// readPublicKey takes an inline PEM or a path to a PEM file and returns the
// Ed25519 key. Errors never quote the file's content: someone may point it at
// a private key.
// apps reads apps: [{id, public_key}]: the Ed25519 key each app signs its
// requests with. An app id is the manifest's app_id shape; a key stands
// for one app and for no principal.
func (c *checker) apps(ps *Principals, list *value, baseDir string) {
	ps.apps = map[string]ed25519.PublicKey{}
	seen := map[string]string{}
	for _, pr := range ps.list {
		if pr.PublicKey != nil {
			seen[keys.Identity(pr.PublicKey)] = "a principal's public_key"
		}
	}
	for i, it := range list.items {
		p := joinIndex("apps", i)
		var id string
		var key ed25519.PublicKey
		c.fields(p, it, map[string]func(string, *value){
			"id": func(p string, v *value) {
				s, ok := c.str(p, v)
				if !ok {
					return
				}
				if s == "" || len(s) > 128 || strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
					c.errf(p, "app id %q: want 1 to 128 of [A-Za-z0-9._-], as the manifest's app_id", s)
					return
				}
				if _, dup := ps.apps[s]; dup {
					c.errf(p, "app %q listed twice", s)
					return
				}
				id = s
			},
			"public_key": func(p string, v *value) {
				s, ok := c.str(p, v)
				if !ok {
					return
				}
				k, err := readPublicKey(s, baseDir)
				if err != nil {
					c.errf(p, "%v", err)
					return
				}
				if first, dup := seen[keys.Identity(k)]; dup {
					c.errf(p, "same public key as %s: an app's key must be its own", first)
					return
				}
				seen[keys.Identity(k)] = p
				key = k
			},
		})
		switch {
		case id == "" && it.get("id") == nil:
			c.errf(p+".id", "required")
		case key == nil && it.get("public_key") == nil:
			c.errf(p+".public_key", "required")
		case id != "" && key != nil:
			ps.apps[id] = key
		}
	}
}

func readPublicKey(s, baseDir string) (ed25519.PublicKey, error) {
	data := []byte(s)
	where := "inline public_key"
	if !strings.Contains(s, "-----BEGIN") {
		path := strings.TrimSpace(s)
		if path == "" {
			return nil, fmt.Errorf("empty public_key (leave it out for a principal who never signs)")
		}
		if !filepath.IsAbs(path) {
			path = filepath.Join(baseDir, path)
		}
		var err error
		data, err = fsutil.ReadRegular(path, maxKeyFile)
		if err != nil {
			return nil, fmt.Errorf("public key file: %w", err)
		}
		where = "public key file " + path
	}
	k, err := keys.ParsePublic(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return k, nil
}
