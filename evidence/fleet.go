package evidence

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/archive"
	"github.com/uapk-gateway/uapk-proxy/internal/keys"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// Fleet bundle file names (docs/reference.md#fleet-evidence). Each
// instance's files are under instances/NAME/, with the names of a
// single proxy's bundle (records.jsonl, anchor.json, keys/gateway.pub,
// keys/principals.json, manifest.json, control-mapping.*, report.html).
const (
	FileFleet        = "fleet.json"
	FileExporterPub  = "keys/exporter.pub"
	fleetDir         = "instances/"
	fleetFormat      = "uapk-fleet-bundle/1"
	fleetApprovalsFm = "uapk-fleet-approvals/1"
)

// fleetFiles are the files every fleet bundle has at its top.
var fleetFiles = []string{FileSums, FileSumsSig, FileApprovals, FileFleet, FileExporterPub}

// instanceFiles are the files of each instance with records in the range.
var instanceFiles = []string{FileAnchor, FileMappingJSON, FileMappingMD, FileGatewayPub, FilePrincipals, FileManifest, FileRecords, FileReport}

// Errors of ExportFleet.
var (
	// ErrArchive means an instance's archive does not check out on its
	// own: the export refuses to certify it (the error names the instance,
	// the object and the record).
	ErrArchive = errors.New("archive broken")
	// ErrUnknownInstance is an instance asked for that the archive lacks.
	ErrUnknownInstance = errors.New("no such instance in the archive")
	// ErrNoArchive means the archive holds no instance at all.
	ErrNoArchive = errors.New("no instance in the archive")
	// ErrLeftOut means an instance left out of the export (Instances)
	// holds a record of an approval the range names: a statement, the
	// held request or its expiry. approvals.json would cite, or miss, a
	// record the bundle cannot prove; the error names the instances to add.
	ErrLeftOut = errors.New("a deciding instance is left out")
)

// FleetArchive is what a fleet export reads: every instance's archived
// chain (archive.Fleet).
type FleetArchive interface {
	Store() string
	Instances(ctx context.Context) ([]string, error)
	ReadInstance(ctx context.Context, name string, fn func(seq uint64, raw []byte) error) (archive.Instance, error)
}

// FleetOptions says what to export of a fleet.
type FleetOptions struct {
	// Range selects by time only (From, To): seqs are per instance and
	// mean nothing across a fleet.
	Range     Range
	Framework string
	// Instances to export; nil: every instance in the archive.
	Instances []string
	// Manifests are the manifest files given (--manifest): each must be
	// one some exported instance's records of the range were decided
	// under, or the export is refused (ErrManifestMismatch), as a single
	// proxy's is.
	Manifests []ManifestFile
	// Offered are manifest files tried but not demanded (the config's
	// manifest); the files config records name are tried after.
	Offered []ManifestFile
	// Key is the exporter's Ed25519 key: it signs SHA256SUMS and says who
	// made the bundle. It vouches for nothing the records say: each
	// instance's part rests on that instance's own signed checkpoint.
	Key ed25519.PrivateKey
}

// FleetFile is fleet.json: what the bundle holds of which instance.
type FleetFile struct {
	Format    string          `json:"format"`
	Generator string          `json:"generator"`
	App       string          `json:"app"`
	Framework string          `json:"framework"`
	Store     string          `json:"store"`
	Period    Period          `json:"period"`
	Instances []FleetInstance `json:"instances"`
}

// FleetInstance is one instance of fleet.json.
type FleetInstance struct {
	Name       string `json:"name"`
	Records    uint64 `json:"records"` // 0: none in the range, and no folder
	FirstSeq   uint64 `json:"first_seq,omitempty"`
	LastSeq    uint64 `json:"last_seq,omitempty"`
	GatewayKey string `json:"gateway_key"` // SHA256: fingerprint of the key its checkpoint verifies with
	// ArchivedSeq and ArchivedTime are the instance's last archived record.
	ArchivedSeq  uint64 `json:"archived_seq"`
	ArchivedTime string `json:"archived_time"`
	// Complete is false when the range ends after ArchivedTime: what the
	// instance wrote since is not archived yet (or it stopped), and the
	// bundle stops at its archive's end.
	Complete bool `json:"complete"`
	// Cited are the seqs of the instance's records that approvals.json
	// cites (a statement's decision record, a held request) and
	// records.jsonl does not hold: they are in cited.jsonl, each with the
	// records after it up to a signed checkpoint (cited.json). An
	// instance with Records 0 and Cited has a folder with those and its
	// keys only.
	Cited []uint64 `json:"cited,omitempty"`
}

// FleetApprovals is a fleet bundle's approvals.json. It is rebuilt from
// the records, not from the shared approval queue: one approval's records
// are spread over the instances (held at one, decided at others, released
// at another), and every signed statement is in the decision record that
// the deciding instance wrote.
type FleetApprovals struct {
	Format          string          `json:"format"`
	StatementFormat string          `json:"statement_format"`
	Approvals       []FleetApproval `json:"approvals"`
}

// FleetApproval is one approval a record of the range names.
type FleetApproval struct {
	ID            string   `json:"id"`
	Kind          string   `json:"kind"` // request | override
	Action        string   `json:"action"`
	App           string   `json:"app"`
	Digest        string   `json:"digest"`
	RequiredRoles []string `json:"required_roles"`
	OnBehalfOf    string   `json:"on_behalf_of,omitempty"`
	RequestedBy   string   `json:"requested_by,omitempty"`
	// Held is the record that held the request (or asked for the
	// override), when an exported instance archived it.
	Held *RecordRef `json:"held,omitempty"`
	// Status is what the last decision record says the approval became
	// ("pending" when none decided it).
	Status     string           `json:"status"`
	Statements []FleetStatement `json:"statements"`
}

// RecordRef is one record of one instance.
type RecordRef struct {
	Instance string `json:"instance"`
	Seq      uint64 `json:"seq"`
}

// FleetStatement is a signed statement and the instance whose record
// (Record) keeps it.
type FleetStatement struct {
	Instance string `json:"instance"`
	Statement
}

// FleetSummary describes a fleet bundle.
type FleetSummary struct {
	App       string
	Framework string
	Instances []FleetInstance
	Records   uint64
	Approvals int
	Sums      []byte
	// Notes are what the export could not check, for the user.
	Notes []string
}

// fleetPart is one instance's part, prepared.
type fleetPart struct {
	name    string
	files   map[string][]byte
	records *spool
	recSum  string
	lastAt  string
}

// ExportFleet writes the fleet bundle (docs/reference.md#fleet-evidence)
// of opts.Range over every instance of fa to w. It reads each instance's
// whole archive once, checking it on its own (archive.Fleet.ReadInstance),
// and refuses (ErrArchive) the first that does not check out.
func ExportFleet(ctx context.Context, w io.Writer, fa FleetArchive, opts FleetOptions) (FleetSummary, error) {
	fw, err := NormalizeFramework(opts.Framework)
	if err != nil {
		return FleetSummary{}, err
	}
	if err := checkFleetOptions(opts); err != nil {
		return FleetSummary{}, err
	}
	names, have, err := fleetInstances(ctx, fa, opts.Instances)
	if err != nil {
		return FleetSummary{}, err
	}
	ff := FleetFile{Format: fleetFormat, Generator: generatorVersion, Framework: fw, Store: fa.Store(), Period: periodOf(opts.Range)}
	ap := newApprovalIndex()
	var parts []*fleetPart
	defer func() {
		for _, p := range parts {
			if p.records != nil {
				p.records.Close()
			}
		}
	}()
	counts := map[string]*instanceRead{}
	var total uint64
	for _, name := range names {
		ir, err := readInstance(ctx, fa, name, opts, fw, ap)
		if ir != nil && ir.part != nil {
			parts = append(parts, ir.part)
		}
		if err != nil {
			return FleetSummary{}, err
		}
		counts[name] = ir
		total += ir.entry.Records
		if ff.App == "" {
			ff.App = ir.app
		}
	}
	if total == 0 {
		return FleetSummary{}, fmt.Errorf("%w (%s, over instances %s of %s)", ErrEmptyRange, describeRange(opts.Range), strings.Join(names, ", "), fa.Store())
	}
	if err := checkManifestsUsed(opts.Manifests, names, counts); err != nil {
		return FleetSummary{}, err
	}
	list, err := ap.build(counts)
	if err != nil {
		return FleetSummary{}, err
	}
	var notes []string
	if others := slices.DeleteFunc(slices.Clone(have), func(n string) bool { return counts[n] != nil }); len(list) > 0 && len(others) > 0 {
		if notes, err = checkLeftOut(ctx, fa, others, list); err != nil {
			return FleetSummary{}, err
		}
	}
	// Every record approvals.json cites must be provable in its chain:
	// those the instance's records.jsonl does not hold go, with the
	// records after them up to a signed checkpoint, in cited.jsonl.
	cite(list, counts)
	for _, name := range names {
		ir := counts[name]
		if len(ir.entry.Cited) == 0 {
			continue
		}
		if err := ir.readCited(ctx, fa); err != nil {
			return FleetSummary{}, err
		}
		if ir.part.records == nil {
			parts = append(parts, ir.part)
		}
	}
	for _, name := range names {
		ir := counts[name]
		ff.Instances = append(ff.Instances, ir.entry)
		if ir.part == nil {
			continue
		}
		if err := ir.finish(list); err != nil {
			return FleetSummary{}, err
		}
	}
	top := map[string][]byte{}
	if top[FileFleet], err = marshal(ff); err != nil {
		return FleetSummary{}, err
	}
	if top[FileApprovals], err = marshalBody(FleetApprovals{Format: fleetApprovalsFm, StatementFormat: statementFormat, Approvals: list}, ""); err != nil {
		return FleetSummary{}, err
	}
	top[FileApprovals] = append(top[FileApprovals], '\n')
	if top[FileExporterPub], err = keys.PublicPEM(opts.Key.Public().(ed25519.PublicKey)); err != nil {
		return FleetSummary{}, err
	}
	hashes := map[string]string{}
	mod := ""
	for name, data := range top {
		hashes[name] = sha256Hex(data)
	}
	for _, p := range parts {
		for name, data := range p.files {
			hashes[fleetDir+p.name+"/"+name] = sha256Hex(data)
		}
		if p.records != nil {
			hashes[fleetDir+p.name+"/"+FileRecords] = p.recSum
		}
		mod = max(mod, p.lastAt)
	}
	sums := sumsFile(hashes)
	top[FileSums] = sums
	top[FileSumsSig] = []byte(base64.StdEncoding.EncodeToString(ed25519.Sign(opts.Key, sums)) + "\n")
	if err := writeFleetZip(ctx, w, zipTime(mod), top, parts); err != nil {
		return FleetSummary{}, err
	}
	return FleetSummary{App: ff.App, Framework: fw, Instances: ff.Instances, Records: total, Approvals: len(list), Sums: sums, Notes: notes}, nil
}

func checkFleetOptions(opts FleetOptions) error {
	if len(opts.Key) != ed25519.PrivateKeySize {
		return errors.New("evidence: a fleet export needs the exporter's key to sign SHA256SUMS")
	}
	if opts.Range.FromSeq != 0 || opts.Range.ToSeq != 0 {
		return fmt.Errorf("%w: a fleet's range is by time: each instance numbers its own records", ErrBadRange)
	}
	return opts.Range.check()
}

// fleetInstances is the instances to export: those asked for, each of
// which must be in the archive, or all of them; and all the archive has.
func fleetInstances(ctx context.Context, fa FleetArchive, want []string) (names, have []string, err error) {
	have, err = fa.Instances(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("list the instances of %s: %w", fa.Store(), err)
	}
	if len(have) == 0 {
		return nil, nil, fmt.Errorf("%w: %s has no INSTANCE/segments/ (is archive.instance set on the proxies, and is this their app and prefix?)", ErrNoArchive, fa.Store())
	}
	if len(want) == 0 {
		return have, have, nil
	}
	var out []string
	for _, w := range want {
		if !slices.Contains(have, w) {
			return nil, nil, fmt.Errorf("%w: %q is not in %s, which has %s", ErrUnknownInstance, w, fa.Store(), strings.Join(have, ", "))
		}
		if !slices.Contains(out, w) {
			out = append(out, w)
		}
	}
	slices.Sort(out)
	return out, have, nil
}

// instanceRead is one instance's pass over its archive.
type instanceRead struct {
	name    string
	app     string
	entry   FleetInstance
	part    *fleetPart
	b       *builder
	res     *resolver
	hist    *principalHistory
	anchor  *Anchor
	ids     map[string]bool // approvals the range's records name
	from    uint64
	gateway ed25519.PublicKey
	// The archive's checkpoints and gateway keys, for cited records.
	heads []archive.SignedHead
	keys  []ed25519.PublicKey
	// later are the config records after the range: those before a cited
	// record put the principals in force for it.
	later []*rec
}

// readInstance reads one instance's archive: records before the range for
// their config records, the range itself into records.jsonl (hashed on the
// way) and the builder, and every decision record, wherever it is, for
// approvals.json.
func readInstance(ctx context.Context, fa FleetArchive, name string, opts FleetOptions, fw string, ap *approvalIndex) (*instanceRead, error) {
	ir := &instanceRead{name: name, hist: newPrincipalHistory(), ids: map[string]bool{}}
	ir.res = newResolver(manifestSource{}, Options{Manifests: append(slices.Clone(opts.Manifests), opts.Offered...)}, 0)
	ir.res.scanned = true // config records come before the records they govern, and are noted as read
	ir.b = newBuilder(ir.res.manifest)
	part := &fleetPart{name: name, files: map[string][]byte{}, records: &spool{}}
	h := sha256.New()
	var first, last *rec
	var n uint64
	in, err := fa.ReadInstance(ctx, name, func(seq uint64, raw []byte) error {
		if n++; n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		r, err := parseRecord(raw)
		if err != nil {
			return fmt.Errorf("%w: instance %s record %d: %v", ErrChainBroken, name, seq, err)
		}
		if ir.app == "" {
			ir.app = r.App
		}
		if r.Kind == record.KindApproval || r.ApprovalID != "" {
			ap.note(name, r)
		}
		where, err := rangeSide(r.Time, opts.Range)
		if err != nil {
			return fmt.Errorf("%w: instance %s record %d: %v", ErrChainBroken, name, seq, err)
		}
		if where > 0 {
			if r.Kind == record.KindConfig {
				ir.later = append(ir.later, r)
			}
			return nil
		}
		if r.Kind == record.KindConfig {
			ir.res.noteConfig(r)
			if err := ir.hist.addConfig(r); err != nil {
				return fmt.Errorf("instance %s: %w", name, err)
			}
		}
		if where < 0 {
			return nil
		}
		if first == nil {
			first = r
		}
		return ir.inRange(part, h, raw, r, &last)
	})
	if err != nil {
		return ir, fmt.Errorf("instance %s: %w", name, err)
	}
	if p := in.Report.Problem; p != nil {
		return ir, fmt.Errorf("%w: instance %s: %s at record %d: %s: %s (run uapk-proxy verify --data-dir on that proxy with --archive)", ErrArchive, name, p.Key, p.Seq, p.Reason, p.Detail)
	}
	ir.entry = FleetInstance{Name: name, ArchivedSeq: in.Last.Seq, ArchivedTime: in.Last.Time,
		Complete: !opts.Range.To.IsZero() && !archivedBefore(in.Last.Time, opts.Range.To)}
	ir.heads, ir.keys = in.Heads, in.Keys
	if first == nil {
		return ir, nil
	}
	ir.part = part
	part.recSum, part.lastAt = hex.EncodeToString(h.Sum(nil)), last.Time
	if err := ir.anchorOn(in, first, last, fw); err != nil {
		return ir, err
	}
	return ir, nil
}

// inRange takes one record of the range.
func (ir *instanceRead) inRange(part *fleetPart, h hash.Hash, raw []byte, r *rec, last **rec) error {
	h.Write(raw)
	h.Write(newline)
	if _, err := part.records.Write(raw); err != nil {
		return err
	}
	if _, err := part.records.Write(newline); err != nil {
		return err
	}
	if err := ir.b.add(r); err != nil {
		return fmt.Errorf("record %d: %w", r.Seq, err)
	}
	if r.ApprovalID != "" {
		ir.ids[r.ApprovalID] = true
	}
	r.Data, r.data = nil, nil
	*last = r
	return nil
}

// rangeSide is -1 for a record time before the range, 0 in it, 1 after.
func rangeSide(t string, rg Range) (int, error) {
	rt, err := time.Parse(time.RFC3339Nano, t)
	if err != nil {
		return 0, fmt.Errorf("time %q: %v", t, err)
	}
	switch {
	case !rg.From.IsZero() && rt.Before(rg.From):
		return -1, nil
	case !rg.To.IsZero() && !rt.Before(rg.To):
		return 1, nil
	}
	return 0, nil
}

func archivedBefore(t string, to time.Time) bool {
	rt, err := time.Parse(time.RFC3339Nano, t)
	return err != nil || rt.Before(to)
}

// anchorOn builds the instance's anchor.json: its range and the nearest
// checkpoint at or after the range's last record, the end of the segment
// holding it, which the instance's gateway key signed.
func (ir *instanceRead) anchorOn(in archive.Instance, first, last *rec, fw string) error {
	i := slices.IndexFunc(in.Heads, func(h archive.SignedHead) bool { return h.Seq >= last.Seq })
	if i < 0 {
		return fmt.Errorf("%w: instance %s: no checkpoint covers record %d", ErrCheckpoint, ir.name, last.Seq)
	}
	head := in.Heads[i]
	sh, err := openCheckpoint(head.Note, in.Keys...)
	if err != nil || sh.Seq != head.Seq || sh.Hash != head.Hash {
		return fmt.Errorf("%w: instance %s's checkpoint for record %d: %v", ErrCheckpoint, ir.name, head.Seq, err)
	}
	ir.gateway = signingKey(head.Note, in.Keys)
	a := &Anchor{
		Format: bundleFormat, Generator: generatorVersion, App: ir.b.app, Framework: fw,
		IncludeApprovals: true, IncludeRejections: true,
		Records: last.Seq - first.Seq + 1,
		First:   Link{Seq: first.Seq, Time: first.Time, Prev: first.Prev, Hash: first.Hash},
		Last:    Link{Seq: last.Seq, Time: last.Time, Hash: last.Hash},
	}
	a.Checkpoint = Checkpoint{Source: sourceArchive, Origin: sh.Origin, Seq: sh.Seq, Hash: sh.Hash, Covers: covers(sh.Seq, a), Note: string(head.Note)}
	ir.anchor = a
	ir.from = first.Seq
	ir.entry.Records, ir.entry.FirstSeq, ir.entry.LastSeq = a.Records, first.Seq, last.Seq
	ir.entry.GatewayKey = fingerprint(ir.gateway)
	return nil
}

// signingKey is the key of keys that signed note.
func signingKey(note []byte, ks []ed25519.PublicKey) ed25519.PublicKey {
	for _, k := range ks {
		if _, err := openCheckpoint(note, k); err == nil {
			return k
		}
	}
	return nil
}

func fingerprint(k ed25519.PublicKey) string {
	s := sha256.Sum256(k)
	return "SHA256:" + hex.EncodeToString(s[:8])
}

// finish builds the instance's small files once approvals.json is known.
func (ir *instanceRead) finish(list []FleetApproval) error {
	a, p := ir.anchor, ir.part
	var err error
	from, to := ir.from, uint64(0)
	if a != nil {
		to = a.Last.Seq
	}
	if c := ir.entry.Cited; len(c) > 0 {
		if a == nil {
			from = c[0]
		}
		to = max(to, c[len(c)-1])
	}
	// The principals in force up to the last record the part holds or
	// cites: config records after the range count up to a cited one.
	for _, r := range ir.later {
		if r.Seq > to {
			break
		}
		if err := ir.hist.addConfig(r); err != nil {
			return fmt.Errorf("instance %s: %w", ir.name, err)
		}
	}
	if err := ir.hist.resolve(nil, "", nil, from, to); err != nil {
		return fmt.Errorf("instance %s: %w", ir.name, err)
	}
	for _, fa := range list {
		var e ApprovalEntry
		e.ID = fa.ID
		for _, s := range fa.Statements {
			if s.Instance == ir.name {
				e.Statements = append(e.Statements, s.Statement)
			}
		}
		if err := checkStatements(e, ir.hist); err != nil {
			return fmt.Errorf("instance %s: %w", ir.name, err)
		}
	}
	if p.files[FilePrincipals], err = principalsJSON(ir.hist); err != nil {
		return err
	}
	if p.files[FileGatewayPub], err = keys.PublicPEM(ir.gateway); err != nil {
		return err
	}
	if a == nil {
		return nil // cited records only
	}
	if p.files[FileAnchor], err = marshal(a); err != nil {
		return err
	}
	if p.files[FileManifest], err = manifestsJSON(ir.b.policies, ir.res); err != nil {
		return err
	}
	files, err := derived(ir.b, a, len(ir.ids))
	if err != nil {
		return err
	}
	for k, v := range files {
		p.files[k] = v
	}
	return nil
}

// approvalIndex gathers, over every exported instance's whole archive,
// what the records say of each approval: who held it and every signed
// decision, so that a range that releases an approval decided before it
// (or at another instance) still carries its statements.
type approvalIndex struct {
	m map[string]*FleetApproval
	// decidedAt orders the status updates: the latest decision wins.
	decidedAt map[string]string
}

func newApprovalIndex() *approvalIndex {
	return &approvalIndex{m: map[string]*FleetApproval{}, decidedAt: map[string]string{}}
}

func (x *approvalIndex) get(r *rec) *FleetApproval {
	a := x.m[r.ApprovalID]
	if a == nil {
		a = &FleetApproval{ID: r.ApprovalID, Action: r.Action, App: r.App, Digest: r.Digest, Status: approvals.StatusPending,
			RequiredRoles: []string{}, Statements: []FleetStatement{}}
		x.m[r.ApprovalID] = a
	}
	return a
}

// note takes one record that names an approval.
func (x *approvalIndex) note(instance string, r *rec) {
	if r.ApprovalID == "" {
		return
	}
	switch {
	case r.is(record.KindRequest, record.Pending):
		a := x.get(r)
		d := dataOf[record.Request](r)
		a.Kind, a.Action, a.App, a.Digest, a.OnBehalfOf = approvals.KindRequest, r.Action, r.App, r.Digest, d.OnBehalfOf
		a.RequiredRoles = append([]string{}, d.RequiredRoles...)
		a.Held = &RecordRef{Instance: instance, Seq: r.Seq}
	case r.is(record.KindOverride, record.Pending):
		a := x.get(r)
		d := dataOf[record.OverrideRequest](r)
		a.Kind, a.Action, a.App, a.Digest, a.RequestedBy = approvals.KindOverride, r.Action, r.App, r.Digest, d.RequestedBy
		a.RequiredRoles = append([]string{}, d.RequiredRoles...)
		a.Held = &RecordRef{Instance: instance, Seq: r.Seq}
	case r.is(record.KindApproval, record.Approve), r.is(record.KindApproval, record.Reject):
		a := x.get(r)
		d := dataOf[record.Signature](r)
		if a.Kind == "" {
			a.Kind = d.ApprovalKind
		}
		if a.Digest == "" {
			a.Digest = r.Digest
		}
		a.Statements = append(a.Statements, FleetStatement{Instance: instance, Statement: Statement{
			Approver: d.Approver, Role: d.Role, Decision: string(r.Decision), Reason: d.Reason, SignedAt: d.SignedAt,
			Signature: d.Signature, WebAuthn: d.WebAuthn, Record: r.Seq}})
		if d.Status != "" && r.Time >= x.decidedAt[r.ApprovalID] {
			a.Status, x.decidedAt[r.ApprovalID] = d.Status, r.Time
		}
	case r.is(record.KindApproval, record.Expired):
		a := x.get(r)
		if r.Time >= x.decidedAt[r.ApprovalID] {
			a.Status, x.decidedAt[r.ApprovalID] = approvals.StatusExpired, r.Time
		}
	}
}

// build is approvals.json's list: every approval a record of the range
// names, by id, each statement with its exact text, by signing time.
func (x *approvalIndex) build(reads map[string]*instanceRead) ([]FleetApproval, error) {
	named := map[string]bool{}
	for _, ir := range reads {
		for id := range ir.ids {
			named[id] = true
		}
	}
	out := []FleetApproval{}
	for _, id := range sortedKeys(named) {
		a := x.m[id]
		if a == nil {
			return nil, fmt.Errorf("%w: approval %s is named by the range's records but no archived record holds or decides it", ErrMissingApproval, id)
		}
		if a.Kind == "" {
			a.Kind = approvals.KindRequest
		}
		for i := range a.Statements {
			s := &a.Statements[i].Statement
			s.Statement = string(approvals.Statement(a.ID, a.Digest, s.Decision, s.Approver, s.SignedAt))
		}
		sort.SliceStable(a.Statements, func(i, j int) bool {
			si, sj := a.Statements[i], a.Statements[j]
			if si.SignedAt != sj.SignedAt {
				return si.SignedAt < sj.SignedAt
			}
			if si.Instance != sj.Instance {
				return si.Instance < sj.Instance
			}
			return si.Record < sj.Record
		})
		out = append(out, *a)
	}
	return out, nil
}

// writeFleetZip writes the entries in byte order: top files, then each
// instance's, records.jsonl streamed from its spool.
func writeFleetZip(ctx context.Context, w io.Writer, mod time.Time, top map[string][]byte, parts []*fleetPart) error {
	type entry struct {
		name string
		data []byte
		src  *spool
	}
	var es []entry
	for name, data := range top {
		es = append(es, entry{name: name, data: data})
	}
	for _, p := range parts {
		for name, data := range p.files {
			es = append(es, entry{name: fleetDir + p.name + "/" + name, data: data})
		}
		if p.records != nil {
			es = append(es, entry{name: fleetDir + p.name + "/" + FileRecords, src: p.records})
		}
	}
	sort.Slice(es, func(i, j int) bool { return es[i].name < es[j].name })
	z := newZipWriter(w, mod)
	for _, e := range es {
		if err := ctx.Err(); err != nil {
			return err
		}
		fw, err := z.create(e.name)
		if err != nil {
			return err
		}
		if e.src != nil {
			_, err = io.Copy(fw, e.src.reader())
		} else {
			_, err = fw.Write(e.data)
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", e.name, err)
		}
	}
	return z.close()
}

// manifestSource is the Source a fleet export's resolver asks for a
// manifest: it has none (the given files and those config records name
// are tried), and nothing else of it is read.
type manifestSource struct{}

func (manifestSource) Head() ledger.Head                                      { return ledger.Head{} }
func (manifestSource) Get(uint64) ([]byte, error)                             { return nil, ledger.ErrNotFound }
func (manifestSource) Range(uint64, uint64, func(uint64, []byte) error) error { return nil }
func (manifestSource) Approval(string) (*approvals.Approval, error) {
	return nil, approvals.ErrNotFound
}
func (manifestSource) GatewayKey() ed25519.PrivateKey { return nil }
func (manifestSource) Principals() *rules.Principals  { return nil }
func (manifestSource) Manifest(string) ([]byte, bool) { return nil, false }
func (manifestSource) Checkpoints() Checkpoints       { return nil }
