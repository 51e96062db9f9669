package evidence

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/gowebpki/jcs"

	"github.com/uapk-gateway/uapk-proxy/passkey"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// ConfigPrincipals is p as a config record carries it (record.Config): one
// entry per principal, sorted by id, with the PKIX PEM public key, and the
// hex SHA-256 of the RFC 8785 canonical JSON of record.PrincipalsMap(list).
// nil p is the empty list: no one can sign.
func ConfigPrincipals(p *rules.Principals) ([]record.Principal, string, error) {
	list := []record.Principal{}
	for _, pr := range p.All() {
		rp := record.Principal{ID: pr.ID, Roles: append([]string{}, pr.Roles...), PublicKey: pr.PublicKeyPEM()}
		for _, k := range pr.Passkeys {
			rp.WebAuthn = append(rp.WebAuthn, record.PasskeyCredential{CredentialID: passkey.Encode(k.ID), PublicKey: k.PEM})
		}
		list = append(list, rp)
	}
	slices.SortFunc(list, func(a, b record.Principal) int { return strings.Compare(a.ID, b.ID) })
	sum, err := principalsSHA256(list)
	return list, sum, err
}

func principalsSHA256(list []record.Principal) (string, error) {
	b, err := json.Marshal(record.PrincipalsMap(list))
	if err != nil {
		return "", err
	}
	return canonicalSHA256(b)
}

// canonicalSHA256 is the hex SHA-256 of the RFC 8785 form of the JSON b.
func canonicalSHA256(b []byte) (string, error) {
	c, err := jcs.Transform(b)
	if err != nil {
		return "", err
	}
	return sha256Hex(c), nil
}

// era is the principals one config record put in force: for the records
// after it, up to the next config record.
type era struct {
	config uint64 // the config record's seq; 0 for the chain's start, before any
	known  bool   // the config record named its principals
	given  bool   // the chain names none; list is the principals given instead
	sha    string
	list   []record.Principal
}

func (e *era) signers() bool { return e.known || e.given }

func (e *era) get(id string) (record.Principal, bool) { return findPrincipal(e.list, id) }

// findPrincipal looks id up in list, ids compared without case as the
// principals file compares them.
func findPrincipal(list []record.Principal, id string) (record.Principal, bool) {
	for _, p := range list {
		if strings.EqualFold(p.ID, id) {
			return p, true
		}
	}
	return record.Principal{}, false
}

// principalHistory is what the chain says about who was in force when, read
// from its config records up to the range's end, so that a statement
// signed under a key since replaced is checked against that key.
type principalHistory struct {
	eras []*era // in seq order; eras[0] is the chain's start
	// Where the principals of eras the chain names none for came from.
	givenName string
}

func newPrincipalHistory() *principalHistory {
	return &principalHistory{eras: []*era{{config: 0}}}
}

// addConfig takes the next config record (seqs increasing).
func (h *principalHistory) addConfig(r *rec) error {
	e := &era{config: r.Seq}
	h.eras = append(h.eras, e)
	d, ok := r.typedData().(*record.Config)
	if !ok || d.PrincipalsSHA256 == "" {
		return nil // a proxy from before config records named principals
	}
	sum, err := principalsSHA256(d.Principals)
	if err != nil || sum != d.PrincipalsSHA256 {
		return fmt.Errorf("%w: config record %d's principals do not hash to its principals_sha256 %s", ErrPrincipalsMismatch, r.Seq, d.PrincipalsSHA256)
	}
	e.known, e.sha, e.list = true, sum, d.Principals
	return nil
}

// at returns the era in force when record seq was written: the last config
// record before it.
func (h *principalHistory) at(seq uint64) *era {
	i, _ := slices.BinarySearchFunc(h.eras, seq, func(e *era, s uint64) int {
		if e.config < s {
			return -1
		}
		return 1
	})
	return h.eras[max(i-1, 0)]
}

// covers reports whether era i is in force for some record of [from, to].
func (h *principalHistory) covers(i int, from, to uint64) bool {
	e := h.eras[i]
	return e.config < to && (i+1 == len(h.eras) || h.eras[i+1].config > from)
}

// resolve fills in the eras the chain names no principals for, from given
// (--principals) or else fallback (the running proxy's), and refuses given
// when it disagrees with what the chain says was in force for the range:
// an override may stand in for what the chain lacks, never for what it says.
func (h *principalHistory) resolve(given *rules.Principals, givenName string, fallback *rules.Principals, from, to uint64) error {
	fill, name := given, givenName
	if fill == nil {
		fill, name = fallback, "the running proxy's principals"
	}
	if fill == nil {
		return nil
	}
	list, sum, err := ConfigPrincipals(fill)
	if err != nil {
		return err
	}
	for i, e := range h.eras {
		switch {
		case e.known && given != nil && h.covers(i, from, to) && e.sha != sum:
			return fmt.Errorf("%w: %s, given with --principals, is not what the chain's config record %d put in force for records %d to %d: %s; the chain carries its principals, so leave --principals out",
				ErrPrincipalsDisagree, givenName, e.config, max(e.config+1, from), h.eraEnd(i, to), principalsDiff(list, e.list, givenName))
		case !e.known && h.holdsRecords(i):
			e.list, e.sha, e.given = list, sum, true
			h.givenName = name
		}
	}
	return nil
}

// holdsRecords reports whether era i is in force for any record: not when
// the next config record follows its own at once.
func (h *principalHistory) holdsRecords(i int) bool {
	return i+1 == len(h.eras) || h.eras[i+1].config > h.eras[i].config+1
}

// eraEnd is the last record of [.., to] era i is in force for.
func (h *principalHistory) eraEnd(i int, to uint64) uint64 {
	if i+1 < len(h.eras) {
		return min(h.eras[i+1].config-1, to)
	}
	return to
}

// principalsDiff names the first difference between a principals list
// given and the one in force.
func principalsDiff(given, inForce []record.Principal, name string) string {
	for _, p := range inForce {
		g, ok := findPrincipal(given, p.ID)
		switch {
		case !ok:
			return fmt.Sprintf("%s is not in %s", p.ID, name)
		case g.PublicKey != p.PublicKey:
			return fmt.Sprintf("%s's public key differs from the one in force, and a statement signed with that one does not verify with their key in %s", p.ID, name)
		case !slices.Equal(g.Roles, p.Roles):
			return fmt.Sprintf("%s holds %v there, %v in %s", p.ID, p.Roles, g.Roles, name)
		case !slices.Equal(g.WebAuthn, p.WebAuthn):
			return fmt.Sprintf("%s's passkeys differ from the ones in force, and a decision made with one of those does not verify with their passkeys in %s", p.ID, name)
		}
	}
	for _, g := range given {
		if _, ok := findPrincipal(inForce, g.ID); !ok {
			return fmt.Sprintf("%s is in %s but was not in force", g.ID, name)
		}
	}
	return "the same people, keys, passkeys and roles in another order or spelling"
}

// source says where keys/principals.json came from.
func (h *principalHistory) source() string {
	var cfgs []string
	for _, e := range h.eras {
		if e.known {
			cfgs = append(cfgs, strconv.FormatUint(e.config, 10))
		}
	}
	var parts []string
	switch {
	case len(cfgs) == 1:
		parts = append(parts, "the chain's config record "+cfgs[0])
	case len(cfgs) > 1 && len(cfgs) <= 20:
		parts = append(parts, "the chain's config records "+strings.Join(cfgs, ", "))
	case len(cfgs) > 20:
		parts = append(parts, fmt.Sprintf("the chain's %d config records %s to %s", len(cfgs), cfgs[0], cfgs[len(cfgs)-1]))
	}
	if h.givenName != "" {
		if len(parts) == 0 {
			return h.givenName
		}
		parts = append(parts, h.givenName+" where the chain names none")
	}
	if len(parts) == 0 {
		return "none given: the range holds no signed statement"
	}
	return strings.Join(parts, "; ")
}

// entries is keys/principals.json's list: each principal's id, roles and
// key, with the config records between which that entry was in force.
// Entries the same from one era to the next are one entry. When one set of
// principals was in force throughout, the entries carry no records at all:
// the file is then exactly what it was before the chain carried principals.
func (h *principalHistory) entries() []PrincipalEntry {
	out := []PrincipalEntry{}
	open := map[string]int{} // lower-case id -> index in out of its entry in force
	sets := map[string]bool{}
	for i, e := range h.eras {
		if i == 0 && len(h.eras) > 1 && h.eras[1].config <= 1 {
			continue // before config record 1: no record at all
		}
		cur := map[string]record.Principal{}
		if e.signers() {
			sets[e.sha] = true
			for _, p := range e.list {
				cur[strings.ToLower(p.ID)] = p
			}
		}
		for id, j := range open {
			if p, ok := cur[id]; !ok || !out[j].same(p) {
				out[j].UntilRecord = e.config
				delete(open, id)
			}
		}
		if !e.signers() {
			continue
		}
		for _, p := range e.list {
			if _, ok := open[strings.ToLower(p.ID)]; ok {
				continue
			}
			open[strings.ToLower(p.ID)] = len(out)
			out = append(out, PrincipalEntry{ID: p.ID, Roles: append([]string{}, p.Roles...), PublicKey: p.PublicKey,
				WebAuthn: slices.Clone(p.WebAuthn), ConfigRecord: e.config})
		}
	}
	closed := slices.ContainsFunc(out, func(p PrincipalEntry) bool { return p.UntilRecord != 0 })
	if len(sets) <= 1 && !closed {
		for i := range out {
			out[i].ConfigRecord = 0
		}
	}
	return out
}

func (p *PrincipalEntry) same(q record.Principal) bool {
	return p.ID == q.ID && p.PublicKey == q.PublicKey && slices.Equal(p.Roles, q.Roles) && slices.Equal(p.WebAuthn, q.WebAuthn)
}

// rawPrincipals returns the canonical SHA-256 of a config record's
// data.principals as stored, and its principals_sha256, for the bundle
// verifier, which checks the two agree without trusting the typed reading.
func rawPrincipals(data json.RawMessage) (sum, claimed string, ok bool) {
	var d struct {
		Principals json.RawMessage `json:"principals"`
		SHA256     string          `json:"principals_sha256"`
	}
	if json.Unmarshal(data, &d) != nil || d.SHA256 == "" {
		return "", "", false
	}
	if len(bytes.TrimSpace(d.Principals)) == 0 {
		return "", d.SHA256, true
	}
	sum, err := canonicalSHA256(d.Principals)
	if err != nil {
		return "", d.SHA256, true
	}
	return sum, d.SHA256, true
}
