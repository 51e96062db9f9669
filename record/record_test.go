package record

import (
	"encoding/json"
	"reflect"
	"testing"
)

// mapper is every typed data member.
type mapper interface{ Map() map[string]any }

func allData() []mapper {
	return []mapper{&Request{}, &Forward{}, &Signature{}, &Refusal{}, &Expiry{}, &Token{},
		&OverrideRequest{}, &Config{}, &Checkpoint{}, &Archive{}, &AdminRefusals{}, &Notification{}}
}

// fill sets every field of the struct v points to to a non-zero value.
func fill(v reflect.Value) {
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString("x" + v.Type().Field(i).Name)
		case reflect.Int, reflect.Int64:
			f.SetInt(int64(7 + i))
		case reflect.Uint64:
			f.SetUint(uint64(7 + i))
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Slice:
			s := reflect.MakeSlice(f.Type(), 1, 1)
			if e := s.Index(0); e.Kind() == reflect.Struct {
				fill(e)
			} else {
				e.SetString("role")
			}
			f.Set(s)
		}
	}
}

func asJSONMap(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestMapMatchesTags: what a writer stores (Map) is what a reader decodes
// (the json tags), member for member, when every field is set. A field
// added to a struct but not to its Map, or spelt two ways, fails here.
func TestMapMatchesTags(t *testing.T) {
	for _, d := range allData() {
		fill(reflect.ValueOf(d).Elem())
		name := reflect.TypeOf(d).Elem().Name()
		stored, tagged := asJSONMap(t, d.Map()), asJSONMap(t, d)
		if !reflect.DeepEqual(stored, tagged) {
			t.Errorf("%s: Map gives\n %v\nthe json tags give\n %v", name, stored, tagged)
		}
		// And the stored member reads back into the same value.
		b, _ := json.Marshal(d.Map())
		back := reflect.New(reflect.TypeOf(d).Elem())
		if err := json.Unmarshal(b, back.Interface()); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := reflect.ValueOf(d).Elem().Interface()
		if f, ok := d.(*Forward); ok && f.Tunnel {
			back.Elem().FieldByName("Tunnel").SetBool(true) // not stored; implied by the reason
		}
		if !reflect.DeepEqual(back.Elem().Interface(), want) {
			t.Errorf("%s: read back as %+v, wrote %+v", name, back.Elem().Interface(), want)
		}
	}
}

// TestMapOmitsWhatWasNeverWritten pins the members a minimal record has:
// the shapes the chain has always held.
func TestMapOmitsWhatWasNeverWritten(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    mapper
		want []string
	}{
		{"refused request", &Request{Door: "sidecar", Method: "GET", URL: "http://erp/x"}, []string{"caller_verified", "door", "method", "url"}},
		{"empty body", &Request{Door: "sidecar", Method: "GET", URL: "u", BodySHA256: "e3b0"}, []string{"body_sha256", "body_size", "caller_verified", "door", "method", "url"}},
		{"forward error", &Forward{RequestRecord: 3, Error: "refused"}, []string{"delivered", "error", "latency_ms", "latency_us", "request_record"}},
		{"tunnel closed", &Forward{RequestRecord: 3, Tunnel: true}, []string{"bytes_down", "bytes_up", "latency_ms", "latency_us", "request_record"}},
		{"config without principals", &Config{}, []string{"gateway_key", "manifest_file", "manifest_version", "proxy_addr", "proxy_version", "upstream"}},
	} {
		var got []string
		for k := range tc.d.Map() {
			got = append(got, k)
		}
		if !sameSet(got, tc.want) {
			t.Errorf("%s: members %v, want %v", tc.name, got, tc.want)
		}
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, x := range a {
		seen[x]++
	}
	for _, x := range b {
		seen[x]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}

func TestCodesAreDistinctAndKnown(t *testing.T) {
	seen := map[Reason]bool{}
	for _, r := range Reasons {
		if seen[r] {
			t.Errorf("reason %q listed twice", r)
		}
		seen[r] = true
		if !r.Known() {
			t.Errorf("%q not Known", r)
		}
	}
	if Reason("amount_over_kap").Known() || Kind("requests").Known() {
		t.Error("a misspelt code is Known")
	}
	for _, k := range Kinds {
		if !k.Known() {
			t.Errorf("kind %q not Known", k)
		}
	}
	if len(Kinds) != 10 {
		t.Errorf("%d kinds, the reference names 10", len(Kinds))
	}
}
