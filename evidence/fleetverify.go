package evidence

import (
	"archive/zip"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"

	"github.com/uapk-gateway/uapk-proxy/approvals"
	"github.com/uapk-gateway/uapk-proxy/internal/keys"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

func isFleet(zr *zip.Reader) bool {
	return slices.ContainsFunc(zr.File, func(f *zip.File) bool { return f.Name == FileFleet })
}

// fleetVerifier checks a fleet bundle. Its top verifier checks
// SHA256SUMS against keys/exporter.pub, which only says who exported; each
// instance's part is then checked as a single proxy's bundle is, by its
// own verifier, against its own gateway key and signed checkpoint, with
// approvals.json (the fleet's, statements named by instance and record)
// in place of a bundle's own.
type fleetVerifier struct {
	top       *bundleVerifier
	file      FleetFile
	insts     map[string]*bundleVerifier
	byFile    map[string]*bundleVerifier // instances/NAME/records.jsonl -> NAME's verifier
	approvals map[string]*FleetApproval
	seen      map[string]bool            // approval "\x00" instance "\x00" record: statements the records showed
	named     map[string]map[string]bool // instance -> approvals its records name
	heldSeen  map[string]bool            // approvals whose held request the records showed
	cited     map[string]map[uint64]*rec // instance -> its cited records, from cited.jsonl
	entries   map[string]FleetInstance
	complete  map[string]*Problem
	rep       Report
}

func verifyFleet(zr *zip.Reader) (Report, error) {
	fv := &fleetVerifier{insts: map[string]*bundleVerifier{}, byFile: map[string]*bundleVerifier{},
		seen: map[string]bool{}, named: map[string]map[string]bool{}, complete: map[string]*Problem{},
		heldSeen: map[string]bool{}, cited: map[string]map[uint64]*rec{}, entries: map[string]FleetInstance{}}
	fv.top = &bundleVerifier{required: fleetFiles, sumsKey: FileExporterPub, fleet: fv}
	if p := fv.run(zr); p != nil {
		fv.rep.OK, fv.rep.Problem = false, p
		return fv.rep, p
	}
	fv.rep.OK = true
	return fv.rep, nil
}

func (fv *fleetVerifier) run(zr *zip.Reader) *Problem {
	top := fv.top
	if p := top.index(zr); p != nil {
		return p
	}
	if p := fv.readFleet(); p != nil {
		return p
	}
	if p := top.checkSums(); p != nil {
		return p
	}
	fv.rep.Files, fv.rep.ExporterKey = len(top.files), top.rep.GatewayKey
	fv.rep.App, fv.rep.Framework = fv.file.App, fv.file.Framework
	names := sortedKeys(fv.insts)
	for _, name := range names {
		iv := fv.insts[name]
		read := iv.readParts
		if fv.entries[name].Records == 0 {
			read = iv.readPrincipals // cited records only
		}
		if p := fv.inst(name, read); p != nil {
			return p
		}
	}
	if p := fv.readApprovals(); p != nil {
		return p
	}
	for _, name := range names {
		iv := fv.insts[name]
		if p := fv.inst(name, func() *Problem { return fv.checkInstance(iv) }); p != nil {
			return p
		}
	}
	for _, in := range fv.file.Instances {
		ir := InstanceReport{Name: in.Name, Complete: in.Complete, ArchivedSeq: in.ArchivedSeq, ArchivedTime: in.ArchivedTime}
		if iv := fv.insts[in.Name]; iv != nil {
			ir.Report = iv.rep
			ir.Report.OK = true
			fv.rep.Records += iv.rep.Records
			fv.rep.Checkpoints += iv.rep.Checkpoints
			fv.rep.FirstTime = minTime(fv.rep.FirstTime, iv.rep.FirstTime)
			fv.rep.LastTime = max(fv.rep.LastTime, iv.rep.LastTime)
		}
		if !in.Complete {
			fv.rep.Notes = append(fv.rep.Notes, fmt.Sprintf("instance %s: its archive ends at record %d (%s), before the range's end: what it wrote since is not archived, and not in this bundle", in.Name, in.ArchivedSeq, orDash(in.ArchivedTime)))
		}
		fv.rep.Instances = append(fv.rep.Instances, ir)
	}
	return nil
}

func minTime(a, b string) string {
	if a == "" || b != "" && b < a {
		return b
	}
	return a
}

// inst runs check on one instance and names the instance in its problem,
// with the file's path in the bundle.
func (fv *fleetVerifier) inst(name string, check func() *Problem) *Problem {
	p := check()
	if p == nil {
		return nil
	}
	q := *p
	q.Instance = name
	if q.File != "" && q.File != FileApprovals && q.File != FileFleet {
		q.File = fleetDir + name + "/" + q.File
	}
	q.Message = "instance " + name + ": " + q.Message
	return &q
}

// readFleet reads fleet.json and sets up a verifier for each instance
// with records, before SHA256SUMS is checked: hashing an instance's
// records.jsonl also notes its config and checkpoint records.
func (fv *fleetVerifier) readFleet() *Problem {
	data, p := fv.top.read(FileFleet, maxSmallFile)
	if p != nil {
		return p
	}
	f := &fv.file
	if err := strictJSON(data, f); err != nil {
		return problemf(ProblemBadAnchor, FileFleet, 0, "%s is not valid: %v", FileFleet, err)
	}
	if f.Format != fleetFormat {
		return problemf(ProblemBadAnchor, FileFleet, 0, "%s format %q, this verifier reads %q", FileFleet, f.Format, fleetFormat)
	}
	if _, err := NormalizeFramework(f.Framework); err != nil {
		return problemf(ProblemBadAnchor, FileFleet, 0, "%s: %v", FileFleet, err)
	}
	for _, in := range f.Instances {
		if !safeName.MatchString(in.Name) || strings.Contains(in.Name, "/") || fv.insts[in.Name] != nil {
			return problemf(ProblemBadAnchor, FileFleet, 0, "%s: instance name %q is empty, unsafe or appears twice", FileFleet, in.Name)
		}
		fv.entries[in.Name] = in
		if in.Records == 0 && len(in.Cited) == 0 {
			continue
		}
		for i, c := range in.Cited {
			if c == 0 || i > 0 && c <= in.Cited[i-1] || in.Records > 0 && c >= in.FirstSeq && c <= in.LastSeq {
				return problemf(ProblemBadAnchor, FileFleet, c, "%s: instance %s's cited records must be ascending and outside its records %d-%d", FileFleet, in.Name, in.FirstSeq, in.LastSeq)
			}
		}
		iv := &bundleVerifier{fleet: fv, inst: in.Name, files: map[string]*zip.File{}}
		prefix := fleetDir + in.Name + "/"
		files := instanceFiles
		switch {
		case in.Records == 0:
			files = citedOnlyFiles
		case len(in.Cited) > 0:
			files = append(slices.Clone(instanceFiles), citedFiles...)
		}
		for _, name := range files {
			zf := fv.top.files[prefix+name]
			if zf == nil {
				return problemf(ProblemMissingFile, prefix+name, 0, "%s names instance %s, but %s is missing from the bundle", FileFleet, in.Name, prefix+name)
			}
			iv.files[name] = zf
		}
		pub, p := iv.read(FileGatewayPub, maxSmallFile)
		if p != nil {
			return p
		}
		if iv.gw, _ = keys.ParsePublic(pub); iv.gw == nil {
			return fv.inst(in.Name, func() *Problem {
				return problemf(ProblemBadKey, FileGatewayPub, 0, "%s is not a PKIX PEM Ed25519 public key", FileGatewayPub)
			})
		}
		iv.keys = []ed25519.PublicKey{iv.gw}
		iv.rep.GatewayKey = fingerprint(iv.gw)
		if iv.rep.GatewayKey != in.GatewayKey {
			return problemf(ProblemBadKey, prefix+FileGatewayPub, 0, "instance %s: %s has fingerprint %s, %s says %s", in.Name, FileGatewayPub, iv.rep.GatewayKey, FileFleet, in.GatewayKey)
		}
		fv.insts[in.Name] = iv
		fv.byFile[prefix+FileRecords] = iv
	}
	if len(fv.insts) == 0 {
		return problemf(ProblemBadAnchor, FileFleet, 0, "%s names no instance with records", FileFleet)
	}
	for name := range fv.top.files {
		rest, ok := strings.CutPrefix(name, fleetDir)
		if !ok {
			continue
		}
		inst, file, _ := strings.Cut(rest, "/")
		if iv := fv.insts[inst]; iv == nil || iv.files[file] == nil {
			return problemf(ProblemUnlistedFile, name, 0, "%s is in the bundle but is no file of an instance %s names", name, FileFleet)
		}
	}
	return nil
}

// readParts reads an instance's anchor, manifests and principals.
func (v *bundleVerifier) readParts() *Problem {
	if p := v.readAnchor(); p != nil {
		return p
	}
	f := v.fleet.file
	a := v.anchor
	switch {
	case a.Checkpoint.Source != sourceArchive:
		return problemf(ProblemBadAnchor, FileAnchor, 0, "%s: a fleet instance's range must be anchored by an archived checkpoint, not %q", FileAnchor, a.Checkpoint.Source)
	case a.Framework != f.Framework || a.App != f.App:
		return problemf(ProblemBadAnchor, FileAnchor, 0, "%s says app %s, framework %s; %s says %s, %s", FileAnchor, a.App, a.Framework, FileFleet, f.App, f.Framework)
	}
	for _, in := range f.Instances {
		if in.Name == v.inst && (in.FirstSeq != a.First.Seq || in.LastSeq != a.Last.Seq || in.Records != a.Records) {
			return problemf(ProblemBadAnchor, FileAnchor, 0, "%s says records %d-%d, %s says %d-%d", FileAnchor, a.First.Seq, a.Last.Seq, FileFleet, in.FirstSeq, in.LastSeq)
		}
	}
	if p := v.readManifests(); p != nil {
		return p
	}
	return v.readPrincipals()
}

// readApprovals reads the fleet's approvals.json and checks each signed
// statement against the key its approver had, in the principals of the
// instance whose record keeps it, when it was signed.
func (fv *fleetVerifier) readApprovals() *Problem {
	data, p := fv.top.read(FileApprovals, maxApprovals)
	if p != nil {
		return p
	}
	var af FleetApprovals
	if err := strictJSON(data, &af); err != nil {
		return problemf(ProblemBadApprovals, FileApprovals, 0, "%s is not valid: %v", FileApprovals, err)
	}
	if af.Format != fleetApprovalsFm {
		return problemf(ProblemBadApprovals, FileApprovals, 0, "%s format %q, this verifier reads %q", FileApprovals, af.Format, fleetApprovalsFm)
	}
	fv.approvals = map[string]*FleetApproval{}
	for i := range af.Approvals {
		a := &af.Approvals[i]
		if a.ID == "" || fv.approvals[a.ID] != nil {
			return problemf(ProblemBadApprovals, FileApprovals, 0, "%s: an approval id is empty or appears twice", FileApprovals)
		}
		if a.Kind != approvals.KindRequest && a.Kind != approvals.KindOverride {
			return problemf(ProblemBadApprovals, FileApprovals, 0, "approval %s has kind %q", a.ID, a.Kind)
		}
		fv.approvals[a.ID] = a
		for j := range a.Statements {
			s := &a.Statements[j]
			iv := fv.insts[s.Instance]
			if iv == nil {
				return problemf(ProblemBadApprovals, FileApprovals, s.Record, "approval %s: %s's statement is kept by instance %q, which has no part in this bundle", a.ID, s.Approver, s.Instance)
			}
			if p := fv.inst(s.Instance, func() *Problem { return iv.checkStatement(a.ID, a.Digest, &s.Statement) }); p != nil {
				return p
			}
			fv.rep.Statements++
		}
		if h := a.Held; h != nil && fv.insts[h.Instance] == nil {
			return problemf(ProblemBadApprovals, FileApprovals, h.Seq, "approval %s was held by instance %q (record %d), which has no part in this bundle", a.ID, h.Instance, h.Seq)
		}
	}
	fv.rep.Approvals = len(af.Approvals)
	return nil
}

// checkStatement checks one statement of approval id (request digest
// digest): its exact text, and its signature (or passkey assertion) by the
// key its approver had in these principals when it was signed. A single
// bundle and each instance of a fleet's check theirs with it.
func (v *bundleVerifier) checkStatement(id, digest string, s *Statement) *Problem {
	if s.Decision != approvals.Approve && s.Decision != approvals.Reject {
		return problemf(ProblemBadApprovals, FileApprovals, s.Record, "approval %s: statement by %s has decision %q", id, s.Approver, s.Decision)
	}
	want := string(approvals.Statement(id, digest, s.Decision, s.Approver, s.SignedAt))
	if s.Statement != want {
		return problemf(ProblemApprovalMismatch, FileApprovals, s.Record, "approval %s: the statement text of %s's %s is not the one its fields give", id, s.Approver, s.Decision)
	}
	if err := rules.CheckID(s.Approver); err != nil {
		return problemf(ProblemApprovalSignature, FileApprovals, s.Record, "approval %s: a statement's approver: %v; such an id is nobody's", id, err)
	}
	pr := v.signer(s.Approver, s.Record)
	if s.WebAuthn != nil {
		return v.checkPasskeyStatement(&ApprovalEntry{ID: id}, s, pr)
	}
	if pr == nil || pr.pub == nil {
		return problemf(ProblemApprovalSignature, FileApprovals, s.Record, "approval %s: %s signed a statement (record %d) but has no public key in force then in %s", id, s.Approver, s.Record, FilePrincipals)
	}
	sig, err := base64.StdEncoding.DecodeString(s.Signature)
	if err != nil || !ed25519.Verify(pr.pub, []byte(want), sig) {
		return problemf(ProblemApprovalSignature, FileApprovals, s.Record, "approval %s: the signature on %s's %s statement (record %d) does not verify with %s's key in %s", id, s.Approver, s.Decision, s.Record, pr.id, FilePrincipals)
	}
	return nil
}

// checkInstance checks one instance's records, principals, checkpoint and
// derived files, as a single bundle's are.
func (fv *fleetVerifier) checkInstance(v *bundleVerifier) *Problem {
	fv.named[v.inst] = map[string]bool{}
	e := fv.entries[v.inst]
	if e.Records == 0 {
		// Cited records only: their runs, and what approvals.json says
		// of them.
		if p := fv.checkCited(v, e); p != nil {
			return p
		}
		if p := fv.checkRefs(v, e); p != nil {
			return p
		}
		fv.rep.Notes = append(fv.rep.Notes, fmt.Sprintf("instance %s: no record in the range; the records approvals.json cites (%s) are in %s, each chained to a checkpoint its gateway key signed", v.inst, citedList(e.Cited), FileCited))
		return nil
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
	if len(e.Cited) > 0 {
		if p := fv.checkCited(v, e); p != nil {
			return p
		}
		fv.rep.Notes = append(fv.rep.Notes, fmt.Sprintf("instance %s: records approvals.json cites outside its range (%s) are in %s, each chained to a checkpoint its gateway key signed", v.inst, citedList(e.Cited), FileCited))
	}
	if p := fv.checkRefs(v, e); p != nil {
		return p
	}
	if p := v.checkConfigPrincipals(); p != nil {
		return p
	}
	if p := v.checkAnchorCheckpoint(); p != nil {
		return p
	}
	v.rep.Approvals = len(fv.named[v.inst])
	if p := v.checkDerived(b); p != nil {
		return p
	}
	fv.rep.Notes = append(fv.rep.Notes, prefixAll("instance "+v.inst+": ", v.rep.Notes)...)
	return nil
}

func prefixAll(p string, ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = p + s
	}
	return out
}

// fleetCrossCheck holds one record of an instance against the fleet's
// approvals.json: a decision record is the statement that names it, a
// held request is the approval's, and a release has a complete approval.
func (v *bundleVerifier) fleetCrossCheck(r *rec) *Problem {
	fv := v.fleet
	if r.ApprovalID == "" {
		return nil
	}
	fv.named[v.inst][r.ApprovalID] = true
	ap := fv.approvals[r.ApprovalID]
	if ap == nil {
		return problemf(ProblemMissingApproval, FileApprovals, r.Seq, "record %d (%s/%s/%s) names approval %s, which is not in %s", r.Seq, r.Kind, r.Decision, r.Reason, r.ApprovalID, FileApprovals)
	}
	switch {
	case r.is(record.KindApproval, record.Approve), r.is(record.KindApproval, record.Reject):
		d := dataOf[record.Signature](r)
		for _, s := range ap.Statements {
			if s.Instance != v.inst || s.Record != r.Seq {
				continue
			}
			if p := matchStatement(ap, &s.Statement, r); p != nil {
				return p
			}
			fv.seen[ap.ID+"\x00"+v.inst+"\x00"+u(r.Seq)] = true
			return nil
		}
		return problemf(ProblemMissingApproval, FileApprovals, r.Seq, "approval %s: %s's signed %s (record %d) is missing from its statements", ap.ID, d.Approver, r.Decision, r.Seq)
	case r.is(record.KindRequest, record.Pending), r.is(record.KindOverride, record.Pending):
		if ap.Held == nil || *ap.Held != (RecordRef{Instance: v.inst, Seq: r.Seq}) || ap.Digest != r.Digest || ap.Action != r.Action || ap.App != r.App {
			return problemf(ProblemApprovalMismatch, FileApprovals, r.Seq, "approval %s is not the request record %d held (where held, digest, action or app differ)", ap.ID, r.Seq)
		}
		fv.heldSeen[ap.ID] = true
	case releases(r):
		fv.rep.Released++
		if ap.Kind == approvals.KindRequest && (r.Kind == record.KindRequest || r.Kind == record.KindCapability) &&
			(ap.Digest != r.Digest || ap.Action != r.Action || ap.App != r.App) {
			return problemf(ProblemApprovalMismatch, FileApprovals, r.Seq, "record %d lets through another request than approval %s approved (digest, action or app differ)", r.Seq, ap.ID)
		}
		p, done := fv.complete[ap.ID]
		if !done {
			p = fv.completeness(ap)
			fv.complete[ap.ID] = p
		}
		return withSeq(p, r.Seq)
	}
	return nil
}

// completeness checks what the records show of an approval a record
// releases: the last decision made it approved, and every approve
// statement is by a distinct person, not its requester, holding the role
// they signed as (one the approval requires) in the principals of the
// instance that kept it. Which roles had to fill which slots is the
// deciding proxy's reckoning, in its chain as the status; the records name
// the required roles, not the slots.
func (fv *fleetVerifier) completeness(ap *FleetApproval) *Problem {
	if ap.Status != approvals.StatusApproved {
		return problemf(ProblemIncompleteApproval, FileApprovals, 0, "approval %s is %s, not approved", ap.ID, ap.Status)
	}
	self := map[string]bool{}
	for _, s := range []string{ap.OnBehalfOf, ap.App, ap.RequestedBy} {
		if s != "" {
			self[asciiLower(s)] = true
		}
	}
	seen := map[string]bool{}
	n := 0
	for _, s := range ap.Statements {
		if s.Decision != approvals.Approve {
			continue
		}
		switch {
		case self[s.Approver]:
			return problemf(ProblemIncompleteApproval, FileApprovals, 0, "approval %s was approved by %s, who requested it: self-approval does not count", ap.ID, s.Approver)
		case seen[s.Approver]:
			return problemf(ProblemIncompleteApproval, FileApprovals, 0, "approval %s counts %s twice: one person counts once", ap.ID, s.Approver)
		case len(ap.RequiredRoles) > 0 && !slices.Contains(ap.RequiredRoles, s.Role):
			return problemf(ProblemIncompleteApproval, FileApprovals, 0, "approval %s: %s signed as %s, which is not among its required roles %v", ap.ID, s.Approver, s.Role, ap.RequiredRoles)
		}
		seen[s.Approver] = true
		if pr := fv.insts[s.Instance].signer(s.Approver, s.Record); pr == nil || !pr.has(s.Role) {
			return problemf(ProblemIncompleteApproval, FileApprovals, 0, "approval %s: %s signed as %s (instance %s, record %d), a role the principals in force then do not give them", ap.ID, s.Approver, s.Role, s.Instance, s.Record)
		}
		n++
	}
	if n == 0 {
		return problemf(ProblemIncompleteApproval, FileApprovals, 0, "approval %s is marked approved but no approve statement of it is in %s", ap.ID, FileApprovals)
	}
	return nil
}

// citedList is seqs as "7, 9" (the first 10, then how many more).
func citedList(seqs []uint64) string {
	var b strings.Builder
	for i, s := range seqs {
		if i == 10 {
			fmt.Fprintf(&b, " and %d more", len(seqs)-10)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(u(s))
	}
	return b.String()
}
