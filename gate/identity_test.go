package gate

import (
	"context"
	"errors"
	"strings"
	"testing"
)

type fakeIdentity struct{ id string }

func (f fakeIdentity) Verify(_ context.Context, token string) (Caller, error) {
	if token != "good-token" {
		return Caller{}, errors.New("token signature invalid")
	}
	return Caller{ID: f.id, Subject: "s", JTI: "j"}, nil
}

// TestProveCallerFoldsASCIIOnly: a provider's mixed-case address is the
// principal's id in lower case, but a claim that Unicode case rules would
// fold into an ASCII id (KELVIN SIGN into k, dotted I into i) is refused,
// never taken for that other person.
func TestProveCallerFoldsASCIIOnly(t *testing.T) {
	cases := []struct{ claim, want, err string }{
		{"Kim@Corp.Example", "kim@corp.example", ""},
		{"kim@corp.example", "kim@corp.example", ""},
		{"\u212Aim@corp.example", "", "not ASCII"},
		{"m\u0130ke@corp.example", "", "not ASCII"},
		{"two words@corp.example", "", "space"},
		{"", "", "empty"},
	}
	for _, c := range cases {
		cl, err := ProveCaller(fakeIdentity{c.claim}, "good-token")
		if c.err == "" {
			if err != nil || cl.ID != c.want {
				t.Errorf("%q: %q %v, want %q", c.claim, cl.ID, err, c.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%q: %q %v, want an error about %q", c.claim, cl.ID, err, c.err)
		}
	}
	if _, err := ProveCaller(fakeIdentity{"kim@corp.example"}, ""); err == nil {
		t.Error("no token was taken")
	}
	if _, err := ProveCaller(fakeIdentity{"kim@corp.example"}, "forged"); err == nil || !strings.Contains(err.Error(), "signature") {
		t.Errorf("forged: %v", err)
	}
}
