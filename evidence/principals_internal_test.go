package evidence

import (
	"fmt"
	"testing"

	"github.com/uapk-gateway/uapk-proxy/record"
)

func person(id, key string, roles ...string) record.Principal {
	return record.Principal{ID: id, Roles: roles, PublicKey: key}
}

// history builds the eras config records at the given seqs would give:
// nil list means the record names no principals.
func history(t *testing.T, eras map[uint64][]record.Principal, seqs ...uint64) *principalHistory {
	t.Helper()
	h := newPrincipalHistory()
	for _, seq := range seqs {
		e := &era{config: seq}
		if list := eras[seq]; list != nil {
			sum, err := principalsSHA256(list)
			if err != nil {
				t.Fatal(err)
			}
			e.known, e.sha, e.list = true, sum, list
		}
		h.eras = append(h.eras, e)
	}
	return h
}

func spans(es []PrincipalEntry) []string {
	var out []string
	for _, e := range es {
		s := fmt.Sprintf("%s %s %v %d-%d", e.ID, e.PublicKey, e.Roles, e.ConfigRecord, e.UntilRecord)
		for _, w := range e.WebAuthn {
			s += " passkey " + w.CredentialID
		}
		out = append(out, s)
	}
	return out
}

func withPasskey(p record.Principal, cred string) record.Principal {
	p.WebAuthn = append(p.WebAuthn, record.PasskeyCredential{CredentialID: cred, PublicKey: "P-" + cred})
	return p
}

func TestPrincipalHistoryEntries(t *testing.T) {
	cfo1, cfo2, ctl := person("cfo@x", "K1", "cfo"), person("cfo@x", "K2", "cfo"), person("ctl@x", "K3", "controller")
	for _, tc := range []struct {
		name string
		eras map[uint64][]record.Principal
		seqs []uint64
		want []string
	}{
		{"one set throughout: no spans", map[uint64][]record.Principal{1: {cfo1, ctl}, 9: {cfo1, ctl}}, []uint64{1, 9},
			[]string{"cfo@x K1 [cfo] 0-0", "ctl@x K3 [controller] 0-0"}},
		{"a rotated key", map[uint64][]record.Principal{1: {cfo1, ctl}, 9: {cfo2, ctl}}, []uint64{1, 9},
			[]string{"cfo@x K1 [cfo] 1-9", "ctl@x K3 [controller] 1-0", "cfo@x K2 [cfo] 9-0"}},
		{"a role added", map[uint64][]record.Principal{1: {cfo1}, 5: {person("cfo@x", "K1", "cfo", "controller")}}, []uint64{1, 5},
			[]string{"cfo@x K1 [cfo] 1-5", "cfo@x K1 [cfo controller] 5-0"}},
		{"someone leaves and comes back", map[uint64][]record.Principal{1: {cfo1, ctl}, 4: {ctl}, 8: {cfo1, ctl}}, []uint64{1, 4, 8},
			[]string{"cfo@x K1 [cfo] 1-4", "ctl@x K3 [controller] 1-0", "cfo@x K1 [cfo] 8-0"}},
		{"a span the chain names no one for", map[uint64][]record.Principal{1: {cfo1}, 9: {cfo1}}, []uint64{1, 4, 9},
			[]string{"cfo@x K1 [cfo] 1-4", "cfo@x K1 [cfo] 9-0"}},
		{"two config records in a row", map[uint64][]record.Principal{1: {cfo1}, 2: {cfo2}, 3: {cfo1}}, []uint64{1, 2, 3},
			[]string{"cfo@x K1 [cfo] 1-2", "cfo@x K2 [cfo] 2-3", "cfo@x K1 [cfo] 3-0"}},
		{"a passkey added", map[uint64][]record.Principal{1: {cfo1}, 6: {withPasskey(cfo1, "C1")}, 9: {withPasskey(cfo1, "C1")}}, []uint64{1, 6, 9},
			[]string{"cfo@x K1 [cfo] 1-6", "cfo@x K1 [cfo] 6-0 passkey C1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := spans(history(t, tc.eras, tc.seqs...).entries())
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("entries\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestPrincipalHistoryAt(t *testing.T) {
	h := history(t, map[uint64][]record.Principal{3: {person("a", "K", "r")}}, 3, 10)
	for seq, want := range map[uint64]uint64{1: 0, 3: 0, 4: 3, 10: 3, 11: 10, 99: 10} {
		if got := h.at(seq).config; got != want {
			t.Errorf("record %d is under config record %d, want %d", seq, got, want)
		}
	}
}

// TestVerifyPrincipalSpans: the bundle verifier picks the entry in force
// at a statement's record, and refuses one person twice at once.
func TestVerifyPrincipalSpans(t *testing.T) {
	v := &bundleVerifier{principals: map[string][]*principal{"cfo@x": {
		{id: "cfo@x", keyPEM: "K1", from: 1, until: 9},
		{id: "cfo@x", keyPEM: "K2", from: 9},
	}}}
	for seq, want := range map[uint64]string{2: "K1", 8: "K1", 10: "K2"} {
		if p := v.signer("cfo@x", seq); p == nil || p.keyPEM != want {
			t.Errorf("statement in record %d: %+v, want %s", seq, p, want)
		}
	}
	if p := v.signer("CFO@x", 2); p != nil {
		t.Errorf("an id in another case found %+v: ids are canonical, compared as bytes", p)
	}
	old := &bundleVerifier{principals: map[string][]*principal{"cfo@x": {{id: "cfo@x", keyPEM: "K1"}}}}
	if p := old.signer("cfo@x", 5); p == nil {
		t.Error("an entry without spans (a bundle from before them) is not in force")
	}
}
