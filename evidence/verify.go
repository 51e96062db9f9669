package evidence

import (
	"archive/zip"
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"path"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/internal/keys"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
	"github.com/uapk-gateway/uapk-proxy/verifier"
)

// Report is what Verify found. When OK is false, Problem is the first thing
// wrong, in the order the checks run (see Verify).
type Report struct {
	OK         bool     `json:"ok"`
	Problem    *Problem `json:"problem,omitempty"`
	App        string   `json:"app"`
	Framework  string   `json:"framework"`
	FirstSeq   uint64   `json:"first_seq"`
	LastSeq    uint64   `json:"last_seq"`
	Records    uint64   `json:"records"`
	FirstTime  string   `json:"first_time"`
	LastTime   string   `json:"last_time"`
	Files      int      `json:"files"`
	Approvals  int      `json:"approvals"`  // in approvals.json
	Statements int      `json:"statements"` // signed statements verified
	// Released counts records that let an approved request (or an
	// override) through, each checked against its complete approval.
	Released   int        `json:"released"`
	Checkpoint Checkpoint `json:"checkpoint"`
	// Checkpoints counts checkpoint records of the range whose signed note
	// verified and whose head the chain was checked against.
	Checkpoints int      `json:"checkpoints"`
	GatewayKey  string   `json:"gateway_key"` // SHA256: fingerprint of keys/gateway.pub
	Notes       []string `json:"notes,omitempty"`
	// A fleet bundle's: the key that signed SHA256SUMS (keys/exporter.pub,
	// trusted for nothing else), and each instance's own report.
	ExporterKey string           `json:"exporter_key,omitempty"`
	Instances   []InstanceReport `json:"instances,omitempty"`
}

// InstanceReport is what Verify found of one instance of a fleet bundle.
type InstanceReport struct {
	Name         string `json:"name"`
	Complete     bool   `json:"complete"`
	ArchivedSeq  uint64 `json:"archived_seq"`
	ArchivedTime string `json:"archived_time"`
	Report
}

// Limits on what Verify reads into memory from one entry.
const (
	maxSmallFile   = 1 << 20
	maxManifests   = 64 << 20
	maxPrincipals  = 16 << 20
	maxApprovals   = 1 << 30
	maxRecordBytes = 64 << 20
)

// Verify checks an evidence bundle, trusting nothing in it but the gateway
// key it carries (compare Report.GatewayKey with GET /v1/keys/gateway, or
// the key the archive's checkpoints verify with). In order:
//
//  1. the ZIP: readable, safe unique names, every bundle file present;
//  2. SHA256SUMS.sig: Ed25519 by keys/gateway.pub over SHA256SUMS, first,
//     because every other check rests on SHA256SUMS;
//  3. SHA256SUMS: lists every file but itself and its signature, and each
//     file's SHA-256 matches;
//  4. anchor.json, manifest.json (each manifest hashes to its policy),
//     keys/principals.json (one entry a person at any time), approvals.json
//     (each signed statement verifies with the key its approver had when
//     it was signed, or its passkey assertion with the credential it names
//     among theirs then, over the statement's SHA-256, for the relying
//     party it names; bodies hash to their digests);
//  5. records.jsonl: an intact chain from the anchor's prev and first seq
//     (package verifier) ending at the anchor's last record, through every
//     signed checkpoint recorded in it; every record's policy has its
//     manifest; every decision record matches its statement in
//     approvals.json (a passkey's assertion whole, with the relying party
//     the proxy required); every record that lets an approved request or an
//     override through has its approval, complete: every required role
//     filled by a distinct person holding it, none of them the requester;
//     every config record naming principals names what
//     keys/principals.json gives as in force after it;
//  6. the anchor's checkpoint: signed by the gateway and covering the range;
//  7. control-mapping.json, control-mapping.md and report.html are what the
//     records give (rebuilt and compared, when made by this version).
//
// The error is nil when the bundle is intact, else the Problem.
func Verify(r io.ReaderAt, size int64) (Report, error) {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		p := problemf(ProblemNotZip, "", 0, "not a readable ZIP file: %v", err)
		return Report{Problem: p}, p
	}
	if isFleet(zr) {
		return verifyFleet(zr)
	}
	v := &bundleVerifier{required: bundleFiles, sumsKey: FileGatewayPub}
	p := v.run(zr)
	if p != nil {
		v.rep.OK, v.rep.Problem = false, p
		return v.rep, p
	}
	v.rep.OK = true
	return v.rep, nil
}

// principal is one entry of keys/principals.json: a person's roles, key
// and passkeys as in force from config record from (0: the start) until
// config record until (0: the range's end).
type principal struct {
	id          string
	roles       []string
	pub         ed25519.PublicKey
	keyPEM      string
	webauthn    []record.PasskeyCredential // as the file gives them
	passkeys    []passkeyCred
	from, until uint64
}

func (p *principal) has(role string) bool { return slices.Contains(p.roles, role) }

// inForceAfter reports whether p was in force once record seq was written.
func (p *principal) inForceAfter(seq uint64) bool {
	return p.from <= seq && (p.until == 0 || p.until > seq)
}

// signer is the principal whose key a statement signed in record seq is
// checked against: the one in force when it was written.
func (v *bundleVerifier) signer(id string, seq uint64) *principal {
	for _, p := range v.principals[id] { // ids are canonical: compared as bytes
		if p.inForceAfter(max(seq, 1) - 1) {
			return p
		}
	}
	return nil
}

type bundleVerifier struct {
	rep        Report
	files      map[string]*zip.File
	sums       map[string]string
	gw         ed25519.PublicKey
	keys       []ed25519.PublicKey // the gateway key and those config records name
	anchor     Anchor
	manifests  map[string]*rules.Manifest
	principals map[string][]*principal // by id, canonical (rules.CheckID), one per span of config records
	configs    []configClaim
	configsCut bool // more config records than maxRuns: the rest are not held to keys/principals.json
	approvals  map[string]*ApprovalEntry
	seen       map[string]bool // approval id "\x00" record: statements found in the records
	complete   map[string]*Problem
	claims     []cpClaim
	// required are the files the bundle must have (bundleFiles, or a
	// fleet bundle's), signer the one whose key signs SHA256SUMS.
	required []string
	sumsKey  string
	// fleet is set on the verifier of one instance of a fleet bundle
	// (inst): its records are held to the fleet's approvals.json.
	fleet *fleetVerifier
	inst  string
}

// configClaim is a config record of the range that names its principals.
type configClaim struct {
	seq          uint64
	claimed, sum string // its principals_sha256, and the hash of its principals as stored
}

type cpClaim struct {
	seq, size uint64
	hash      string
	note      string
}

func (v *bundleVerifier) run(zr *zip.Reader) *Problem {
	if p := v.index(zr); p != nil {
		return p
	}
	if p := v.checkSumsList(); p != nil {
		return p
	}
	// Every file but records.jsonl is small: hash them first, and read the
	// small files the records are checked against, so that records.jsonl,
	// nearly all of a bundle, is read once, hashed and checked together.
	// The problem reported is still the first in Verify's order: a file
	// whose hash is wrong comes before anything read from the files, and
	// those in sorted order.
	var after *Problem // a wrong hash in a file sorted after records.jsonl
	for _, name := range sortedKeys(v.sums) {
		if name == FileRecords {
			continue
		}
		if p := v.hashFile(name); p != nil {
			if name < FileRecords {
				return p
			}
			if after == nil {
				after = p
			}
		}
	}
	saved := v.rep
	read := func() *Problem {
		for _, step := range []func() *Problem{v.readAnchor, v.readManifests, v.readPrincipals, v.readApprovals} {
			if p := step(); p != nil {
				return p
			}
		}
		return nil
	}
	var pr *Problem
	if after == nil {
		pr = read()
	}
	if after != nil || pr != nil {
		// No pass that checks records: records.jsonl's hash comes first.
		v.rep = saved
		if p := v.hashFile(FileRecords); p != nil {
			return p
		}
		if after != nil {
			return after
		}
		if p := read(); p != nil {
			return p
		}
	}
	b := newBuilder(func(policy string) (*rules.Manifest, error) {
		if m := v.manifests[policy]; m != nil {
			return m, nil
		}
		return nil, problemf(ProblemBadManifest, FileManifest, 0, "records were decided under policy %s, which manifest.json does not have", policy)
	})
	if pr == nil && after == nil {
		if p := v.checkRecordsOnce(b, saved); p != nil {
			return p
		}
	} else if p := v.checkRecords(b); p != nil {
		return p
	}
	return v.afterRecords(b)
}

// sequential is Verify's checks one after another, each file read on its
// own (records.jsonl twice: hashed, then checked).
func (v *bundleVerifier) sequential(zr *zip.Reader) *Problem {
	if p := v.index(zr); p != nil {
		return p
	}
	if p := v.checkSums(); p != nil {
		return p
	}
	if p := v.readAnchor(); p != nil {
		return p
	}
	if p := v.readManifests(); p != nil {
		return p
	}
	if p := v.readPrincipals(); p != nil {
		return p
	}
	if p := v.readApprovals(); p != nil {
		return p
	}
	b := newBuilder(func(policy string) (*rules.Manifest, error) {
		if m := v.manifests[policy]; m != nil {
			return m, nil
		}
		return nil, problemf(ProblemBadManifest, FileManifest, 0, "records were decided under policy %s, which manifest.json does not have", policy)
	})
	if p := v.checkRecords(b); p != nil {
		return p
	}
	return v.afterRecords(b)
}

func (v *bundleVerifier) afterRecords(b *builder) *Problem {
	if p := v.checkConfigPrincipals(); p != nil {
		return p
	}
	if p := v.checkAnchorCheckpoint(); p != nil {
		return p
	}
	return v.checkDerived(b)
}

var safeName = regexp.MustCompile(`^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$`)

func (v *bundleVerifier) index(zr *zip.Reader) *Problem {
	v.files = map[string]*zip.File{}
	for _, f := range zr.File {
		name := f.Name
		if strings.HasSuffix(name, "/") && f.UncompressedSize64 == 0 && safeName.MatchString(strings.TrimSuffix(name, "/")) {
			continue // a directory entry, as zip -r writes them
		}
		if !safeName.MatchString(name) || path.Clean(name) != name || strings.Contains("/"+name+"/", "/../") || strings.Contains("/"+name+"/", "/./") {
			return problemf(ProblemBadEntry, name, 0, "entry %q is not a plain relative path", name)
		}
		if v.files[name] != nil {
			return problemf(ProblemBadEntry, name, 0, "entry %q appears twice", name)
		}
		v.files[name] = f
	}
	for _, name := range v.required {
		if v.files[name] == nil {
			return problemf(ProblemMissingFile, name, 0, "%s is missing from the bundle", name)
		}
	}
	v.rep.Files = len(v.files)
	return nil
}

func (v *bundleVerifier) read(name string, limit int64) ([]byte, *Problem) {
	f := v.files[name]
	if f == nil {
		return nil, problemf(ProblemMissingFile, name, 0, "%s is missing from the bundle", name)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, problemf(ProblemBadEntry, name, 0, "%s cannot be read: %v", name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, problemf(ProblemBadEntry, name, 0, "%s cannot be read: %v", name, err)
	}
	if int64(len(b)) > limit {
		return nil, problemf(ProblemBadEntry, name, 0, "%s is larger than %d bytes", name, limit)
	}
	return b, nil
}

var sumLine = regexp.MustCompile(`^([0-9a-f]{64})  ([^\n]+)$`)

func (v *bundleVerifier) checkSums() *Problem {
	if p := v.checkSumsList(); p != nil {
		return p
	}
	for _, name := range sortedKeys(v.sums) {
		if p := v.hashFile(name); p != nil {
			return p
		}
	}
	return nil
}

// checkSumsList is checkSums up to hashing the files: SHA256SUMS.sig, and
// SHA256SUMS listing exactly the bundle's files.
func (v *bundleVerifier) checkSumsList() *Problem {
	sums, p := v.read(FileSums, maxSmallFile)
	if p != nil {
		return p
	}
	pub, p := v.read(v.sumsKey, maxSmallFile)
	if p != nil {
		return p
	}
	sig, p := v.read(FileSumsSig, maxSmallFile)
	if p != nil {
		return p
	}
	v.gw, _ = keys.ParsePublic(pub)
	if v.gw == nil {
		return problemf(ProblemBadKey, v.sumsKey, 0, "%s is not a PKIX PEM Ed25519 public key", v.sumsKey)
	}
	v.keys = []ed25519.PublicKey{v.gw}
	fp := sha256.Sum256(v.gw)
	v.rep.GatewayKey = "SHA256:" + hex.EncodeToString(fp[:8])
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sig)))
	if err != nil || len(raw) != ed25519.SignatureSize {
		return problemf(ProblemBadSignature, FileSumsSig, 0, "%s is not a base64 Ed25519 signature", FileSumsSig)
	}
	if !ed25519.Verify(v.gw, sums, raw) {
		return problemf(ProblemBadSignature, FileSumsSig, 0, "%s does not verify with %s: SHA256SUMS was changed after it was signed, or another key signed it", FileSumsSig, v.sumsKey)
	}
	v.sums = map[string]string{}
	if len(sums) == 0 || sums[len(sums)-1] != '\n' {
		return problemf(ProblemBadSums, FileSums, 0, "%s must be lines \"<sha256>  <path>\" each ending in a newline", FileSums)
	}
	for i, line := range strings.Split(string(sums[:len(sums)-1]), "\n") {
		m := sumLine.FindStringSubmatch(line)
		if m == nil {
			return problemf(ProblemBadSums, FileSums, 0, "%s line %d is not \"<sha256>  <path>\": %q", FileSums, i+1, line)
		}
		if _, dup := v.sums[m[2]]; dup {
			return problemf(ProblemBadSums, FileSums, 0, "%s lists %s twice", FileSums, m[2])
		}
		v.sums[m[2]] = m[1]
	}
	for _, name := range sortedKeys(v.files) {
		if name == FileSums || name == FileSumsSig {
			continue
		}
		if _, ok := v.sums[name]; !ok {
			return problemf(ProblemUnlistedFile, name, 0, "%s is in the bundle but not in %s", name, FileSums)
		}
	}
	for _, name := range sortedKeys(v.sums) {
		if v.files[name] == nil {
			return problemf(ProblemMissingFile, name, 0, "%s lists %s, which is not in the bundle", FileSums, name)
		}
		if name == FileSums || name == FileSumsSig {
			return problemf(ProblemBadSums, FileSums, 0, "%s lists %s", FileSums, name)
		}
	}
	for _, name := range v.required {
		if _, ok := v.sums[name]; !ok && name != FileSums && name != FileSumsSig {
			return problemf(ProblemMissingFile, name, 0, "%s does not list %s", FileSums, name)
		}
	}
	return nil
}

// hashFile compares one file with SHA256SUMS. For records.jsonl it also
// notes, on the way, the checkpoint and config records: their signed notes
// and gateway keys must be known before the chain is walked.
func (v *bundleVerifier) hashFile(name string) *Problem {
	rc, err := v.files[name].Open()
	if err != nil {
		return problemf(ProblemBadEntry, name, 0, "%s cannot be read: %v", name, err)
	}
	defer rc.Close()
	h := sha256.New()
	pv := v.prescanner(name)
	if pv == nil {
		if _, err := io.Copy(h, rc); err != nil {
			return problemf(ProblemBadEntry, name, 0, "%s cannot be read: %v", name, err)
		}
	} else {
		lr := newLineReader(rc)
		for {
			line, err := lr.next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return problemf(ProblemBadEntry, name, 0, "%s cannot be read: %v", name, err)
			}
			h.Write(line)
			pv.prescan(line)
		}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != v.sums[name] {
		return problemf(ProblemHashMismatch, name, 0, "%s has SHA-256 %s but %s says %s: the file was changed", name, got, FileSums, v.sums[name])
	}
	return nil
}

// prescanner is the verifier whose records file name is: this one's
// records.jsonl, or in a fleet bundle an instance's.
func (v *bundleVerifier) prescanner(name string) *bundleVerifier {
	if v.fleet != nil && v.inst == "" {
		return v.fleet.byFile[name]
	}
	if name == FileRecords {
		return v
	}
	return nil
}

var kindConfig = []byte(`"kind":"` + record.KindConfig + `"`)

// kindC starts both kinds prescan looks for: one search of every line
// instead of two.
var kindC = []byte(`"kind":"c`)

func (v *bundleVerifier) prescan(line []byte) {
	if !bytes.Contains(line, kindC) {
		return
	}
	isCP, isConfig := bytes.Contains(line, kindCheckpoint), bytes.Contains(line, kindConfig)
	if !isCP && !isConfig {
		return
	}
	r, err := parseRecord(bytes.TrimSuffix(line, newline))
	if err != nil {
		return // the chain check reports it
	}
	switch r.Kind {
	case record.KindConfig:
		d := dataOf[record.Config](r)
		if k, err := base64.StdEncoding.DecodeString(d.GatewayKey); err == nil && keys.CheckPublic(k) == nil &&
			!slices.ContainsFunc(v.keys, func(x ed25519.PublicKey) bool { return bytes.Equal(x, k) }) {
			v.keys = append(v.keys, k)
		}
		if sum, claimed, ok := rawPrincipals(r.Data); ok {
			if len(v.configs) == maxRuns {
				v.configsCut = true
				break
			}
			v.configs = append(v.configs, configClaim{seq: r.Seq, claimed: claimed, sum: sum})
		}
	case record.KindCheckpoint:
		if d := dataOf[record.Checkpoint](r); d.Note != "" && len(v.claims) < maxRuns {
			v.claims = append(v.claims, cpClaim{seq: r.Seq, size: d.Size, hash: d.Hash, note: d.Note})
		}
	}
}

// lineReader reads "\n"-terminated lines (the last may lack it) of bounded
// length; the returned slice is valid until the next call.
type lineReader struct {
	br  *bufio.Reader
	buf []byte
}

func newLineReader(r io.Reader) *lineReader { return &lineReader{br: bufio.NewReaderSize(r, 256<<10)} }

func (l *lineReader) next() ([]byte, error) {
	l.buf = l.buf[:0]
	for {
		chunk, err := l.br.ReadSlice('\n')
		l.buf = append(l.buf, chunk...)
		if len(l.buf) > maxRecordBytes {
			return nil, fmt.Errorf("a line is longer than %d bytes", maxRecordBytes)
		}
		switch {
		case err == nil:
			return l.buf, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF && len(l.buf) > 0:
			return l.buf, nil
		default:
			return nil, err
		}
	}
}

func strictJSON(data []byte, into any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the JSON value")
	}
	return nil
}

var hexHash = regexp.MustCompile(`^[0-9a-f]{64}$`)

func (v *bundleVerifier) readAnchor() *Problem {
	data, p := v.read(FileAnchor, maxSmallFile)
	if p != nil {
		return p
	}
	a := &v.anchor
	if err := strictJSON(data, a); err != nil {
		return problemf(ProblemBadAnchor, FileAnchor, 0, "%s is not a valid anchor: %v", FileAnchor, err)
	}
	switch {
	case a.Format != bundleFormat:
		return problemf(ProblemBadAnchor, FileAnchor, 0, "%s format %q, this verifier reads %q", FileAnchor, a.Format, bundleFormat)
	case a.First.Seq == 0 || a.Last.Seq < a.First.Seq || a.Records != a.Last.Seq-a.First.Seq+1:
		return problemf(ProblemBadAnchor, FileAnchor, 0, "%s: range %d-%d with %d records does not add up", FileAnchor, a.First.Seq, a.Last.Seq, a.Records)
	case !hexHash.MatchString(a.First.Prev) || !hexHash.MatchString(a.First.Hash) || !hexHash.MatchString(a.Last.Hash):
		return problemf(ProblemBadAnchor, FileAnchor, 0, "%s: first.prev, first.hash and last.hash must be 64 hex digits", FileAnchor)
	case a.Checkpoint.Source != sourceArchive && a.Checkpoint.Source != sourceLiveHead:
		return problemf(ProblemBadAnchor, FileAnchor, 0, "%s: checkpoint source %q is neither %q nor %q", FileAnchor, a.Checkpoint.Source, sourceArchive, sourceLiveHead)
	}
	if _, err := NormalizeFramework(a.Framework); err != nil {
		return problemf(ProblemBadAnchor, FileAnchor, 0, "%s: %v", FileAnchor, err)
	}
	v.rep.App, v.rep.Framework = a.App, a.Framework
	v.rep.FirstSeq, v.rep.LastSeq, v.rep.FirstTime, v.rep.LastTime = a.First.Seq, a.Last.Seq, a.First.Time, a.Last.Time
	return nil
}

func (v *bundleVerifier) readManifests() *Problem {
	data, p := v.read(FileManifest, maxManifests)
	if p != nil {
		return p
	}
	var ms Manifests
	if err := strictJSON(data, &ms); err != nil {
		return problemf(ProblemBadManifest, FileManifest, 0, "%s is not valid: %v", FileManifest, err)
	}
	v.manifests = map[string]*rules.Manifest{}
	for _, e := range ms.Manifests {
		raw := []byte(e.Raw)
		if e.Encoding == "base64" {
			var err error
			if raw, err = base64.StdEncoding.DecodeString(e.Raw); err != nil {
				return problemf(ProblemBadManifest, FileManifest, 0, "%s: manifest %s is not valid base64", FileManifest, e.Policy)
			}
		} else if e.Encoding != "utf-8" {
			return problemf(ProblemBadManifest, FileManifest, 0, "%s: manifest %s has encoding %q", FileManifest, e.Policy, e.Encoding)
		}
		if got := sha256Hex(raw); got != e.Policy {
			return problemf(ProblemBadManifest, FileManifest, 0, "%s: the manifest given for policy %s hashes to %s: it is not the manifest that was in force", FileManifest, e.Policy, got)
		}
		m, err := rules.ParseManifest(raw)
		if err != nil {
			return problemf(ProblemBadManifest, FileManifest, 0, "%s: manifest %s does not parse: %v", FileManifest, e.Policy, err)
		}
		v.manifests[e.Policy] = m
	}
	return nil
}

func (v *bundleVerifier) readPrincipals() *Problem {
	data, p := v.read(FilePrincipals, maxPrincipals)
	if p != nil {
		return p
	}
	var pf PrincipalsFile
	if err := strictJSON(data, &pf); err != nil {
		return problemf(ProblemBadPrincipals, FilePrincipals, 0, "%s is not valid: %v", FilePrincipals, err)
	}
	v.principals = map[string][]*principal{}
	spans := 0
	for _, e := range pf.Principals {
		// Ids compare as bytes, here as in the proxy: one in another
		// form could be one person's second spelling.
		if err := rules.CheckID(e.ID); err != nil {
			return problemf(ProblemBadPrincipals, FilePrincipals, 0, "%s: %v", FilePrincipals, err)
		}
		k := e.ID
		if e.UntilRecord != 0 && e.UntilRecord <= e.ConfigRecord {
			return problemf(ProblemBadPrincipals, FilePrincipals, 0, "%s: %s's entry is in force from config record %d until %d", FilePrincipals, e.ID, e.ConfigRecord, e.UntilRecord)
		}
		pr := &principal{id: e.ID, roles: e.Roles, keyPEM: e.PublicKey, webauthn: e.WebAuthn, from: e.ConfigRecord, until: e.UntilRecord}
		for _, q := range v.principals[k] {
			// One person, one entry at any time.
			if max(pr.from, q.from) < min(orInf(pr.until), orInf(q.until)) {
				return problemf(ProblemBadPrincipals, FilePrincipals, 0, "%s: id %q appears twice for the same records", FilePrincipals, e.ID)
			}
		}
		if e.PublicKey != "" {
			pub, err := keys.ParsePublic([]byte(e.PublicKey))
			if err != nil {
				return problemf(ProblemBadPrincipals, FilePrincipals, 0, "%s: %s's public_key: %v", FilePrincipals, e.ID, err)
			}
			pr.pub = pub
		}
		creds, err := readPasskeys(e.WebAuthn)
		if err != nil {
			return problemf(ProblemBadPrincipals, FilePrincipals, 0, "%s: %s's %v", FilePrincipals, e.ID, err)
		}
		pr.passkeys = creds
		if len(v.principals[k]) > 0 {
			spans++
		}
		v.principals[k] = append(v.principals[k], pr)
	}
	if spans > 0 {
		what := "an entry"
		if spans > 1 {
			what = fmt.Sprintf("%d entries", spans)
		}
		v.rep.Notes = append(v.rep.Notes, fmt.Sprintf("%s holds %s replaced at a later config record (a new key or roles): each statement is checked against the entry in force when it was signed", FilePrincipals, what))
	}
	return nil
}

func orInf(until uint64) uint64 {
	if until == 0 {
		return math.MaxUint64
	}
	return until
}

// checkConfigPrincipals holds keys/principals.json to the config records
// of the range, once the chain has vouched for them: each names the
// principals it put in force, and the bundle must give exactly those as in
// force after it.
func (v *bundleVerifier) checkConfigPrincipals() *Problem {
	if v.configsCut {
		v.rep.Notes = append(v.rep.Notes, fmt.Sprintf("only the first %d config records' principals were held to %s", len(v.configs), FilePrincipals))
	}
	for _, c := range v.configs {
		if c.sum != c.claimed {
			return problemf(ProblemBadPrincipals, FileRecords, c.seq, "config record %d: its principals do not hash to its principals_sha256 %s", c.seq, c.claimed)
		}
		var list []record.Principal
		for _, k := range sortedKeys(v.principals) {
			for _, p := range v.principals[k] {
				if p.inForceAfter(c.seq) {
					list = append(list, record.Principal{ID: p.id, Roles: p.roles, PublicKey: p.keyPEM, WebAuthn: p.webauthn})
				}
			}
		}
		slices.SortFunc(list, func(a, b record.Principal) int { return strings.Compare(a.ID, b.ID) })
		if sum, err := principalsSHA256(list); err != nil || sum != c.claimed {
			return problemf(ProblemBadPrincipals, FilePrincipals, c.seq, "%s does not give the principals config record %d put in force (principals_sha256 %s)", FilePrincipals, c.seq, c.claimed)
		}
	}
	return nil
}

// approvalsFile is approvals.json as Verify reads it.
type approvalsFile struct {
	ApprovalsHeader
	Approvals []*ApprovalEntry `json:"approvals"`
}

func (v *bundleVerifier) readApprovals() *Problem {
	data, p := v.read(FileApprovals, maxApprovals)
	if p != nil {
		return p
	}
	var af approvalsFile
	if err := strictJSON(data, &af); err != nil {
		return problemf(ProblemBadApprovals, FileApprovals, 0, "%s is not valid: %v", FileApprovals, err)
	}
	if af.IncludeApprovals != v.anchor.IncludeApprovals || af.IncludeRejections != v.anchor.IncludeRejections {
		return problemf(ProblemBadApprovals, FileApprovals, 0, "%s and %s disagree on what was included", FileApprovals, FileAnchor)
	}
	v.approvals = map[string]*ApprovalEntry{}
	v.seen, v.complete = map[string]bool{}, map[string]*Problem{}
	for _, a := range af.Approvals {
		if a == nil || a.ID == "" || v.approvals[a.ID] != nil {
			return problemf(ProblemBadApprovals, FileApprovals, 0, "%s: an approval id is empty or appears twice", FileApprovals)
		}
		v.approvals[a.ID] = a
		if p := v.checkApproval(a); p != nil {
			return p
		}
	}
	v.rep.Approvals = len(af.Approvals)
	return nil
}

// checkApproval checks what an approval says on its own: its request
// hashes to its digest, and each statement is the exact text its approver
// signed with the key keys/principals.json gives them, or whose SHA-256
// one of their passkeys there signed.
func (v *bundleVerifier) checkApproval(a *ApprovalEntry) *Problem {
	switch a.Kind {
	case approvals.KindRequest:
		body := []byte(a.Body)
		if a.BodyBase64 {
			var err error
			if body, err = base64.StdEncoding.DecodeString(a.Body); err != nil {
				return problemf(ProblemApprovalMismatch, FileApprovals, 0, "approval %s: body is not valid base64", a.ID)
			}
		}
		if got := requestDigest(a.Method, a.URL, body); got != a.Digest {
			return problemf(ProblemApprovalMismatch, FileApprovals, 0, "approval %s: its method, URL and body hash to %s, not to the digest %s that was approved", a.ID, got, a.Digest)
		}
	case approvals.KindOverride:
		if got := overrideDigest(a.App, a.Action, a.Duration, a.RequestedBy, a.Justification, a.MaxAmount, a.MaxUses); got != a.Digest {
			return problemf(ProblemApprovalMismatch, FileApprovals, 0, "approval %s: the override's app, action, duration, requester, bounds and justification hash to %s, not to its digest %s", a.ID, got, a.Digest)
		}
	default:
		return problemf(ProblemBadApprovals, FileApprovals, 0, "approval %s has kind %q", a.ID, a.Kind)
	}
	for _, s := range a.Statements {
		if p := v.checkStatement(a.ID, a.Digest, &s); p != nil {
			return p
		}
		v.rep.Statements++
	}
	return nil
}

// checkPasskeyStatement checks a statement made with a passkey: the
// credential it names is one of pr's, and the assertion verifies with its
// key over the statement's SHA-256 for the relying party it names (the
// records say whether that is the one the proxy required).
func (v *bundleVerifier) checkPasskeyStatement(a *ApprovalEntry, s *Statement, pr *principal) *Problem {
	if s.Signature != "" {
		return problemf(ProblemApprovalSignature, FileApprovals, s.Record, "approval %s: %s's %s statement (record %d) carries both an Ed25519 signature and a passkey assertion", a.ID, s.Approver, s.Decision, s.Record)
	}
	if pr == nil || len(pr.passkeys) == 0 {
		return problemf(ProblemApprovalSignature, FileApprovals, s.Record, "approval %s: %s decided with a passkey (record %d) but has no passkey in force then in %s", a.ID, s.Approver, s.Record, FilePrincipals)
	}
	key, err := findPasskey(pr.passkeys, s.WebAuthn.CredentialID)
	if err != nil {
		return problemf(ProblemApprovalSignature, FileApprovals, s.Record, "approval %s: %s's %s statement (record %d) names a passkey not theirs in force then in %s: %v", a.ID, s.Approver, s.Decision, s.Record, FilePrincipals, err)
	}
	if err := checkAssertion(s, key); err != nil {
		return problemf(ProblemApprovalSignature, FileApprovals, s.Record, "approval %s: the passkey assertion on %s's %s statement (record %d) does not verify with %s's passkey in %s: %v", a.ID, s.Approver, s.Decision, s.Record, pr.id, FilePrincipals, err)
	}
	return nil
}

// requestDigest is the request digest of docs/reference.md, computed here
// independently.
func requestDigest(method, url string, body []byte) string {
	bh := sha256.Sum256(body)
	return sha256Hex([]byte(method + "\n" + url + "\n" + hex.EncodeToString(bh[:])))
}

// overrideDigest is the override digest of docs/reference.md, computed
// here independently: the first form for an override without bounds, the
// second, which signs them, for one with a max_amount or a max_uses.
func overrideDigest(app, action, duration, requestedBy, justification, maxAmount string, maxUses int) string {
	jh := sha256.Sum256([]byte(justification))
	if maxAmount == "" && maxUses == 0 {
		return sha256Hex([]byte("uapk-override-v1\n" + app + "\n" + action + "\n" + duration + "\n" + requestedBy + "\n" + hex.EncodeToString(jh[:])))
	}
	uses := ""
	if maxUses != 0 {
		uses = strconv.Itoa(maxUses)
	}
	return sha256Hex([]byte("uapk-override-v2\n" + app + "\n" + action + "\n" + duration + "\n" + requestedBy + "\n" +
		maxAmount + "\n" + uses + "\n" + hex.EncodeToString(jh[:])))
}

func (v *bundleVerifier) checkRecords(b *builder) *Problem {
	anchors, p := v.claimAnchors()
	if p != nil {
		return p
	}
	rc, err := v.files[FileRecords].Open()
	if err != nil {
		return problemf(ProblemBadEntry, FileRecords, 0, "%s cannot be read: %v", FileRecords, err)
	}
	defer rc.Close()
	w := v.newWalk(b, anchors)
	lr := newLineReader(rc)
	for !w.done() {
		line, err := lr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			w.pending = problemf(ProblemBadEntry, FileRecords, w.a.First.Seq+w.n, "%s cannot be read: %v", FileRecords, err)
			break
		}
		w.line(line)
	}
	return w.conclude(w.chain.finish())
}

// checkRecordsOnce is hashFile(records.jsonl) and checkRecords in one
// read of the file, with the same verdict: the file is hashed and
// prescanned to its end, the chain and each record checked until the first
// problem; a wrong hash still comes first, then the checkpoint notes. Only
// the anchors the checkpoint records give are not known until the end:
// the hash of every record checked is kept (in a spool, 32 bytes a record)
// and the anchors are held to them afterwards, with the problem the chain
// check would have named at the first that differs.
//
// A problem with the file itself (unreadable, a wrong hash) is one
// Verify's order finds before reading the small files: the report is then
// put back to before (saved).
func (v *bundleVerifier) checkRecordsOnce(b *builder, saved Report) *Problem {
	rc, err := v.files[FileRecords].Open()
	if err != nil {
		v.rep = saved
		return problemf(ProblemBadEntry, FileRecords, 0, "%s cannot be read: %v", FileRecords, err)
	}
	defer rc.Close()
	h := sha256.New()
	w := v.newWalk(b, nil)
	hashes := &spool{}
	defer hashes.Close()
	var sum [sha256.Size]byte
	w.onRecord = func(r *rec) {
		clear(sum[:])
		if len(r.Hash) == 2*len(sum) {
			hex.Decode(sum[:], []byte(r.Hash)) // a bad one fails the chain at this record
		}
		hashes.Write(sum[:])
	}
	lr := newLineReader(rc)
	w.chain.owned = true // lineParser's batches are never reused
	lines := newLineParser(w)
	for {
		line, err := lr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			lines.finish()
			w.chain.finish()
			v.rep = saved
			return problemf(ProblemBadEntry, FileRecords, 0, "%s cannot be read: %v", FileRecords, err)
		}
		h.Write(line)
		v.prescan(line)
		lines.add(line)
	}
	lines.finish()
	rep := w.chain.finish()
	if got := hex.EncodeToString(h.Sum(nil)); got != v.sums[FileRecords] {
		v.rep = saved
		return problemf(ProblemHashMismatch, FileRecords, 0, "%s has SHA-256 %s but %s says %s: the file was changed", FileRecords, got, FileSums, v.sums[FileRecords])
	}
	if hashes.err != nil {
		return problemf(ProblemBadEntry, FileRecords, 0, "%s: keep the record hashes: %v", FileRecords, hashes.err)
	}
	anchors, p := v.claimAnchors()
	if p != nil {
		return p
	}
	// The anchors, as the chain check would have held the records to
	// them: the last given for a seq counts, and only a record that passed
	// every other check is compared.
	want := map[uint64]string{}
	for _, a := range anchors {
		want[a.Seq] = a.Hash
	}
	checked := hashes.n / sha256.Size // records whose hash was kept, from the first
	limit := w.a.First.Seq + uint64(checked)
	if !rep.OK {
		limit = min(limit, rep.Problem.Seq)
	}
	var bad *verifier.Problem
	for _, seq := range slices.Sorted(maps.Keys(want)) {
		if seq < w.a.First.Seq || seq >= limit {
			continue
		}
		if err := hashes.readAt(sum[:], int64(seq-w.a.First.Seq)*sha256.Size); err != nil {
			return problemf(ProblemBadEntry, FileRecords, seq, "%s: read the record hashes back: %v", FileRecords, err)
		}
		if got := hex.EncodeToString(sum[:]); got != want[seq] {
			bad = verifier.AnchorMismatch(seq, got, want[seq])
			break
		}
	}
	if bad != nil {
		rep = verifier.Report{Problem: bad}
	}
	return w.conclude(rep)
}

// lineParser parses lines of records.jsonl on every core and hands them,
// in order, to a walk (walk.parsed, on a goroutine of its own): the reader
// only reads, hashes and prescans. Lines stop being queued once the walk
// is done; at most 2*GOMAXPROCS+1 batches are in flight.
type lineParser struct {
	w     *walk
	cur   *lineBatch
	work  chan *lineBatch
	order chan *lineBatch
	wg    sync.WaitGroup
	done  chan struct{}
	stop  atomic.Bool
}

type lineBatch struct {
	buf   []byte
	ends  []int
	recs  []*rec
	errs  []error
	ready chan struct{}
}

const lineBatchLines = 256

func newLineParser(w *walk) *lineParser {
	n := runtime.GOMAXPROCS(0)
	p := &lineParser{w: w, work: make(chan *lineBatch, n), order: make(chan *lineBatch, 2*n+1), done: make(chan struct{})}
	for range n {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for b := range p.work {
				start := 0
				for i, end := range b.ends {
					if raw, ok := bytes.CutSuffix(b.buf[start:end], newline); ok && !p.stop.Load() {
						b.recs[i], b.errs[i] = parseRecord(raw)
					}
					start = end
				}
				close(b.ready)
			}
		}()
	}
	go func() {
		defer close(p.done)
		for b := range p.order {
			<-b.ready
			start := 0
			for i, end := range b.ends {
				if w.done() {
					p.stop.Store(true)
					break
				}
				raw, ok := bytes.CutSuffix(b.buf[start:end], newline)
				w.parsed(raw, ok, b.recs[i], b.errs[i])
				start = end
			}
		}
	}()
	return p
}

func (p *lineParser) add(line []byte) {
	if p.stop.Load() {
		return
	}
	b := p.cur
	if b == nil {
		b = &lineBatch{buf: make([]byte, 0, 256<<10), ready: make(chan struct{})}
		p.cur = b
	}
	b.buf = append(b.buf, line...)
	b.ends = append(b.ends, len(b.buf))
	if len(b.ends) == lineBatchLines {
		p.flush()
	}
}

func (p *lineParser) flush() {
	if b := p.cur; b != nil {
		p.cur = nil
		b.recs, b.errs = make([]*rec, len(b.ends)), make([]error, len(b.ends))
		p.order <- b
		p.work <- b
	}
}

// finish waits until the walk has seen every line queued.
func (p *lineParser) finish() {
	p.flush()
	close(p.order)
	close(p.work)
	p.wg.Wait()
	<-p.done
}

// claimAnchors checks the checkpoint records' signed notes (found by the
// prescan, with every gateway key the records name) and returns the heads
// they sign within the range: anchors for the chain check.
func (v *bundleVerifier) claimAnchors() ([]verifier.Head, *Problem) {
	a := v.anchor
	var anchors []verifier.Head
	for _, c := range v.claims {
		h, err := openCheckpoint([]byte(c.note), v.keys...)
		if err != nil {
			v.rep.Notes = append(v.rep.Notes, fmt.Sprintf("checkpoint record %d: its note is not checked (%v)", c.seq, err))
			continue
		}
		if h.Seq != c.size || h.Hash != c.hash {
			return nil, problemf(ProblemBadCheckpoint, FileRecords, c.seq, "checkpoint record %d says record %d has hash %s, but its signed note says record %d has %s", c.seq, c.size, c.hash, h.Seq, h.Hash)
		}
		if h.Seq >= a.First.Seq && h.Seq <= a.Last.Seq {
			anchors = append(anchors, verifier.Head{Seq: h.Seq, Hash: h.Hash})
			v.rep.Checkpoints++
		}
	}
	return anchors, nil
}

// walk is checkRecords' pass over records.jsonl: the chain (on every core)
// and each record against the manifests and approvals.json, in order,
// until the first problem.
type walk struct {
	v           *bundleVerifier
	b           *builder
	a           Anchor
	chain       *chainCheck
	first, last *rec
	pending     *Problem // the first problem found here; a chain problem at or before it wins
	n           uint64
	onRecord    func(r *rec) // sees each record that parsed, in order
}

func (v *bundleVerifier) newWalk(b *builder, anchors []verifier.Head) *walk {
	return &walk{v: v, b: b, a: v.anchor, chain: newChainCheck(v.anchor.First.Seq, v.anchor.First.Prev, anchors)}
}

// done reports that the walk has found a problem: the rest of the records
// need no checking.
func (w *walk) done() bool { return w.pending != nil || w.chain.failed() }

// line checks the next line of records.jsonl, newline included.
func (w *walk) line(line []byte) {
	raw, cut := bytes.CutSuffix(line, newline)
	var r *rec
	var err error
	if cut {
		r, err = parseRecord(raw)
	}
	w.parsed(raw, cut, r, err)
}

// parsed is line for a line already parsed (by parseRecord, when it ends
// in a newline): the part that goes in order.
func (w *walk) parsed(raw []byte, newlined bool, r *rec, err error) {
	v, a := w.v, w.a
	if !newlined {
		w.pending = problemf(ProblemChain, FileRecords, a.First.Seq+w.n, "%s does not end with a newline: its last line may be cut", FileRecords)
		return
	}
	w.chain.add(raw, r)
	w.n++
	if err != nil {
		w.pending = problemf(ProblemChain, FileRecords, a.First.Seq+w.n-1, "%s is not an intact chain from the anchor: record %d: not a ledger record: %v", FileRecords, a.First.Seq+w.n-1, err)
		return
	}
	if w.onRecord != nil {
		w.onRecord(r)
	}
	if w.first == nil {
		w.first = r
	}
	if err := w.b.add(r); err != nil {
		var p *Problem
		if errors.As(err, &p) {
			p.Seq = r.Seq
			p.Message = fmt.Sprintf("record %d: %s", r.Seq, p.Message)
			w.pending = p
		} else {
			w.pending = problemf(ProblemBadManifest, FileRecords, r.Seq, "record %d: %v", r.Seq, err)
		}
		return
	}
	check := v.crossCheck
	if v.fleet != nil {
		check = v.fleetCrossCheck
	}
	if p := check(r); p != nil {
		w.pending = p
		return
	}
	r.Data, r.data = nil, nil
	w.last = r
}

// conclude weighs the chain's report against the walk's own first problem
// and checks the range's ends.
func (w *walk) conclude(rep verifier.Report) *Problem {
	v, a, pending, first, last := w.v, w.a, w.pending, w.first, w.last
	if !rep.OK && (pending == nil || rep.Problem.Seq <= pending.Seq) {
		pr := rep.Problem
		return problemf(ProblemChain, FileRecords, pr.Seq, "%s is not an intact chain from the anchor: record %d: %s: %s", FileRecords, pr.Seq, pr.Reason, pr.Detail)
	}
	if pending != nil {
		return pending
	}
	if first == nil {
		return problemf(ProblemBadAnchor, FileRecords, 0, "%s holds no record", FileRecords)
	}
	if first.Hash != a.First.Hash || first.Time != a.First.Time {
		return problemf(ProblemBadAnchor, FileAnchor, first.Seq, "%s says the range starts with record %d, hash %s, but %s starts with hash %s", FileAnchor, a.First.Seq, a.First.Hash, FileRecords, first.Hash)
	}
	if last.Seq != a.Last.Seq || last.Hash != a.Last.Hash || last.Time != a.Last.Time {
		return problemf(ProblemBadAnchor, FileRecords, last.Seq+1, "%s ends at record %d (hash %s) but %s says the range ends at record %d (hash %s): records are missing", FileRecords, last.Seq, last.Hash, FileAnchor, a.Last.Seq, a.Last.Hash)
	}
	v.rep.Records = rep.Records
	for _, ap := range sortedKeys(v.approvals) {
		for _, s := range v.approvals[ap].Statements {
			if s.Record >= a.First.Seq && s.Record <= a.Last.Seq && !v.seen[ap+"\x00"+u(s.Record)] {
				return problemf(ProblemApprovalMismatch, FileApprovals, s.Record, "approval %s: %s's %s statement names record %d, which is not that decision", ap, s.Approver, s.Decision, s.Record)
			}
		}
	}
	return nil
}

// crossCheck holds each record against approvals.json.
func (v *bundleVerifier) crossCheck(r *rec) *Problem {
	a := v.anchor
	ap := v.approvals[r.ApprovalID]
	if ap == nil && r.ApprovalID != "" && a.IncludeApprovals && a.IncludeRejections {
		return problemf(ProblemMissingApproval, FileApprovals, r.Seq, "record %d (%s/%s/%s) names approval %s, which is not in %s", r.Seq, r.Kind, r.Decision, r.Reason, r.ApprovalID, FileApprovals)
	}
	switch {
	case r.is(record.KindApproval, record.Approve), r.is(record.KindApproval, record.Reject):
		if r.Decision == record.Approve && !a.IncludeApprovals || r.Decision == record.Reject && !a.IncludeRejections {
			return nil
		}
		d := dataOf[record.Signature](r)
		if ap == nil {
			if statusOmitted(r.Decision, a) {
				return nil // its approval as a whole was left out (e.g. approved, with rejections only)
			}
			return problemf(ProblemMissingApproval, FileApprovals, r.Seq, "record %d is %s's signed %s of approval %s, which is not in %s", r.Seq, d.Approver, r.Decision, r.ApprovalID, FileApprovals)
		}
		for _, s := range ap.Statements {
			if s.Record != r.Seq {
				continue
			}
			if s.Approver != d.Approver || s.Decision != string(r.Decision) || s.SignedAt != d.SignedAt || s.Signature != d.Signature || s.Role != d.Role {
				return problemf(ProblemApprovalMismatch, FileApprovals, r.Seq, "approval %s: the statement for record %d differs from the record (approver, role, decision, signed_at or signature)", ap.ID, r.Seq)
			}
			if !sameWebAuthn(s.WebAuthn, d.WebAuthn) {
				return problemf(ProblemApprovalMismatch, FileApprovals, r.Seq, "approval %s: %s's passkey assertion for record %d differs from the one the record keeps (credential, assertion, or the relying party the proxy required: rp_id, origin)", ap.ID, s.Approver, r.Seq)
			}
			if d.StatementSHA256 != "" && d.StatementSHA256 != sha256Hex([]byte(s.Statement)) {
				return problemf(ProblemApprovalMismatch, FileApprovals, r.Seq, "approval %s: record %d's statement_sha256 is not the hash of the statement", ap.ID, r.Seq)
			}
			v.seen[ap.ID+"\x00"+u(r.Seq)] = true
			return nil
		}
		if ap.Status == approvals.StatusApproved && !a.IncludeApprovals || ap.Status == approvals.StatusRejected && !a.IncludeRejections {
			return nil
		}
		return problemf(ProblemMissingApproval, FileApprovals, r.Seq, "approval %s: %s's signed %s (record %d) is missing from its statements", ap.ID, d.Approver, r.Decision, r.Seq)
	case r.is(record.KindRequest, record.Pending) && ap != nil:
		if ap.Digest != r.Digest || ap.Action != r.Action || ap.App != r.App {
			return problemf(ProblemApprovalMismatch, FileApprovals, r.Seq, "approval %s is not the request of record %d (digest, action or app differ)", ap.ID, r.Seq)
		}
		if d, ok := r.typedData().(*record.Request); ok && d.RequiredRoles != nil && !slices.Equal(d.RequiredRoles, ap.RequiredRoles) {
			return problemf(ProblemApprovalMismatch, FileApprovals, r.Seq, "approval %s requires %v but record %d held the request for %v", ap.ID, ap.RequiredRoles, r.Seq, d.RequiredRoles)
		}
	case releases(r):
		v.rep.Released++
		if !a.IncludeApprovals {
			return nil
		}
		if ap == nil {
			return problemf(ProblemMissingApproval, FileApprovals, r.Seq, "record %d (%s/%s/%s) lets %s through under approval %s, which is not in %s", r.Seq, r.Kind, r.Decision, r.Reason, orDash(r.Action), orDash(r.ApprovalID), FileApprovals)
		}
		if ap.Kind == approvals.KindRequest && (r.Kind == record.KindRequest || r.Kind == record.KindCapability) &&
			(ap.Digest != r.Digest || ap.Action != r.Action || ap.App != r.App) {
			return problemf(ProblemApprovalMismatch, FileApprovals, r.Seq, "record %d lets through another request than approval %s approved (digest, action or app differ)", r.Seq, ap.ID)
		}
		if p, done := v.complete[ap.ID]; done {
			return withSeq(p, r.Seq)
		}
		p := v.completeness(ap)
		v.complete[ap.ID] = p
		return withSeq(p, r.Seq)
	}
	return nil
}

func withSeq(p *Problem, seq uint64) *Problem {
	if p == nil {
		return nil
	}
	q := *p
	q.Seq = seq
	q.Message = fmt.Sprintf("record %d: %s", seq, p.Message)
	return &q
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func statusOmitted(decision record.Decision, a Anchor) bool {
	// An approve statement's approval may have ended rejected (left out
	// without rejections), and the other way round.
	return decision == record.Approve && !a.IncludeRejections || decision == record.Reject && !a.IncludeApprovals
}

// releases reports a record that exists only because an approval (or an
// override's approval) was complete: the approved request let through, its
// token issued, an override used or issued.
func releases(r *rec) bool {
	return r.is(record.KindRequest, record.Allow, record.Approved, record.Capability) ||
		r.is(record.KindCapability, record.Issued) ||
		r.is(record.KindOverride, record.Allow) ||
		r.is(record.KindOverride, record.Issued)
}

// completeness checks that an approval was complete: approved, every
// required slot filled by a distinct person who holds one of its roles and
// signed, the requester never among them.
func (v *bundleVerifier) completeness(ap *ApprovalEntry) *Problem {
	if ap.Status != approvals.StatusApproved {
		return problemf(ProblemIncompleteApproval, FileApprovals, 0, "approval %s is %s, not approved", ap.ID, ap.Status)
	}
	if len(ap.Requirement.Slots) == 0 {
		return problemf(ProblemIncompleteApproval, FileApprovals, 0, "approval %s names no role that must approve it", ap.ID)
	}
	// Who asked is compared in ASCII lower case; an asker still not a
	// canonical id equals no approver yet may be any of them, so nothing
	// shows the approval was not their own.
	self := map[string]bool{}
	for _, s := range []string{ap.OnBehalfOf, ap.App, ap.RequestedBy} {
		if s == "" {
			continue
		}
		low := asciiLower(s)
		if rules.CheckID(low) != nil {
			return problemf(ProblemIncompleteApproval, FileApprovals, 0, "approval %s was asked for by %q, which is no principal id even in ASCII lower case: nobody can be shown not to be its requester, so no approval of it counts", ap.ID, s)
		}
		self[low] = true
	}
	var signers []*principal
	seen := map[string]bool{}
	for _, s := range ap.Statements {
		if s.Decision != approvals.Approve {
			continue
		}
		k := s.Approver // canonical: checkApproval made sure
		if self[k] {
			return problemf(ProblemIncompleteApproval, FileApprovals, 0, "approval %s was approved by %s, who requested it: self-approval does not count", ap.ID, s.Approver)
		}
		if seen[k] {
			return problemf(ProblemIncompleteApproval, FileApprovals, 0, "approval %s counts %s twice: one person counts once", ap.ID, s.Approver)
		}
		seen[k] = true
		pr := v.signer(s.Approver, s.Record) // checkApproval made sure it exists
		if !pr.has(s.Role) {
			return problemf(ProblemIncompleteApproval, FileApprovals, 0, "approval %s: %s signed as %s, a role %s does not give them (they hold %v)", ap.ID, s.Approver, s.Role, FilePrincipals, pr.roles)
		}
		signers = append(signers, pr)
	}
	if n := matchRoles(ap.Requirement.Slots, signers); n < len(ap.Requirement.Slots) {
		var who []string
		for _, s := range signers {
			who = append(who, s.id)
		}
		return problemf(ProblemIncompleteApproval, FileApprovals, 0, "approval %s needs %d distinct approvers for %v but its valid signatures (%s) fill only %d",
			ap.ID, len(ap.Requirement.Slots), ap.Requirement.Slots, orNone(who), n)
	}
	return nil
}

// asciiLower maps A-Z to a-z and nothing else (Unicode lower-casing turns
// j\u0130m into jim).
func asciiLower(s string) string {
	return strings.Map(func(r rune) rune {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
}

// matchRoles is the size of a largest assignment of signers to slots, each
// signer to at most one slot whose roles they hold (augmenting paths).
func matchRoles(slots [][]string, signers []*principal) int {
	owner := make([]int, len(slots))
	for i := range owner {
		owner[i] = -1
	}
	var try func(s int, seen []bool) bool
	try = func(s int, seen []bool) bool {
		for j, slot := range slots {
			if seen[j] || !slices.ContainsFunc(slot, signers[s].has) {
				continue
			}
			seen[j] = true
			if owner[j] < 0 || try(owner[j], seen) {
				owner[j] = s
				return true
			}
		}
		return false
	}
	n := 0
	for s := range signers {
		if try(s, make([]bool, len(slots))) {
			n++
		}
	}
	return n
}

func (v *bundleVerifier) checkAnchorCheckpoint() *Problem {
	a := v.anchor
	c := a.Checkpoint
	// The head signed at export is signed by the key that signs the
	// bundle; an archived checkpoint may be older than a key change, so a
	// gateway key a config record of the range names will do too.
	signers := v.keys
	if c.Source == sourceLiveHead {
		signers = v.keys[:1]
	}
	h, err := openCheckpoint([]byte(c.Note), signers...)
	if err != nil {
		return problemf(ProblemBadCheckpoint, FileAnchor, c.Seq, "the anchor's %s checkpoint note: %v (%s)", c.Source, err, FileGatewayPub)
	}
	if h.Origin != c.Origin || h.Seq != c.Seq || h.Hash != c.Hash {
		return problemf(ProblemBadCheckpoint, FileAnchor, c.Seq, "%s says the checkpoint is %s record %d hash %s, but its signed note says %s record %d hash %s",
			FileAnchor, c.Origin, c.Seq, c.Hash, h.Origin, h.Seq, h.Hash)
	}
	switch {
	case h.Seq < a.Last.Seq:
		return problemf(ProblemBadCheckpoint, FileAnchor, h.Seq, "the checkpoint (record %d) does not cover the range, which ends at record %d", h.Seq, a.Last.Seq)
	case h.Seq == a.Last.Seq && (h.Hash != a.Last.Hash || c.Covers != coversLastRecord):
		return problemf(ProblemBadCheckpoint, FileAnchor, h.Seq, "the checkpoint says record %d has hash %s, but the range's last record has %s", h.Seq, h.Hash, a.Last.Hash)
	case h.Seq > a.Last.Seq && c.Covers != coversBeyondRange:
		return problemf(ProblemBadCheckpoint, FileAnchor, h.Seq, "the checkpoint is record %d, after the range, but says it covers %q", h.Seq, c.Covers)
	}
	v.rep.Checkpoint = c
	if h.Seq > a.Last.Seq {
		v.rep.Notes = append(v.rep.Notes, fmt.Sprintf("the %s checkpoint signs record %d, %d records after the range: the archive's segments link the two (uapk-proxy verify --data-dir checks the whole chain)", c.Source, h.Seq, h.Seq-a.Last.Seq))
	}
	if c.Source == sourceLiveHead {
		v.rep.Notes = append(v.rep.Notes, "no archived checkpoint covered the range when it was exported: the head was signed by the gateway at export")
	}
	if !a.IncludeApprovals {
		v.rep.Notes = append(v.rep.Notes, "approvals were left out at export (include_approvals=false): that approved requests had complete approvals is not checked")
	}
	return nil
}

// checkDerived rebuilds the derived files and compares them byte for byte.
func (v *bundleVerifier) checkDerived(b *builder) *Problem {
	if v.anchor.Generator != generatorVersion {
		v.rep.Notes = append(v.rep.Notes, fmt.Sprintf("report and control mapping made by %q, not rebuilt by this verifier (%q)", v.anchor.Generator, generatorVersion))
		return nil
	}
	want, err := derived(b, &v.anchor, v.rep.Approvals)
	if err != nil {
		return problemf(ProblemDerived, "", 0, "rebuild the report: %v", err)
	}
	for _, name := range []string{FileMappingJSON, FileMappingMD, FileReport} {
		got, p := v.read(name, int64(len(want[name]))+maxSmallFile)
		if p != nil {
			return p
		}
		if !bytes.Equal(got, want[name]) {
			i := 0
			for i < len(got) && i < len(want[name]) && got[i] == want[name][i] {
				i++
			}
			line := bytes.Count(want[name][:i], newline) + 1
			return problemf(ProblemDerived, name, 0, "%s does not say what the records say: rebuilt from %s, %s and %s it differs at line %d", name, FileRecords, FileManifest, FileAnchor, line)
		}
	}
	return nil
}

// chainCheck runs the chain verifier (package verifier) over records.jsonl in chunks on every
// core: the verifier re-derives each record's canonical form and hash,
// which costs far more than reading it. Chunk i starts at its expected seq
// with the hash record i-1's last record claims as prev; chunk i-1's own
// verifier re-computes that hash, so the chunks together check exactly what
// one verifier over the whole file would. Memory stays bounded: at most
// two chunks per worker are in flight.
type chainCheck struct {
	next    uint64
	prev    string
	anchors []verifier.Head
	cur     *chainChunk
	jobs    chan *chainChunk
	wg      sync.WaitGroup
	mu      sync.Mutex
	problem *verifier.Problem
	records atomic.Uint64
	bad     atomic.Bool
	owned   bool // the lines added are the chain check's to keep (not reused)
}

type chainChunk struct {
	start uint64
	prev  string
	raws  [][]byte
}

const chainChunkRecords = 2048

func newChainCheck(start uint64, prev string, anchors []verifier.Head) *chainCheck {
	workers := runtime.GOMAXPROCS(0)
	c := &chainCheck{next: start, prev: prev, anchors: anchors, jobs: make(chan *chainChunk, workers)}
	for range workers {
		c.wg.Add(1)
		go c.work()
	}
	return c
}

func (c *chainCheck) work() {
	defer c.wg.Done()
	for ch := range c.jobs {
		if c.bad.Load() {
			// Chunks leave the queue in order, so this one starts after
			// the chunk that failed: it cannot hold an earlier problem.
			continue
		}
		end := ch.start + uint64(len(ch.raws)) - 1
		var anchors []verifier.Head
		for _, a := range c.anchors {
			if a.Seq >= ch.start && a.Seq <= end {
				anchors = append(anchors, a)
			}
		}
		v := verifier.New(ch.start, ch.prev, anchors...)
		for _, raw := range ch.raws {
			if !v.Add(raw) {
				break
			}
		}
		rep := v.Finish()
		c.records.Add(rep.Records)
		if !rep.OK {
			c.mu.Lock()
			if c.problem == nil || rep.Problem.Seq < c.problem.Seq {
				c.problem = rep.Problem
			}
			c.mu.Unlock()
			c.bad.Store(true)
		}
	}
}

// add queues the next line; r is its parse (nil if it did not parse).
func (c *chainCheck) add(raw []byte, r *rec) {
	if c.cur == nil {
		c.cur = &chainChunk{start: c.next, prev: c.prev, raws: make([][]byte, 0, chainChunkRecords)}
	}
	if !c.owned {
		raw = bytes.Clone(raw)
	}
	c.cur.raws = append(c.cur.raws, raw)
	c.next++
	if r != nil {
		c.prev = r.Hash
	}
	if len(c.cur.raws) == chainChunkRecords || r == nil {
		c.flush()
	}
}

func (c *chainCheck) flush() {
	if c.cur != nil {
		c.jobs <- c.cur
		c.cur = nil
	}
}

func (c *chainCheck) failed() bool { return c.bad.Load() }

// finish waits for every chunk and returns what one verifier would: the
// first problem by seq, or the count.
func (c *chainCheck) finish() verifier.Report {
	c.flush()
	close(c.jobs)
	c.wg.Wait()
	if c.problem != nil {
		return verifier.Report{Problem: c.problem}
	}
	return verifier.Report{OK: true, Records: c.records.Load()}
}
