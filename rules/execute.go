package rules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Execute is an action's execute template (docs/reference.md#execute): the
// ERP call POST /v1/execute makes for the action. Path placeholders {name}
// are filled from the call's parameters; the other parameters are the JSON
// body.
type Execute struct {
	Method string // upper case
	Path   string // as written
	// Params names the placeholders, in path order.
	Params []string

	parts []templatePart
}

// templatePart is literal text, or a placeholder when param is set.
type templatePart struct {
	text, param string
}

// ExecuteSample is the value check fills every placeholder with to build the
// sample request it classifies.
const ExecuteSample = "sample"

// MaxExecuteValue bounds one placeholder value, in bytes.
const MaxExecuteValue = 256

// ErrExecute is wrapped by every error of Execute.Build: the parameters
// cannot make the templated request (the caller's mistake, a 400).
var ErrExecute = errors.New("bad execute parameters")

// Fill returns the template's path with each placeholder replaced by
// values[name]. Values are not checked here; Build checks them.
func (x *Execute) Fill(values map[string]string) string {
	var b strings.Builder
	for _, p := range x.parts {
		if p.param != "" {
			b.WriteString(values[p.param])
		} else {
			b.WriteString(p.text)
		}
	}
	return b.String()
}

// Build makes the templated request's path and body from the parameters,
// a JSON object's members (each value exactly as it came, one JSON value).
// Every placeholder must be a parameter whose value is a string or a number
// of 1 to MaxExecuteValue bytes of A-Z a-z 0-9 - . _ ~ (RFC 3986's
// unreserved characters, which no server decodes or escapes, so the ERP
// reads the path the gate classified), neither "." nor "..". The parameters
// not used in the path are the body: one JSON object, members in byte order
// of their names, values in one canonical form (writeJSON); no
// remaining parameter is no body. The same parameters always give the same
// bytes, so a retry with an approval id has the approved digest.
func (x *Execute) Build(params map[string]json.RawMessage) (path string, body []byte, err error) {
	values := make(map[string]string, len(x.Params))
	for _, name := range x.Params {
		raw, ok := params[name]
		if !ok {
			return "", nil, fmt.Errorf("%w: parameter %q is missing; the path %s needs it", ErrExecute, name, x.Path)
		}
		v, err := segmentValue(raw)
		if err != nil {
			return "", nil, fmt.Errorf("%w: parameter %q: %v", ErrExecute, name, err)
		}
		values[name] = v
	}
	rest := make([]string, 0, len(params))
	for k := range params {
		if _, used := values[k]; !used {
			rest = append(rest, k)
		}
	}
	if len(rest) == 0 {
		return x.Fill(values), nil, nil
	}
	sort.Strings(rest)
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range rest {
		if i > 0 {
			b.WriteByte(',')
		}
		writeJSON(&b, k)
		b.WriteByte(':')
		var v any
		dec := json.NewDecoder(bytes.NewReader(params[k]))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			return "", nil, fmt.Errorf("%w: parameter %q: %v", ErrExecute, k, err)
		}
		writeJSON(&b, v)
	}
	b.WriteByte('}')
	return x.Fill(values), b.Bytes(), nil
}

// segmentValue is a placeholder's value: a JSON string's text or a JSON
// number's literal, of unreserved characters only.
func segmentValue(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	var s string
	switch {
	case len(raw) > 0 && raw[0] == '"':
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", err
		}
	case len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9'):
		s = string(raw)
	default:
		return "", errors.New("a path placeholder's value must be a string or a number")
	}
	switch {
	case s == "":
		return "", errors.New("empty; a path segment must not be")
	case s == "." || s == "..":
		return "", fmt.Errorf("%q is a dot segment", s)
	case len(s) > MaxExecuteValue:
		return "", fmt.Errorf("%d bytes; at most %d", len(s), MaxExecuteValue)
	}
	for i := 0; i < len(s); i++ {
		if !unreserved(s[i]) {
			return "", fmt.Errorf("%q at byte %d is not allowed in a path placeholder (only A-Z a-z 0-9 - . _ ~)", s[i:i+1], i)
		}
	}
	return s, nil
}

func unreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// writeJSON writes v in one canonical form: objects' members in byte order
// of their names, numbers as their literal text (json.Number), strings
// escaped only where JSON requires. v came from a document the body
// scanner accepted (valid UTF-8, no lone surrogates, no keys equal after
// case folding), so decoding lost nothing.
func writeJSON(b *bytes.Buffer, v any) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	b.Truncate(b.Len() - 1) // Encode's newline
}

// validParam reports whether s is a placeholder name: an identifier of 1 to
// 64 of [A-Za-z0-9_], not starting with a digit.
func validParam(s string) bool {
	if len(s) == 0 || len(s) > 64 || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// compileExecutePath splits a template path into literal text and
// placeholders. Literal text is held to the characters a path needs no
// escaping for (unreserved, and / between segments), so the filled path is
// the same to every server; no query, no empty, "." or ".." segment.
func compileExecutePath(s string) ([]templatePart, []string, error) {
	if !strings.HasPrefix(s, "/") {
		return nil, nil, errors.New("must start with /")
	}
	var parts []templatePart
	var params []string
	seen := map[string]bool{}
	for i := 0; i < len(s); {
		switch c := s[i]; {
		case c == '{':
			j := strings.IndexByte(s[i:], '}')
			if j < 0 {
				return nil, nil, fmt.Errorf("unclosed { at byte %d", i)
			}
			name := s[i+1 : i+j]
			if !validParam(name) {
				return nil, nil, fmt.Errorf("placeholder {%s} at byte %d is not a parameter name (1 to 64 of [A-Za-z0-9_], not starting with a digit)", name, i)
			}
			if seen[name] {
				return nil, nil, fmt.Errorf("placeholder {%s} appears twice", name)
			}
			seen[name] = true
			parts = append(parts, templatePart{param: name})
			params = append(params, name)
			i += j + 1
		case c == '}':
			return nil, nil, fmt.Errorf("} without { at byte %d", i)
		case c == '/' || unreserved(c):
			j := i
			for j < len(s) && (s[j] == '/' || unreserved(s[j])) {
				j++
			}
			parts = append(parts, templatePart{text: s[i:j]})
			i = j
		case c == '?':
			return nil, nil, errors.New("has a query; parameters not in the path are sent as the JSON body")
		default:
			return nil, nil, fmt.Errorf("%q at byte %d is not allowed in a template path (A-Z a-z 0-9 - . _ ~, / and {placeholders})", s[i:i+1], i)
		}
	}
	// Segments, with placeholders standing for a sample value.
	filled := (&Execute{parts: parts}).Fill(sampleValues(params))
	for k, seg := range strings.Split(filled[1:], "/") {
		switch {
		case seg == "" && k == 0 && filled == "/":
		case seg == "":
			return nil, nil, errors.New("has an empty segment (//, or a trailing /)")
		case seg == "." || seg == "..":
			return nil, nil, fmt.Errorf("has a %q segment", seg)
		}
	}
	return parts, params, nil
}

func sampleValues(params []string) map[string]string {
	m := make(map[string]string, len(params))
	for _, p := range params {
		m[p] = ExecuteSample
	}
	return m
}

// SamplePath is the template's path with every placeholder ExecuteSample:
// the request check classifies.
func (x *Execute) SamplePath() string { return x.Fill(sampleValues(x.Params)) }

func (c *checker) execute(p string, v *value) *Execute {
	x := &Execute{}
	good := true
	ok := c.fields(p, v, map[string]func(string, *value){
		"method": func(p string, v *value) {
			s, ok := c.str(p, v)
			if !ok {
				good = false
				return
			}
			up := strings.ToUpper(s)
			switch {
			case up == "CONNECT" || up == "TRACE":
				c.errf(p, "method %s cannot be executed", up)
				good = false
			case knownMethods[up]:
				x.Method = up
			default:
				c.errf(p, "unknown method %q (GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS)", s)
				good = false
			}
		},
		"path": func(p string, v *value) {
			s, ok := c.str(p, v)
			if !ok {
				good = false
				return
			}
			parts, params, err := compileExecutePath(s)
			if err != nil {
				c.errf(p, "bad execute path %q: %v", s, err)
				good = false
				return
			}
			x.Path, x.parts, x.Params = s, parts, params
		},
	})
	if !ok {
		return nil
	}
	for _, k := range []string{"method", "path"} {
		if v.get(k) == nil {
			c.errf(joinKey(p, k), "required")
			good = false
		}
	}
	if !good {
		return nil
	}
	return x
}

// checkExecute classifies each action's sample templated request (every
// placeholder ExecuteSample) as the sidecar door would, match rules naming
// a host taken as matching (check cannot know --upstream): it must be the
// action itself, else the template is a problem at its path. At run time
// the real request is classified again and refused when it is another
// action's (execute_mismatch).
func (c *checker) checkExecute(m *Manifest, actionsPath string) {
	for _, a := range m.Actions {
		if a.Execute == nil {
			continue
		}
		p := joinKey(joinKey(joinKey(actionsPath, a.Name), "execute"), "path")
		sample := a.Execute.SamplePath()
		path, err := canonicalPath(sample, false)
		if err != nil {
			c.errf(p, "the sample request %s %s has no canonical path: %v", a.Execute.Method, sample, err)
			continue
		}
		got := m.classifyAnyHost(a.Execute.Method, path)
		switch {
		case got == nil:
			c.errf(p, "the sample request %s %s (placeholders filled with %q) matches no action; it must classify as %s", a.Execute.Method, sample, ExecuteSample, a.Name)
		case got != a:
			c.errf(p, "the sample request %s %s (placeholders filled with %q) classifies as action %s, not %s", a.Execute.Method, sample, ExecuteSample, got.Name, a.Name)
		}
	}
}

// classifyAnyHost is classify with every rule's host taken as matching.
func (m *Manifest) classifyAnyHost(method, path string) *Action {
	for _, a := range m.Actions {
		for i := range a.Match {
			mr := &a.Match[i]
			if mr.Method != "" && !strings.EqualFold(mr.Method, method) {
				continue
			}
			if mr.path.match(path) {
				return a
			}
		}
	}
	return nil
}

// CheckJSON returns why body is not one unambiguous JSON document (the
// rules of ambiguous_body), or "" when it is.
func CheckJSON(body []byte) string {
	return scanBody(body, nil).invalid
}
