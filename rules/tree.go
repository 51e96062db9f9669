package rules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The manifest and principals decoders first build a small ordered tree from
// either JSON or YAML, then validate the tree. A tree (rather than
// encoding/json into structs) keeps key order, which decides which action wins
// a match, and lets validation report every problem with its path instead of
// stopping at the first.

type kind uint8

const (
	kNull kind = iota
	kBool
	kNumber
	kString
	kArray
	kObject
)

func (k kind) String() string {
	switch k {
	case kBool:
		return "boolean"
	case kNumber:
		return "number"
	case kString:
		return "string"
	case kArray:
		return "array"
	case kObject:
		return "object"
	default:
		return "null"
	}
}

type member struct {
	key string
	val *value
}

type value struct {
	kind kind
	// text is a string's value or a number's literal (JSON text, or the
	// decimal form of a YAML integer).
	text string
	// literal marks a YAML plain scalar that resolved to a number or a
	// timestamp: the author typed the characters, so a string field may take
	// them (version: 1.0).
	literal bool
	b       bool
	// bad marks a node already reported while building the tree (an alias,
	// an unsupported tag): validation stays quiet about it.
	bad     bool
	items   []*value
	members []member
}

// get returns the member named key, or nil.
func (v *value) get(key string) *value {
	for _, m := range v.members {
		if m.key == key {
			return m.val
		}
	}
	return nil
}

// maxDepth bounds nesting in configuration documents; real ones are about
// six levels deep, and the bound keeps hostile input from recursing without
// end.
const maxDepth = 64

// decodeTree decodes data as JSON when its first non-space byte is '{', as
// YAML otherwise. A syntax error is returned as a *ValidationError with one
// problem; duplicate keys and other structural problems found while building
// the tree are returned in probs and the tree is still usable.
func decodeTree(data []byte) (root *value, probs []Problem, err error) {
	if trimmed := bytes.TrimLeft(data, " \t\r\n"); len(trimmed) > 0 && trimmed[0] == '{' {
		return decodeJSON(data)
	}
	return decodeYAML(data)
}

type treeBuilder struct {
	probs []Problem
}

func (b *treeBuilder) errf(path, format string, args ...any) {
	b.probs = append(b.probs, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

var errTooDeep = errors.New("document nests too deeply")

func decodeJSON(data []byte) (*value, []Problem, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	b := &treeBuilder{}
	root, err := b.readJSON(dec, "", 0)
	off := dec.InputOffset()
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("unexpected data after the top-level value")
			for off < int64(len(data)) && strings.IndexByte(" \t\r\n", data[off]) >= 0 {
				off++
			}
		}
	}
	if err != nil {
		return nil, nil, syntaxProblem("JSON", data, off, err)
	}
	return root, b.probs, nil
}

func syntaxProblem(format string, data []byte, off int64, err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		off = se.Offset
	}
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	col := int(off) - bytes.LastIndexByte(data[:off], '\n')
	msg := err.Error()
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		msg = "unexpected end of input"
	}
	return &ValidationError{Problems: []Problem{{
		Message: fmt.Sprintf("invalid %s at line %d, column %d: %s", format, line, col, msg),
	}}}
}

func (b *treeBuilder) readJSON(dec *json.Decoder, path string, depth int) (*value, error) {
	if depth > maxDepth {
		return nil, errTooDeep
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			v := &value{kind: kObject}
			seen := map[string]bool{}
			for dec.More() {
				ktok, err := dec.Token()
				if err != nil {
					return nil, err
				}
				key, ok := ktok.(string)
				if !ok {
					return nil, errors.New("object key is not a string")
				}
				p := joinKey(path, key)
				child, err := b.readJSON(dec, p, depth+1)
				if err != nil {
					return nil, err
				}
				if seen[key] {
					b.errf(p, "duplicate key %q", key)
					continue
				}
				seen[key] = true
				v.members = append(v.members, member{key, child})
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
			return v, nil
		case '[':
			v := &value{kind: kArray}
			for i := 0; dec.More(); i++ {
				child, err := b.readJSON(dec, joinIndex(path, i), depth+1)
				if err != nil {
					return nil, err
				}
				v.items = append(v.items, child)
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
			return v, nil
		}
		return nil, fmt.Errorf("unexpected %q", rune(t))
	case string:
		return &value{kind: kString, text: t}, nil
	case json.Number:
		return &value{kind: kNumber, text: t.String()}, nil
	case bool:
		return &value{kind: kBool, b: t}, nil
	case nil:
		return &value{kind: kNull}, nil
	}
	return nil, fmt.Errorf("unexpected token %v", tok)
}

func decodeYAML(data []byte) (*value, []Problem, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nil, nil, &ValidationError{Problems: []Problem{{Message: "empty document"}}}
		}
		return nil, nil, yamlProblem(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		if err != nil {
			return nil, nil, yamlProblem(err)
		}
		return nil, nil, &ValidationError{Problems: []Problem{{Message: "invalid YAML: more than one document"}}}
	}
	b := &treeBuilder{}
	n := &doc
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil, nil, &ValidationError{Problems: []Problem{{Message: "empty document"}}}
		}
		n = n.Content[0]
	}
	root := b.fromYAML(n, "", 0)
	return root, b.probs, nil
}

func yamlProblem(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	return &ValidationError{Problems: []Problem{{Message: "invalid YAML: " + msg}}}
}

func (b *treeBuilder) fromYAML(n *yaml.Node, path string, depth int) *value {
	if depth > maxDepth {
		b.errf(path, "document nests too deeply")
		return &value{kind: kNull, bad: true}
	}
	switch n.Kind {
	case yaml.MappingNode:
		v := &value{kind: kObject}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			kn, vn := n.Content[i], n.Content[i+1]
			if kn.Kind != yaml.ScalarNode {
				b.errf(path, "line %d: mapping keys must be plain strings", kn.Line)
				continue
			}
			if kn.ShortTag() == "!!merge" {
				b.errf(path, "line %d: merge keys (<<) are not supported", kn.Line)
				continue
			}
			key := kn.Value
			p := joinKey(path, key)
			child := b.fromYAML(vn, p, depth+1)
			if seen[key] {
				b.errf(p, "duplicate key %q", key)
				continue
			}
			seen[key] = true
			v.members = append(v.members, member{key, child})
		}
		return v
	case yaml.SequenceNode:
		v := &value{kind: kArray}
		for i, c := range n.Content {
			v.items = append(v.items, b.fromYAML(c, joinIndex(path, i), depth+1))
		}
		return v
	case yaml.AliasNode:
		// Expanding aliases invites exponential documents; a policy file
		// gains nothing from them.
		b.errf(path, "line %d: YAML aliases are not supported", n.Line)
		return &value{kind: kNull, bad: true}
	case yaml.ScalarNode:
		return b.scalar(n, path)
	}
	b.errf(path, "line %d: unsupported YAML node", n.Line)
	return &value{kind: kNull, bad: true}
}

func (b *treeBuilder) scalar(n *yaml.Node, path string) *value {
	switch tag := n.ShortTag(); tag {
	case "!!str":
		return &value{kind: kString, text: n.Value}
	case "!!bool":
		t, err := strconv.ParseBool(strings.ToLower(n.Value))
		if err != nil {
			b.errf(path, "line %d: %q is not a boolean", n.Line, n.Value)
		}
		return &value{kind: kBool, b: t}
	case "!!null":
		return &value{kind: kNull}
	case "!!int":
		plain := strings.ReplaceAll(n.Value, "_", "")
		i, ok := new(big.Int).SetString(plain, 0)
		if !ok {
			b.errf(path, "line %d: %q is not an integer", n.Line, n.Value)
			return &value{kind: kNull, bad: true}
		}
		return &value{kind: kNumber, text: i.String(), literal: true}
	case "!!float":
		plain := strings.ReplaceAll(n.Value, "_", "")
		if _, ok := parseDecimal(plain, true); !ok {
			// .inf and .nan, or a float past the exact range we keep.
			return &value{kind: kNumber, text: n.Value, literal: true}
		}
		return &value{kind: kNumber, text: plain, literal: true}
	case "!!timestamp":
		return &value{kind: kString, text: n.Value, literal: true}
	default:
		b.errf(path, "line %d: unsupported YAML tag %s", n.Line, tag)
		return &value{kind: kNull, bad: true}
	}
}

// joinKey appends an object key to a JSON path: a.b for plain keys,
// a["odd key"] otherwise, so that paths stay unambiguous.
func joinKey(path, key string) string {
	plain := key != ""
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			plain = false
			break
		}
	}
	if !plain {
		return path + "[" + strconv.Quote(key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func joinIndex(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}
