package evidence

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/internal/keys"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// Options says what to export.
type Options struct {
	Range Range
	// Framework is SOX (default), ISO27001 or ALL (see NormalizeFramework).
	Framework string
	// OmitApprovals leaves approved approvals and "approve" statements out
	// of approvals.json; OmitRejections the rejected ones and "reject"
	// statements: the seed's include_approvals / include_rejections, both
	// true by default. Records are never left out: the range is whole.
	OmitApprovals, OmitRejections bool
	// Manifests are manifest files the caller has (the CLI's --manifest);
	// each must be one a record of the range was decided under. They are
	// tried before the Source and before the files config records name.
	Manifests []ManifestFile
	// Principals is a principals file given (the CLI's --principals). The
	// chain's config records say who was in force when, and are what the
	// bundle carries; Principals stands in only where they name no one (a
	// chain from before they did), and is refused (ErrPrincipalsDisagree)
	// if it is not what the chain says was in force for the range. nil:
	// the Source's principals stand in instead. Every signed statement
	// exported must verify with the key in force when it was signed.
	Principals *rules.Principals
	// PrincipalsName names their origin in keys/principals.json.
	PrincipalsName string
}

// ManifestFile is a manifest's exact bytes and where they came from.
type ManifestFile struct {
	Name string
	Data []byte
}

// Summary describes a prepared bundle.
type Summary struct {
	App        string
	Framework  string
	FromSeq    uint64
	ToSeq      uint64
	Records    uint64
	FromTime   string
	ToTime     string
	Approvals  int
	Policies   []string
	Checkpoint Checkpoint
	// Sums is the SHA256SUMS file; its SHA-256 identifies the bundle.
	Sums []byte
}

// Bundle is an export whose every small file is built and whose records
// have been read and checked once; Write streams the ZIP.
type Bundle struct {
	src      Source
	from, to uint64
	sum      Summary
	files    map[string][]byte
	approval *spool
	records  *deflated // records.jsonl, compressed while Prepare read it
	hashes   map[string]string
	recSum   string
	mod      time.Time
}

// Export writes the evidence bundle (docs/reference.md#evidence-bundle) of
// opts.Range to w.
func Export(w io.Writer, src Source, opts Options) error {
	b, err := Prepare(context.Background(), src, opts)
	if err != nil {
		return err
	}
	defer b.Close()
	return b.Write(context.Background(), w)
}

var newline = []byte{'\n'}

// Prepare reads the range once, in bounded transactions (Source.Range),
// checking it as a chain and keeping only bounded state: counts, seq runs,
// detail rows up to their limits, the ids of the approvals it references.
// records.jsonl is hashed on the way and not kept; approvals.json goes to a
// spool (memory, then a temporary file). Nothing is written until Write,
// so an HTTP handler can still answer an error with a status.
func Prepare(ctx context.Context, src Source, opts Options) (*Bundle, error) {
	fw, err := NormalizeFramework(opts.Framework)
	if err != nil {
		return nil, err
	}
	if err := opts.Range.check(); err != nil {
		return nil, err
	}
	key := src.GatewayKey()
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("evidence: no gateway key to sign the bundle with")
	}
	head := src.Head()
	from, to, ok, err := opts.Range.resolve(src, head.Seq)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w (%s; the chain has %d records)", ErrEmptyRange, describeRange(opts.Range), head.Seq)
	}
	first, err := src.Get(from)
	if err != nil {
		return nil, fmt.Errorf("read record %d: %w", from, err)
	}
	fr, err := parseRecord(first)
	if err != nil {
		return nil, fmt.Errorf("%w: record %d: %v", ErrChainBroken, from, err)
	}

	res := newResolver(src, opts, to)
	hist := newPrincipalHistory()
	// Who was in force before the range: every config record from the
	// start, so that a statement signed under a key replaced since still
	// has its key. Only config records are parsed.
	if from > 1 {
		err = src.Range(1, from-1, func(_ uint64, raw []byte) error {
			if !bytes.Contains(raw, kindConfig) {
				return nil
			}
			r, err := parseRecord(raw)
			if err != nil || r.Kind != record.KindConfig {
				return nil // the range's own check is the one that reports
			}
			res.noteConfig(r)
			return hist.addConfig(r)
		})
		if err != nil {
			return nil, err
		}
	}
	b := newBuilder(res.manifest)
	v := &linkCheck{next: from, prev: fr.Prev}
	recHash := sha256.New()
	rz := newDeflated()
	defer func() {
		if rz != nil {
			rz.Close() // not handed to a Bundle: an error
		}
	}()
	ids := map[string]uint64{} // approval id -> first seq naming it
	var last *rec
	err = readParsed(ctx, src, from, to, func(p *parsedRecord) error {
		seq, raw, r := p.seq, p.raw, p.r
		if p.err != nil {
			return fmt.Errorf("%w: record %d: %v", ErrChainBroken, seq, p.err)
		}
		err := v.inOrder(r)
		if err == nil {
			err = p.own
		}
		if err != nil {
			return fmt.Errorf("%w: %v (run uapk-proxy verify --data-dir for the whole chain)", ErrChainBroken, err)
		}
		v.advance(r)
		recHash.Write(raw)
		recHash.Write(newline)
		rz.Write(raw)
		rz.Write(newline)
		if r.Kind == record.KindConfig {
			res.noteConfig(r)
			if err := hist.addConfig(r); err != nil {
				return err
			}
		}
		if err := b.add(r); err != nil {
			return fmt.Errorf("record %d: %w", seq, err)
		}
		if r.ApprovalID != "" {
			if _, ok := ids[r.ApprovalID]; !ok {
				ids[r.ApprovalID] = seq
			}
		}
		r.Data, r.data = nil, nil
		last = r
		return nil
	})
	if err != nil {
		return nil, err
	}
	records := to - from + 1
	if last == nil || last.Seq != to {
		got := uint64(0)
		if last != nil {
			got = last.Seq
		}
		return nil, fmt.Errorf("%w: the range should end at record %d but the records stop at %d", ErrChainBroken, to, got)
	}
	if err := res.checkGiven(); err != nil {
		return nil, err
	}
	if err := rz.end(); err != nil {
		return nil, fmt.Errorf("compress %s: %w", FileRecords, err)
	}

	bd := &Bundle{src: src, from: from, to: to, files: map[string][]byte{}, recSum: hex.EncodeToString(recHash.Sum(nil)),
		mod: zipTime(last.Time), approval: &spool{}, records: rz}
	rz = nil
	ok = false
	defer func() {
		if !ok {
			bd.Close()
		}
	}()
	pname := opts.PrincipalsName
	if pname == "" {
		pname = "the principals file given"
	}
	if err := hist.resolve(opts.Principals, pname, src.Principals(), from, to); err != nil {
		return nil, err
	}
	anchor := &Anchor{
		Format: bundleFormat, Generator: generatorVersion, App: b.app, Framework: fw,
		IncludeApprovals: !opts.OmitApprovals, IncludeRejections: !opts.OmitRejections,
		Period:  periodOf(opts.Range),
		Records: records,
		First:   Link{Seq: from, Time: fr.Time, Prev: fr.Prev, Hash: fr.Hash},
		Last:    Link{Seq: last.Seq, Time: last.Time, Hash: last.Hash},
	}
	nApprovals, err := writeApprovals(ctx, bd.approval, src, ids, anchor, hist)
	if err != nil {
		return nil, err
	}
	if anchor.Checkpoint, err = coveringCheckpoint(src, anchor, key); err != nil {
		return nil, err
	}

	if bd.files[FileAnchor], err = marshal(anchor); err != nil {
		return nil, err
	}
	if bd.files[FileManifest], err = manifestsJSON(b.policies, res); err != nil {
		return nil, err
	}
	if bd.files[FilePrincipals], err = principalsJSON(hist); err != nil {
		return nil, err
	}
	if bd.files[FileGatewayPub], err = keys.PublicPEM(key.Public().(ed25519.PublicKey)); err != nil {
		return nil, err
	}
	if err := bd.derive(b, anchor, nApprovals); err != nil {
		return nil, err
	}
	bd.hashes = map[string]string{FileRecords: bd.recSum}
	for name, data := range bd.files {
		s := sha256.Sum256(data)
		bd.hashes[name] = hex.EncodeToString(s[:])
	}
	ah := sha256.New()
	if _, err := io.Copy(ah, bd.approval.reader()); err != nil {
		return nil, err
	}
	bd.hashes[FileApprovals] = hex.EncodeToString(ah.Sum(nil))
	sums := sumsFile(bd.hashes)
	bd.files[FileSums] = sums
	bd.files[FileSumsSig] = []byte(base64.StdEncoding.EncodeToString(ed25519.Sign(key, sums)) + "\n")

	var pols []string
	for _, pu := range b.policies {
		pols = append(pols, pu.hash)
	}
	bd.sum = Summary{App: b.app, Framework: fw, FromSeq: from, ToSeq: to, Records: records, FromTime: fr.Time, ToTime: last.Time,
		Approvals: nApprovals, Policies: pols, Checkpoint: anchor.Checkpoint, Sums: sums}
	ok = true
	return bd, nil
}

// derive builds the files that are a function of the records, the
// manifests and the anchor: Verify rebuilds them the same way.
func (bd *Bundle) derive(b *builder, a *Anchor, nApprovals int) error {
	files, err := derived(b, a, nApprovals)
	if err != nil {
		return err
	}
	for k, v := range files {
		bd.files[k] = v
	}
	return nil
}

func derived(b *builder, a *Anchor, nApprovals int) (map[string][]byte, error) {
	m := b.mapping(a)
	mj, err := m.json()
	if err != nil {
		return nil, err
	}
	html, err := b.report(a, m, nApprovals)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{FileMappingJSON: mj, FileMappingMD: m.markdown(a), FileReport: html}, nil
}

// sumsFile is sha256sum's format, sorted by path: sha256sum -c checks it.
func sumsFile(hashes map[string]string) []byte {
	var w bytes.Buffer
	for _, name := range sortedKeys(hashes) {
		fmt.Fprintf(&w, "%s  %s\n", hashes[name], name)
	}
	return w.Bytes()
}

// Summary describes the bundle.
func (bd *Bundle) Summary() Summary { return bd.sum }

// Close releases the spooled approvals.json and records.jsonl.
func (bd *Bundle) Close() error {
	err := bd.approval.Close()
	if bd.records != nil {
		err = errors.Join(err, bd.records.Close())
	}
	return err
}

// recompressRecords makes Write take the path of entries too big to copy
// in precompressed (for the test that holds both to the same bytes).
var recompressRecords = false

// Write streams the ZIP to w: entries in sorted order, records.jsonl as
// Prepare compressed it from the very bytes it hashed, so the bundle can
// never hold other bytes than the ones SHA256SUMS signs. An entry too big
// to copy in precompressed (see deflated.fits) is instead read from the
// Source again (bounded transactions) and checked against that hash.
func (bd *Bundle) Write(ctx context.Context, w io.Writer) error {
	z := newZipWriter(w, bd.mod)
	names := slices.Clone(bundleFiles)
	sort.Strings(names)
	for _, name := range names {
		if name == FileRecords && bd.records != nil && bd.records.fits() && !recompressRecords {
			if err := z.raw(name, bd.records); err != nil {
				return fmt.Errorf("write %s: %w", name, err)
			}
			continue
		}
		fw, err := z.create(name)
		if err != nil {
			return err
		}
		switch name {
		case FileRecords:
			err = bd.writeRecords(ctx, fw)
		case FileApprovals:
			_, err = io.Copy(fw, bd.approval.reader())
		default:
			_, err = fw.Write(bd.files[name])
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return z.close()
}

func (bd *Bundle) writeRecords(ctx context.Context, w io.Writer) error {
	h := sha256.New()
	next, n := bd.from, 0
	err := bd.src.Range(bd.from, bd.to, func(seq uint64, raw []byte) error {
		if n++; n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if seq != next {
			return fmt.Errorf("%w: record %d came where %d was expected", ErrChanged, seq, next)
		}
		next++
		h.Write(raw)
		h.Write(newline)
		if _, err := w.Write(raw); err != nil {
			return err
		}
		_, err := w.Write(newline)
		return err
	})
	if err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != bd.recSum || next != bd.to+1 {
		return fmt.Errorf("%w: records %d-%d read again hash to %s, not %s", ErrChanged, bd.from, bd.to, got, bd.recSum)
	}
	return nil
}

func marshal(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func periodOf(r Range) Period {
	p := Period{FromSeq: r.FromSeq, ToSeq: r.ToSeq}
	if !r.From.IsZero() {
		p.From = r.From.UTC().Format(time.RFC3339Nano)
	}
	if !r.To.IsZero() {
		p.To = r.To.UTC().Format(time.RFC3339Nano)
	}
	return p
}

func describeRange(r Range) string {
	p := periodOf(r)
	var parts []string
	if p.From != "" || p.To != "" {
		parts = append(parts, fmt.Sprintf("time in [%s, %s)", orOpen(p.From), orOpen(p.To)))
	}
	if p.FromSeq != 0 || p.ToSeq != 0 {
		parts = append(parts, fmt.Sprintf("seq %d to %d", p.FromSeq, p.ToSeq))
	}
	if len(parts) == 0 {
		return "the whole chain"
	}
	return strings.Join(parts, ", ")
}

func orOpen(s string) string {
	if s == "" {
		return "…"
	}
	return s
}

// coveringCheckpoint finds the signed head that covers the range: the
// archive's latest checkpoint if it reaches the range's last record, else
// the head signed now.
func coveringCheckpoint(src Source, a *Anchor, key ed25519.PrivateKey) (Checkpoint, error) {
	pub := key.Public().(ed25519.PublicKey)
	if cps := src.Checkpoints(); cps != nil {
		note, ok, err := cps.Latest(a.Last.Seq)
		if err != nil {
			return Checkpoint{}, fmt.Errorf("archive checkpoints: %w", err)
		}
		if ok {
			h, err := openCheckpoint(note, pub)
			if err != nil {
				return Checkpoint{}, fmt.Errorf("%w: the archive's latest checkpoint: %v", ErrCheckpoint, err)
			}
			if err := checkHead(src, h); err != nil {
				return Checkpoint{}, err
			}
			if h.Seq >= a.Last.Seq {
				return Checkpoint{Source: sourceArchive, Origin: h.Origin, Seq: h.Seq, Hash: h.Hash, Covers: covers(h.Seq, a), Note: string(note)}, nil
			}
		}
	}
	head := src.Head()
	if head.Seq < a.Last.Seq {
		return Checkpoint{}, fmt.Errorf("%w: head %d is before the range's last record %d", ErrChanged, head.Seq, a.Last.Seq)
	}
	note, origin, err := signHead(a.App, head, key)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("sign the head: %w", err)
	}
	return Checkpoint{Source: sourceLiveHead, Origin: origin, Seq: head.Seq, Hash: head.Hash, Covers: covers(head.Seq, a), Note: string(note)}, nil
}

func covers(seq uint64, a *Anchor) string {
	if seq == a.Last.Seq {
		return coversLastRecord
	}
	return coversBeyondRange
}

// checkHead refuses a checkpoint that contradicts the chain the export
// reads: that is an alarm, not evidence.
func checkHead(src Source, h signedHead) error {
	raw, err := src.Get(h.Seq)
	if err != nil {
		return fmt.Errorf("%w: checkpoint names record %d: %v", ErrCheckpoint, h.Seq, err)
	}
	r, err := parseRecord(raw)
	if err != nil || r.Hash != h.Hash {
		return fmt.Errorf("%w: the checkpoint says record %d has hash %s, the ledger says otherwise", ErrCheckpoint, h.Seq, h.Hash)
	}
	return nil
}

// resolver finds the manifest of each policy hash met in the range.
type resolver struct {
	src      Source
	given    []ManifestFile
	used     map[int]bool
	to       uint64
	files    map[string]string // policy -> manifest_file named by a config record
	scanned  bool
	names    map[string]string // policy -> where its bytes came from
	raw      map[string][]byte
	parsed   map[string]*rules.Manifest
	givenSum []string
}

func newResolver(src Source, opts Options, to uint64) *resolver {
	r := &resolver{src: src, given: opts.Manifests, used: map[int]bool{}, to: to, names: map[string]string{},
		raw: map[string][]byte{}, parsed: map[string]*rules.Manifest{}, files: map[string]string{}}
	for _, m := range opts.Manifests {
		s := sha256.Sum256(m.Data)
		r.givenSum = append(r.givenSum, hex.EncodeToString(s[:]))
	}
	return r
}

func (r *resolver) manifest(policy string) (*rules.Manifest, error) {
	if m := r.parsed[policy]; m != nil {
		return m, nil
	}
	data, name, err := r.bytes(policy)
	if err != nil {
		return nil, err
	}
	m, err := rules.ParseManifest(data)
	if err != nil {
		return nil, fmt.Errorf("%w: manifest %s (policy %s) does not parse: %v", ErrNoManifest, name, policy, err)
	}
	r.raw[policy], r.names[policy], r.parsed[policy] = data, name, m
	return m, nil
}

func (r *resolver) bytes(policy string) ([]byte, string, error) {
	for i, s := range r.givenSum {
		if s == policy {
			r.used[i] = true
			return r.given[i].Data, r.given[i].Name, nil
		}
	}
	if data, ok := r.src.Manifest(policy); ok && sha256Hex(data) == policy {
		return data, "the running proxy's manifest", nil
	}
	// The config records read so far usually name it (one comes before
	// the records decided under its policy); else read them all up to
	// the range's end.
	if data, ok := readManifest(r.files[policy], policy); ok {
		return data, r.files[policy], nil
	}
	if !r.scanned {
		if err := r.scanConfig(); err != nil {
			return nil, "", err
		}
	}
	file := r.files[policy]
	if file != "" {
		if data, ok := readManifest(file, policy); ok {
			return data, file, nil
		}
		return nil, "", fmt.Errorf("%w: records were decided under policy %s, the manifest %s named by its config record, which is gone or has changed since; give the manifest that was in force with --manifest", ErrNoManifest, policy, file)
	}
	return nil, "", fmt.Errorf("%w: records were decided under policy %s and no config record up to record %d names its file; give it with --manifest", ErrNoManifest, policy, r.to)
}

func readManifest(file, policy string) ([]byte, bool) {
	if file == "" {
		return nil, false
	}
	data, err := os.ReadFile(file)
	return data, err == nil && sha256Hex(data) == policy
}

// noteConfig takes a config record met on the way: the manifest file it
// names for its policy.
func (r *resolver) noteConfig(rec *rec) {
	if f := dataOf[record.Config](rec).ManifestFile; f != "" && rec.Policy != "" {
		r.files[rec.Policy] = f
	}
}

// scanConfig finds the manifest files config records name; it reads the
// chain up to the range's end once, matching config records by their bytes
// before parsing any.
func (r *resolver) scanConfig() error {
	r.scanned, r.files = true, map[string]string{}
	return r.src.Range(1, r.to, func(_ uint64, raw []byte) error {
		if !bytes.Contains(raw, kindConfig) {
			return nil
		}
		if rec, err := parseRecord(raw); err == nil && rec.Kind == record.KindConfig {
			r.noteConfig(rec)
		}
		return nil
	})
}

// checkGiven refuses a --manifest that no record of the range names: the
// bundle must show the policies that were in force, not others.
func (r *resolver) checkGiven() error {
	for i, m := range r.given {
		if !r.used[i] {
			var in []string
			for p := range r.parsed {
				in = append(in, p)
			}
			sort.Strings(in)
			return fmt.Errorf("%w: %s has SHA-256 %s, but the records of the range were decided under %s", ErrManifestMismatch,
				m.Name, r.givenSum[i], orNone(in))
		}
	}
	return nil
}

func orNone(ss []string) string {
	if len(ss) == 0 {
		return "no manifest at all"
	}
	return strings.Join(ss, ", ")
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// ManifestEntry is one manifest of manifest.json.
type ManifestEntry struct {
	Policy   string `json:"policy"` // SHA-256 of the raw bytes, as records name it
	Source   string `json:"source"`
	AppID    string `json:"app_id"`
	Version  string `json:"version"`
	FirstSeq uint64 `json:"first_seq"` // first and last record of the range under it
	LastSeq  uint64 `json:"last_seq"`
	Records  uint64 `json:"records"`
	Encoding string `json:"encoding"` // "utf-8" or "base64"
	Raw      string `json:"raw"`      // the manifest's exact bytes
}

// Manifests is manifest.json.
type Manifests struct {
	Format    string          `json:"format"`
	Manifests []ManifestEntry `json:"manifests"`
}

func manifestsJSON(pols []*policyUse, res *resolver) ([]byte, error) {
	out := Manifests{Format: "uapk-manifests/1", Manifests: []ManifestEntry{}}
	for _, pu := range pols {
		raw := res.raw[pu.hash]
		e := ManifestEntry{Policy: pu.hash, Source: res.names[pu.hash], AppID: pu.m.AppID, Version: pu.m.Version,
			FirstSeq: pu.first, LastSeq: pu.last, Records: pu.count, Encoding: "utf-8", Raw: string(raw)}
		if !utf8.Valid(raw) {
			e.Encoding, e.Raw = "base64", base64.StdEncoding.EncodeToString(raw)
		}
		out.Manifests = append(out.Manifests, e)
	}
	return marshal(out)
}

// PrincipalEntry is one principal of keys/principals.json. One person
// whose key or roles changed within the chain has one entry for each,
// each with the config records between which it was in force.
type PrincipalEntry struct {
	ID        string   `json:"id"`
	Roles     []string `json:"roles"`
	PublicKey string   `json:"public_key"` // PKIX PEM; "" for one who never signs
	// WebAuthn are the principal's passkeys (credential id, PKIX PEM key);
	// absent when none.
	WebAuthn []record.PasskeyCredential `json:"webauthn,omitempty"`
	// ConfigRecord is the config record that put this entry in force (0:
	// from the chain's start); UntilRecord the config record that replaced
	// it (0: still in force at the range's end). A statement signed in
	// record S is checked against the entry with ConfigRecord < S and
	// UntilRecord 0 or above S. When one set of principals was in force
	// throughout, both are left out and each person has one entry.
	ConfigRecord uint64 `json:"config_record,omitempty"`
	UntilRecord  uint64 `json:"until_record,omitempty"`
}

// PrincipalsFile is keys/principals.json.
type PrincipalsFile struct {
	Format     string           `json:"format"`
	Source     string           `json:"source"`
	Principals []PrincipalEntry `json:"principals"`
}

func principalsJSON(h *principalHistory) ([]byte, error) {
	return marshal(PrincipalsFile{Format: "uapk-principals/1", Source: h.source(), Principals: h.entries()})
}

// Statement is one signed decision in approvals.json, with the exact text
// its signature covers.
type Statement struct {
	Approver  string `json:"approver"`
	Role      string `json:"role"`
	Decision  string `json:"decision"`
	Reason    string `json:"reason"`
	SignedAt  string `json:"signed_at"`
	Signature string `json:"signature"` // base64 Ed25519 over Statement; "" for a passkey's
	// WebAuthn is a passkey's assertion over the SHA-256 of Statement, as
	// the signature record keeps it: with the relying party the proxy
	// required, so that it is checked offline as the proxy checked it.
	WebAuthn  *record.WebAuthn `json:"webauthn,omitempty"`
	Record    uint64           `json:"record"`    // the ledger record of this decision
	Statement string           `json:"statement"` // uapk-approval-v1 text (docs/reference.md)
}

// ApprovalEntry is one approval of approvals.json: what was asked, who had
// to approve, every signed statement. The capability token itself, a bearer
// secret, is left out; its id is kept.
type ApprovalEntry struct {
	ID             string            `json:"id"`
	Kind           string            `json:"kind"`
	Status         string            `json:"status"`
	Action         string            `json:"action"`
	App            string            `json:"app"`
	Method         string            `json:"method,omitempty"`
	URL            string            `json:"url,omitempty"`
	Headers        map[string]string `json:"headers,omitempty"`
	Body           string            `json:"body"`
	BodyBase64     bool              `json:"body_base64,omitempty"`
	Justification  string            `json:"justification"`
	OnBehalfOf     string            `json:"on_behalf_of"`
	RequestedBy    string            `json:"requested_by,omitempty"`
	Duration       string            `json:"duration,omitempty"`
	MaxAmount      string            `json:"max_amount,omitempty"`
	MaxUses        int               `json:"max_uses,omitempty"`
	Uses           int               `json:"uses,omitempty"`
	Digest         string            `json:"digest"`
	Amount         string            `json:"amount,omitempty"`
	Reason         string            `json:"reason"`
	Requirement    rules.Requirement `json:"requirement"`
	RequiredRoles  []string          `json:"required_roles"`
	CreatedAt      string            `json:"created_at"`
	ExpiresAt      string            `json:"expires_at"`
	RequestRecord  uint64            `json:"request_record"`
	CompletedAt    string            `json:"completed_at,omitempty"`
	TokenID        string            `json:"token_id,omitempty"`
	TokenExpiresAt string            `json:"token_expires_at,omitempty"`
	ConsumedRecord uint64            `json:"consumed_record,omitempty"`
	Statements     []Statement       `json:"statements"`
	Omitted        string            `json:"omitted,omitempty"` // statements left out by the export options
}

// ApprovalsHeader is the top of approvals.json; Approvals follow it.
type ApprovalsHeader struct {
	Format            string `json:"format"`
	IncludeApprovals  bool   `json:"include_approvals"`
	IncludeRejections bool   `json:"include_rejections"`
	StatementFormat   string `json:"statement_format"`
}

const statementFormat = "uapk-approval-v1\\n<approval id>\\n<request digest>\\n<approve|reject>\\n<approver id>\\n<signed_at> (UTF-8, no trailing newline; Ed25519 by the approver's key in keys/principals.json, or a WebAuthn assertion (webauthn) by one of their passkeys there over its SHA-256)"

// writeApprovals streams approvals.json: each approval the range names, in
// the order the chain first names them, fetched one at a time (a short read
// transaction each). Every statement written must verify with the
// principals' keys: a bundle whose signatures cannot be checked is refused
// here rather than failing its verification later.
func writeApprovals(ctx context.Context, w io.Writer, src Source, ids map[string]uint64, a *Anchor, principals *principalHistory) (int, error) {
	order := make([]string, 0, len(ids))
	for id := range ids {
		order = append(order, id)
	}
	sort.Slice(order, func(i, j int) bool {
		if ids[order[i]] != ids[order[j]] {
			return ids[order[i]] < ids[order[j]]
		}
		return order[i] < order[j]
	})
	head, err := json.MarshalIndent(ApprovalsHeader{Format: "uapk-approvals/1", IncludeApprovals: a.IncludeApprovals,
		IncludeRejections: a.IncludeRejections, StatementFormat: statementFormat}, "", "  ")
	if err != nil {
		return 0, err
	}
	var buf bytes.Buffer
	buf.Write(head[:len(head)-2]) // drop "\n}"
	buf.WriteString(",\n  \"approvals\": [")
	n := 0
	for i, id := range order {
		if i%256 == 0 {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
		}
		ap, err := src.Approval(id)
		if errors.Is(err, approvals.ErrNotFound) {
			return 0, fmt.Errorf("%w: record %d names approval %s", ErrMissingApproval, ids[id], id)
		}
		if err != nil {
			return 0, fmt.Errorf("approval %s: %w", id, err)
		}
		e, keep := approvalEntry(ap, a)
		if !keep {
			continue
		}
		if err := passkeyStatements(src, &e, ap); err != nil {
			return 0, err
		}
		if err := checkStatements(e, principals); err != nil {
			return 0, err
		}
		js, err := marshalBody(e, "    ")
		if err != nil {
			return 0, err
		}
		if n > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString("\n    ")
		buf.Write(js)
		n++
		if buf.Len() > 64<<10 {
			if _, err := w.Write(buf.Bytes()); err != nil {
				return 0, err
			}
			buf.Reset()
		}
	}
	if n > 0 {
		buf.WriteString("\n  ")
	}
	buf.WriteString("]\n}\n")
	_, err = w.Write(buf.Bytes())
	return n, err
}

func approvalEntry(ap *approvals.Approval, a *Anchor) (ApprovalEntry, bool) {
	if ap.Status == approvals.StatusApproved && !a.IncludeApprovals || ap.Status == approvals.StatusRejected && !a.IncludeRejections {
		return ApprovalEntry{}, false
	}
	e := ApprovalEntry{
		ID: ap.ID, Kind: ap.Kind, Status: ap.Status, Action: ap.Action, App: ap.App, Method: ap.Method, URL: ap.URL,
		Headers: ap.Headers, Body: ap.Body, BodyBase64: ap.BodyBase64, Justification: ap.Justification, OnBehalfOf: ap.OnBehalfOf,
		RequestedBy: ap.RequestedBy, Duration: ap.Duration, MaxAmount: ap.MaxAmount, MaxUses: ap.MaxUses, Uses: ap.Uses, Digest: ap.Digest, Amount: ap.Amount, Reason: string(ap.Reason),
		Requirement: ap.Requirement, RequiredRoles: ap.RequiredRoles, CreatedAt: rfc(ap.CreatedAt), ExpiresAt: rfc(ap.ExpiresAt),
		RequestRecord: ap.RequestRecord, CompletedAt: rfc(ap.Completed), TokenID: ap.TokenID, TokenExpiresAt: rfc(ap.TokenExp),
		ConsumedRecord: ap.Consumed, Statements: []Statement{},
	}
	if e.RequiredRoles == nil {
		e.RequiredRoles = []string{}
	}
	omitted := map[string]int{}
	for _, d := range ap.Decisions {
		if d.Decision == approvals.Approve && !a.IncludeApprovals || d.Decision == approvals.Reject && !a.IncludeRejections {
			omitted[d.Decision]++
			continue
		}
		e.Statements = append(e.Statements, Statement{Approver: d.Approver, Role: d.Role, Decision: d.Decision, Reason: d.Reason,
			SignedAt: d.SignedAt, Signature: d.Signature, Record: d.Record,
			Statement: string(approvals.Statement(ap.ID, ap.Digest, d.Decision, d.Approver, d.SignedAt))})
	}
	if len(omitted) > 0 {
		e.Omitted = fmt.Sprintf("%d approve and %d reject statements left out at export", omitted[approvals.Approve], omitted[approvals.Reject])
	}
	return e, true
}

func rfc(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// passkeyStatements gives each statement made with a passkey its assertion
// as its signature record keeps it, with the relying party the proxy
// required: the approvals store keeps the assertion but not that.
func passkeyStatements(src Source, e *ApprovalEntry, ap *approvals.Approval) error {
	byRecord := map[uint64]*approvals.Decision{}
	for i := range ap.Decisions {
		byRecord[ap.Decisions[i].Record] = &ap.Decisions[i]
	}
	for i := range e.Statements {
		s := &e.Statements[i]
		d := byRecord[s.Record]
		if d == nil || d.WebAuthn == nil {
			continue
		}
		raw, err := src.Get(s.Record)
		if err != nil {
			return fmt.Errorf("approval %s: read %s's passkey decision, record %d: %w", e.ID, s.Approver, s.Record, err)
		}
		r, err := parseRecord(raw)
		if err != nil {
			return fmt.Errorf("%w: record %d: %v", ErrChainBroken, s.Record, err)
		}
		sig, ok := r.typedData().(*record.Signature)
		if !ok || r.Kind != record.KindApproval || r.ApprovalID != e.ID || sig.WebAuthn == nil {
			return fmt.Errorf("%w: approval %s: %s's passkey decision names record %d, which is not its signature record with the assertion", ErrApprovalMismatch, e.ID, s.Approver, s.Record)
		}
		w := *sig.WebAuthn
		if w.CredentialID != d.WebAuthn.CredentialID || w.AuthenticatorData != d.WebAuthn.AuthenticatorData ||
			w.ClientDataJSON != d.WebAuthn.ClientDataJSON || w.Signature != d.WebAuthn.Signature {
			return fmt.Errorf("%w: approval %s: %s's passkey assertion in the approvals store is not the one record %d keeps", ErrApprovalMismatch, e.ID, s.Approver, s.Record)
		}
		s.WebAuthn = &w
	}
	return nil
}

// checkStatements holds each statement to the key its approver had when it
// was signed: the principals the last config record before it put in force.
func checkStatements(e ApprovalEntry, h *principalHistory) error {
	for _, s := range e.Statements {
		era := h.at(s.Record)
		if !era.signers() {
			why := fmt.Sprintf("config record %d names no principals", era.config)
			if era.config == 0 {
				why = "no config record before it names the principals"
			}
			return fmt.Errorf("%w: approval %s has signed statements (%s, record %d) and %s; give the principals file in force with --principals",
				ErrNoPrincipals, e.ID, s.Approver, s.Record, why)
		}
		where := fmt.Sprintf("the chain's config record %d", era.config)
		if era.given {
			where = h.givenName
		}
		p, ok := era.get(s.Approver)
		if s.WebAuthn != nil {
			if !ok {
				return fmt.Errorf("%w: %s decided approval %s with a passkey (record %d) but is not among the principals in force then (%s)", ErrPrincipalsMismatch, s.Approver, e.ID, s.Record, where)
			}
			if err := verifyPasskey(s, p.WebAuthn); err != nil {
				return fmt.Errorf("%w: %s's passkey decision on approval %s (record %d) does not verify with their passkeys in %s: %v; give the principals that were in force",
					ErrPrincipalsMismatch, s.Approver, e.ID, s.Record, where, err)
			}
			continue
		}
		if !ok || p.PublicKey == "" {
			return fmt.Errorf("%w: %s signed approval %s (record %d) but has no key among the principals in force then (%s)", ErrPrincipalsMismatch, s.Approver, e.ID, s.Record, where)
		}
		pub, err := keys.ParsePublic([]byte(p.PublicKey))
		sig, serr := base64.StdEncoding.DecodeString(s.Signature)
		if err != nil || serr != nil || !ed25519.Verify(pub, []byte(s.Statement), sig) {
			return fmt.Errorf("%w: %s's signature on approval %s (record %d) does not verify with their key in %s; give the one that was in force",
				ErrPrincipalsMismatch, s.Approver, e.ID, s.Record, where)
		}
	}
	return nil
}

// marshalBody is json.MarshalIndent without HTML escaping: an approval's
// body is kept at its size ("<" is one byte, not the six of \u003c), so a
// held body an agent filled with markup costs the bundle no more than it
// cost the proxy.
func marshalBody(v any, prefix string) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent(prefix, "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// parsedRecord is a record of the range as readParsed's workers leave it:
// parsed (err is parseRecord's) and its own hash checked (own is
// ownHash's).
type parsedRecord struct {
	seq      uint64
	raw      []byte
	r        *rec
	err, own error
}

type parsedBatch struct {
	recs  []parsedRecord
	size  int
	ready chan struct{}
}

// readParsed reads [from, to] through src.Range and hands fn each record
// in order, parsed and its own hash checked on every core beforehand; fn's
// first error ends the read and is returned, as it would be if fn ran in
// Range's callback. At most 2*GOMAXPROCS+1 batches are in flight.
func readParsed(ctx context.Context, src Source, from, to uint64, fn func(*parsedRecord) error) error {
	workers := runtime.GOMAXPROCS(0)
	work, order := make(chan *parsedBatch, workers), make(chan *parsedBatch, 2*workers+1)
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range work {
				for i := range b.recs {
					if stop.Load() {
						break
					}
					p := &b.recs[i]
					if p.r, p.err = parseRecord(p.raw); p.err == nil {
						p.own = ownHash(p.raw, p.r)
					}
				}
				close(b.ready)
			}
		}()
	}
	var fnErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		for b := range order {
			<-b.ready
			for i := range b.recs {
				if fnErr != nil {
					break
				}
				if fnErr = fn(&b.recs[i]); fnErr != nil {
					stop.Store(true)
				}
			}
		}
	}()
	var cur *parsedBatch
	flush := func() {
		if cur != nil {
			order <- cur
			work <- cur
			cur = nil
		}
	}
	errStopped := errors.New("stopped")
	n := 0
	err := src.Range(from, to, func(seq uint64, raw []byte) error {
		if stop.Load() {
			return errStopped
		}
		if n++; n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if cur == nil {
			cur = &parsedBatch{recs: make([]parsedRecord, 0, 256), ready: make(chan struct{})}
		}
		cur.recs = append(cur.recs, parsedRecord{seq: seq, raw: raw}) // raw is ours to keep
		if cur.size += len(raw); len(cur.recs) == cap(cur.recs) || cur.size >= 256<<10 {
			flush()
		}
		return nil
	})
	flush()
	close(order)
	close(work)
	wg.Wait()
	<-done
	if fnErr != nil {
		return fnErr // the first record that fails comes before a read error after it
	}
	if errors.Is(err, errStopped) {
		return nil
	}
	return err
}
