package rules

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"strconv"
	"strings"
)

// Request paths and patterns are compared in one canonical form: percent
// escapes of unreserved characters decoded (%61 is 'a'), other escapes kept
// with lower-case hex, ASCII lower-cased, and one trailing slash dropped. A
// path that servers could read in more than one way (dot segments, empty
// segments, encoded slashes or backslashes, ';' parameters, raw control or
// non-ASCII bytes) has no canonical form and is never classified: a request
// must not reach a denylisted endpoint by spelling it differently.
//
// Matching is case-insensitive because some ERPs route case-insensitively;
// against a case-sensitive ERP it can only classify a request that would 404
// anyway.

var (
	errPathNotAbsolute = errors.New("does not start with '/'")
	errPathDotSegment  = errors.New("has a '.' or '..' segment")
	errPathEmptySeg    = errors.New("has an empty segment ('//')")
	errPathEncodedSep  = errors.New("has an encoded '/', '\\' or NUL")
	errPathBackslash   = errors.New("has a '\\'")
	errPathParam       = errors.New("has a ';' path parameter")
	errPathBadEscape   = errors.New("has a malformed percent escape")
	errPathBadByte     = errors.New("has a space, control or non-ASCII byte")
)

func isUnreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// canonicalPath returns the canonical form of an escaped request path. It
// allocates only when the path has upper-case letters or percent escapes.
// glob keeps the glob syntax of patterns ('*', '?', '[', ']', '\', '^')
// intact instead of rejecting '\'.
func canonicalPath(p string, glob bool) (string, error) {
	if p == "" || p[0] != '/' {
		return "", errPathNotAbsolute
	}
	rewrite := false
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '%' || c >= 'A' && c <= 'Z':
			rewrite = true
		case c == '\\' && !glob:
			return "", errPathBackslash
		case c == ';':
			return "", errPathParam
		case c <= ' ' || c >= 0x7f:
			return "", errPathBadByte
		}
	}
	out := p
	if rewrite {
		b := make([]byte, 0, len(p))
		for i := 0; i < len(p); i++ {
			c := p[i]
			if c != '%' {
				b = append(b, lower(c))
				continue
			}
			if i+2 >= len(p) {
				return "", errPathBadEscape
			}
			hi, ok1 := unhex(p[i+1])
			lo, ok2 := unhex(p[i+2])
			if !ok1 || !ok2 {
				return "", errPathBadEscape
			}
			d := hi<<4 | lo
			switch {
			case d == '/' || d == '\\' || d == 0:
				return "", errPathEncodedSep
			case isUnreserved(d):
				b = append(b, lower(d))
			default:
				b = append(b, '%', lower(p[i+1]), lower(p[i+2]))
			}
			i += 2
		}
		out = string(b)
	}
	if len(out) > 1 && out[len(out)-1] == '/' {
		out = out[:len(out)-1]
	}
	// Segment checks on the decoded form, so %2e%2e counts as "..".
	if out == "/" {
		return out, nil
	}
	for rest := out[1:]; ; {
		seg, tail, more := strings.Cut(rest, "/")
		switch seg {
		case "":
			return "", errPathEmptySeg
		case ".", "..":
			return "", errPathDotSegment
		}
		if !more {
			return out, nil
		}
		rest = tail
	}
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}

// pathPattern is a compiled path glob. Each element of segs matches exactly
// one non-empty segment; rest is set when the pattern ends with "**", which
// matches zero or more further segments.
type pathPattern struct {
	segs []segPattern
	rest bool
}

type segPattern struct {
	text string
	glob bool // text has glob syntax; otherwise it is compared literally
}

const globMeta = `*?[\`

func compilePathPattern(p string) (pathPattern, error) {
	var pp pathPattern
	if p == "" || p[0] != '/' {
		return pp, errors.New(`must start with "/"`)
	}
	if len(p) > 1 && p[len(p)-1] == '/' {
		return pp, fmt.Errorf("ends with '/'; write %q (requests are matched without their trailing slash)", strings.TrimRight(p, "/"))
	}
	canon, err := canonicalPath(p, true)
	if err != nil {
		return pp, err
	}
	if canon == "/" {
		return pp, nil
	}
	segs := strings.Split(canon[1:], "/")
	for i, s := range segs {
		switch {
		case s == "**":
			if i != len(segs)-1 {
				return pp, errors.New(`"**" is only allowed as the last segment`)
			}
			pp.rest = true
			continue
		case strings.Contains(s, "**"):
			return pp, fmt.Errorf(`segment %q: "**" must be a whole segment`, s)
		}
		glob := strings.ContainsAny(s, globMeta)
		if glob {
			if _, err := path.Match(s, ""); err != nil {
				return pp, fmt.Errorf("segment %q: bad glob syntax", s)
			}
		}
		pp.segs = append(pp.segs, segPattern{text: s, glob: glob})
	}
	return pp, nil
}

// match reports whether the canonical path p matches. It does not allocate.
func (pp *pathPattern) match(p string) bool {
	rest := p[1:] // p is canonical: starts with '/', no empty segments
	for _, sp := range pp.segs {
		if rest == "" {
			return false
		}
		seg := rest
		i := strings.IndexByte(rest, '/')
		if i >= 0 {
			seg, rest = rest[:i], rest[i+1:]
		} else {
			rest = ""
		}
		if !sp.matchSeg(seg) {
			return false
		}
	}
	return rest == "" || pp.rest
}

func (sp *segPattern) matchSeg(s string) bool {
	if !sp.glob {
		return s == sp.text
	}
	ok, _ := path.Match(sp.text, s)
	return ok
}

// hostPattern matches a host name label by label ("*" within a label as in
// path.Match, so "*.example.com" does not match "example.com"), and the port
// when it names one. An IP literal is compared exactly.
type hostPattern struct {
	labels []segPattern
	ip     netip.Addr // set for IP literal patterns
	port   string     // "" any port; "*" any port, explicitly; else digits
}

// compileHostPattern parses "name", "name:port", "[v6]", "[v6]:port". With
// needPort the port is required (tunnel_hosts).
func compileHostPattern(s string, needPort bool) (hostPattern, error) {
	var hp hostPattern
	if s == "" {
		return hp, errors.New("empty host")
	}
	host, port, hasPort, err := splitHostPort(s)
	if err != nil {
		return hp, err
	}
	if hasPort {
		if port != "*" {
			n, err := strconv.Atoi(port)
			if err != nil || n < 1 || n > 65535 || port[0] == '0' {
				return hp, fmt.Errorf("bad port %q (1-65535 or *)", port)
			}
		}
		hp.port = port
	} else if needPort {
		return hp, errors.New("no port")
	}
	if strings.HasPrefix(host, "[") {
		a, err := netip.ParseAddr(strings.Trim(host, "[]"))
		if err != nil || !a.Is6() {
			return hp, fmt.Errorf("bad IPv6 literal %q", host)
		}
		hp.ip = a
		return hp, nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		hp.ip = a
		return hp, nil
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "" || len(host) > 253 {
		return hp, errors.New("bad host name length")
	}
	for _, l := range strings.Split(host, ".") {
		if l == "" {
			return hp, errors.New("empty label in host name")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '*' || c == '?') {
				return hp, fmt.Errorf("character %q not allowed in a host name pattern", c)
			}
		}
		glob := strings.ContainsAny(l, "*?")
		if glob && strings.Contains(l, "**") {
			return hp, errors.New(`"**" is not allowed in host names`)
		}
		hp.labels = append(hp.labels, segPattern{text: l, glob: glob})
	}
	return hp, nil
}

// splitHostPort splits "host", "host:port", "[v6]" or "[v6]:port".
func splitHostPort(s string) (host, port string, hasPort bool, err error) {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", false, errors.New("missing ']' in IPv6 literal")
		}
		host, rest := s[:end+1], s[end+1:]
		if rest == "" {
			return host, "", false, nil
		}
		if rest[0] != ':' || len(rest) == 1 {
			return "", "", false, errors.New("bad port after IPv6 literal")
		}
		return host, rest[1:], true, nil
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return s, "", false, nil
	}
	if strings.IndexByte(s[:i], ':') >= 0 {
		return "", "", false, errors.New("IPv6 literals must be in brackets")
	}
	if i == len(s)-1 {
		return "", "", false, errors.New("empty port")
	}
	return s[:i], s[i+1:], true, nil
}

// reqHost is a request's host split once per request.
type reqHost struct {
	name string // lower case, no trailing dot, IPv6 with brackets
	port string // explicit, or the scheme's default
	ok   bool
}

func parseReqHost(h, scheme string) reqHost {
	host, port, hasPort, err := splitHostPort(h)
	if err != nil || host == "" {
		return reqHost{}
	}
	if !hasPort {
		switch strings.ToLower(scheme) {
		case "https":
			port = "443"
		case "http":
			port = "80"
		}
	}
	host = strings.TrimSuffix(host, ".")
	for i := 0; i < len(host); i++ {
		if c := host[i]; c >= 'A' && c <= 'Z' {
			host = strings.ToLower(host)
			break
		}
	}
	return reqHost{name: host, port: port, ok: true}
}

func (hp *hostPattern) match(h reqHost) bool {
	if !h.ok {
		return false
	}
	if hp.port != "" && hp.port != "*" && hp.port != h.port {
		return false
	}
	if hp.ip.IsValid() {
		a, err := netip.ParseAddr(strings.Trim(h.name, "[]"))
		return err == nil && a.Unmap() == hp.ip.Unmap()
	}
	rest := h.name
	for _, lp := range hp.labels {
		if rest == "" {
			return false
		}
		label := rest
		j := strings.IndexByte(rest, '.')
		if j >= 0 {
			label, rest = rest[:j], rest[j+1:]
		} else {
			rest = ""
		}
		if label == "" || !lp.matchSeg(label) {
			return false
		}
	}
	return rest == ""
}
