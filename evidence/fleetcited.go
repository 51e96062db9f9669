package evidence

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/uapk-gateway/uapk-proxy/archive"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/verifier"
)

// Cited records (docs/reference.md#fleet-evidence). approvals.json cites
// records of several instances: each statement's decision record and the
// record that held the request. A cited record that its instance's
// records.jsonl does not hold (the instance has no record in the range, or
// the record is before or after its range) is in that instance's
// cited.jsonl, followed by every record after it up to the end of its
// archived segment, whose checkpoint the instance's gateway key signed:
// the hash chain from the cited record to that checkpoint proves the
// record is in the instance's chain, as records.jsonl and anchor.json
// prove the range's. cited.json names each such run and its checkpoint.
const (
	FileCited      = "cited.jsonl"
	FileCitedRuns  = "cited.json"
	citedFormat    = "uapk-fleet-cited/1"
	maxCitedFile   = 16 << 20
	maxCitedRuns   = 100000
	approvalIDJSON = `"approval_id":"`
)

// citedFiles are the files of an instance with cited records; an
// instance with no record in the range has these and its keys only.
var (
	citedFiles     = []string{FileCitedRuns, FileCited}
	citedOnlyFiles = []string{FileGatewayPub, FilePrincipals, FileCitedRuns, FileCited}
)

// CitedFile is an instance's cited.json.
type CitedFile struct {
	Format string     `json:"format"`
	Runs   []CitedRun `json:"runs"`
}

// CitedRun is records First to Last of cited.jsonl: First is a cited
// record, Last the end of its segment, whose archived checkpoint
// (Checkpoint, covers "last_record") signs its hash.
type CitedRun struct {
	First      uint64     `json:"first"`
	Last       uint64     `json:"last"`
	Checkpoint Checkpoint `json:"checkpoint"`
}

// checkManifestsUsed refuses a --manifest no exported instance's records
// of the range were decided under, as a single export does.
func checkManifestsUsed(given []ManifestFile, names []string, reads map[string]*instanceRead) error {
	for i, m := range given {
		var in []string
		used := false
		for _, n := range names {
			res := reads[n].res
			used = used || res.used[i]
			for p := range res.parsed {
				if !slices.Contains(in, p) {
					in = append(in, p)
				}
			}
		}
		if !used {
			sort.Strings(in)
			return fmt.Errorf("%w: %s has SHA-256 %s, but the exported instances' records of the range were decided under %s", ErrManifestMismatch,
				m.Name, sha256Hex(m.Data), orNone(in))
		}
	}
	return nil
}

// citesApproval reports whether r is a record approvalIndex.note takes:
// one that holds, decides or expires an approval.
func citesApproval(r *rec) bool {
	return r.is(record.KindRequest, record.Pending) || r.is(record.KindOverride, record.Pending) ||
		r.is(record.KindApproval, record.Approve) || r.is(record.KindApproval, record.Reject) || r.is(record.KindApproval, record.Expired)
}

var errStopRead = errors.New("evidence: read far enough")

// checkLeftOut reads the instances not exported for records of the
// approvals the range names, and refuses (ErrLeftOut) when one holds any:
// approvals.json is rebuilt from the exported instances' records, and
// without that instance it would lack a statement, the request or the
// decision that set its status. An instance whose archive does not check
// out is read as far as it does, and noted.
func checkLeftOut(ctx context.Context, fa FleetArchive, others []string, list []FleetApproval) ([]string, error) {
	ids := map[string]bool{}
	for _, a := range list {
		ids[a.ID] = true
	}
	var hits, notes []string
	var names []string
	for _, name := range others {
		var hit string
		in, err := fa.ReadInstance(ctx, name, func(seq uint64, raw []byte) error {
			if !bytes.Contains(raw, []byte(approvalIDJSON)) {
				return nil
			}
			r, err := parseRecord(raw)
			if err != nil || !ids[r.ApprovalID] || !citesApproval(r) {
				return nil
			}
			hit = fmt.Sprintf("%s record %d (%s/%s of approval %s)", name, seq, r.Kind, r.Decision, r.ApprovalID)
			return errStopRead
		})
		if err != nil && !errors.Is(err, errStopRead) {
			return nil, fmt.Errorf("instance %s (read for the approvals the range names): %w", name, err)
		}
		if hit != "" {
			hits, names = append(hits, hit), append(names, name)
			continue
		}
		if p := in.Report.Problem; p != nil {
			notes = append(notes, fmt.Sprintf("instance %s, not exported, was read for records of the range's approvals only up to record %d: its archive: %s at record %d: %s", name, max(p.Seq, 1)-1, p.Key, p.Seq, p.Reason))
		}
	}
	if len(hits) > 0 {
		return nil, fmt.Errorf("%w: %s: an instance not exported holds a record of an approval the range names (a statement, the held request or its expiry), which the bundle must carry to prove it; export it too: add --instance %s",
			ErrLeftOut, strings.Join(hits, "; "), strings.Join(names, " --instance "))
	}
	return notes, nil
}

// cite sets each instance's Cited: the records approvals.json cites that
// its records.jsonl does not hold.
func cite(list []FleetApproval, reads map[string]*instanceRead) {
	add := func(inst string, seq uint64) {
		ir := reads[inst]
		if ir == nil {
			return // only exported instances' records are in the index
		}
		e := &ir.entry
		if e.Records > 0 && seq >= e.FirstSeq && seq <= e.LastSeq {
			return
		}
		if !slices.Contains(e.Cited, seq) {
			e.Cited = append(e.Cited, seq)
		}
	}
	for _, a := range list {
		if a.Held != nil {
			add(a.Held.Instance, a.Held.Seq)
		}
		for _, s := range a.Statements {
			add(s.Instance, s.Record)
		}
	}
	for _, ir := range reads {
		slices.Sort(ir.entry.Cited)
	}
}

// readCited reads the instance's archive again for its cited records,
// each with the rest of its segment, into cited.jsonl and cited.json. An
// instance with no record of the range gets a part of these alone, whose
// gateway key is the one that signed its first run's checkpoint.
func (ir *instanceRead) readCited(ctx context.Context, fa FleetArchive) error {
	var runs []CitedRun
	for _, c := range ir.entry.Cited {
		i := slices.IndexFunc(ir.heads, func(h archive.SignedHead) bool { return h.Seq >= c })
		if i < 0 {
			return fmt.Errorf("%w: instance %s: no archived checkpoint covers record %d, which approvals.json cites", ErrCheckpoint, ir.name, c)
		}
		head := ir.heads[i]
		if n := len(runs); n > 0 && runs[n-1].Last == head.Seq {
			continue // the same segment: the run from the earlier one holds it
		}
		sh, err := openCheckpoint(head.Note, ir.keys...)
		if err != nil || sh.Seq != head.Seq || sh.Hash != head.Hash {
			return fmt.Errorf("%w: instance %s's checkpoint for record %d: %v", ErrCheckpoint, ir.name, head.Seq, err)
		}
		runs = append(runs, CitedRun{First: c, Last: head.Seq,
			Checkpoint: Checkpoint{Source: sourceArchive, Origin: sh.Origin, Seq: sh.Seq, Hash: sh.Hash, Covers: coversLastRecord, Note: string(head.Note)}})
	}
	var buf bytes.Buffer
	end, j, n := runs[len(runs)-1].Last, 0, uint64(0)
	in, err := fa.ReadInstance(ctx, ir.name, func(seq uint64, raw []byte) error {
		if seq > end {
			return errStopRead
		}
		for seq > runs[j].Last {
			j++
		}
		if seq >= runs[j].First {
			buf.Write(raw)
			buf.Write(newline)
			n++
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopRead) {
		return fmt.Errorf("instance %s (its cited records): %w", ir.name, err)
	}
	if p := in.Report.Problem; p != nil && p.Seq <= end {
		return fmt.Errorf("%w: instance %s (read again for its cited records): %s at record %d: %s: %s", ErrArchive, ir.name, p.Key, p.Seq, p.Reason, p.Detail)
	}
	want := uint64(0)
	for _, r := range runs {
		want += r.Last - r.First + 1
	}
	if n != want {
		return fmt.Errorf("%w: instance %s: read %d of the %d records its cited runs need: the archive changed while it was exported", ErrArchive, ir.name, n, want)
	}
	if ir.part == nil {
		ir.part = &fleetPart{name: ir.name, files: map[string][]byte{}}
		ir.gateway = signingKey([]byte(runs[0].Checkpoint.Note), ir.keys)
		ir.entry.GatewayKey = fingerprint(ir.gateway)
	}
	cf, err := marshal(CitedFile{Format: citedFormat, Runs: runs})
	if err != nil {
		return err
	}
	ir.part.files[FileCitedRuns], ir.part.files[FileCited] = cf, buf.Bytes()
	return nil
}

// checkCited checks an instance's cited.jsonl: each run of cited.json an
// intact chain from its first record to its last, whose hash the run's
// checkpoint, signed by the instance's gateway key, names. It keeps the
// cited records for checkRefs.
func (fv *fleetVerifier) checkCited(v *bundleVerifier, e FleetInstance) *Problem {
	data, p := v.read(FileCitedRuns, maxCitedFile)
	if p != nil {
		return p
	}
	var cf CitedFile
	if err := strictJSON(data, &cf); err != nil {
		return problemf(ProblemBadAnchor, FileCitedRuns, 0, "%s is not valid: %v", FileCitedRuns, err)
	}
	if cf.Format != citedFormat {
		return problemf(ProblemBadAnchor, FileCitedRuns, 0, "%s format %q, this verifier reads %q", FileCitedRuns, cf.Format, citedFormat)
	}
	if len(cf.Runs) == 0 || len(cf.Runs) > maxCitedRuns {
		return problemf(ProblemBadAnchor, FileCitedRuns, 0, "%s has %d runs", FileCitedRuns, len(cf.Runs))
	}
	for i, r := range cf.Runs {
		c := r.Checkpoint
		switch {
		case r.First == 0 || r.Last < r.First || i > 0 && r.First <= cf.Runs[i-1].Last:
			return problemf(ProblemBadAnchor, FileCitedRuns, r.First, "%s: run %d (records %d-%d) is empty, or not after the one before", FileCitedRuns, i+1, r.First, r.Last)
		case !slices.Contains(e.Cited, r.First):
			return problemf(ProblemBadAnchor, FileCitedRuns, r.First, "%s: run %d starts at record %d, which %s does not list as cited", FileCitedRuns, i+1, r.First, FileFleet)
		case c.Source != sourceArchive || c.Covers != coversLastRecord || c.Seq != r.Last:
			return problemf(ProblemBadCheckpoint, FileCitedRuns, r.Last, "%s: run %d must end at its archived checkpoint (covers last_record), not %s record %d (%s)", FileCitedRuns, i+1, c.Source, c.Seq, c.Covers)
		}
		h, err := openCheckpoint([]byte(c.Note), v.keys...)
		if err != nil {
			return problemf(ProblemBadCheckpoint, FileCitedRuns, c.Seq, "%s: run %d's checkpoint note: %v (%s)", FileCitedRuns, i+1, err, FileGatewayPub)
		}
		if h.Origin != c.Origin || h.Seq != c.Seq || h.Hash != c.Hash {
			return problemf(ProblemBadCheckpoint, FileCitedRuns, c.Seq, "%s says run %d's checkpoint is %s record %d hash %s, but its signed note says %s record %d hash %s",
				FileCitedRuns, i+1, c.Origin, c.Seq, c.Hash, h.Origin, h.Seq, h.Hash)
		}
	}
	for _, seq := range e.Cited {
		if !slices.ContainsFunc(cf.Runs, func(r CitedRun) bool { return seq >= r.First && seq <= r.Last }) {
			return problemf(ProblemMissingFile, FileCitedRuns, seq, "%s lists record %d as cited, but no run of %s holds it", FileFleet, seq, FileCitedRuns)
		}
	}
	rc, err := v.files[FileCited].Open()
	if err != nil {
		return problemf(ProblemBadEntry, FileCited, 0, "%s cannot be read: %v", FileCited, err)
	}
	defer rc.Close()
	recs := map[uint64]*rec{}
	fv.cited[v.inst] = recs
	lr := newLineReader(rc)
	var chain *verifier.Verifier
	run, next := 0, cf.Runs[0].First
	for {
		line, err := lr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return problemf(ProblemBadEntry, FileCited, next, "%s cannot be read: %v", FileCited, err)
		}
		if run == len(cf.Runs) {
			return problemf(ProblemChain, FileCited, next, "%s has records after its last run's checkpoint (record %d)", FileCited, cf.Runs[run-1].Last)
		}
		raw, ok := bytes.CutSuffix(line, newline)
		if !ok {
			return problemf(ProblemChain, FileCited, next, "%s does not end with a newline: its last line may be cut", FileCited)
		}
		r, err := parseRecord(raw)
		if err != nil {
			return problemf(ProblemChain, FileCited, next, "%s is not an intact chain to its checkpoint: record %d: not a ledger record: %v", FileCited, next, err)
		}
		if chain == nil {
			chain = verifier.New(next, r.Prev, verifier.Head{Seq: cf.Runs[run].Last, Hash: cf.Runs[run].Checkpoint.Hash})
		}
		if !chain.Add(raw) {
			pr := chain.Finish().Problem
			return problemf(ProblemChain, FileCited, pr.Seq, "%s is not an intact chain to its checkpoint at record %d: record %d: %s: %s", FileCited, cf.Runs[run].Last, pr.Seq, pr.Reason, pr.Detail)
		}
		if slices.Contains(e.Cited, r.Seq) {
			recs[r.Seq] = r
		}
		if next++; r.Seq == cf.Runs[run].Last {
			chain = nil
			if run++; run < len(cf.Runs) {
				next = cf.Runs[run].First
			}
		}
	}
	if run < len(cf.Runs) {
		return problemf(ProblemChain, FileCited, next, "%s ends at record %d, before run %d's checkpoint at record %d: records are missing", FileCited, next-1, run+1, cf.Runs[run].Last)
	}
	return nil
}

// checkRefs holds every record approvals.json cites of instance v, a
// statement's decision and a held request, to the record itself: in
// records.jsonl (the range) or in cited.jsonl (proven by its run), and
// each cited record of fleet.json to a citation.
func (fv *fleetVerifier) checkRefs(v *bundleVerifier, e FleetInstance) *Problem {
	inRange := func(seq uint64) bool { return e.Records > 0 && seq >= v.anchor.First.Seq && seq <= v.anchor.Last.Seq }
	used := map[uint64]bool{}
	cited := func(ap *FleetApproval, seq uint64, what string) (*rec, *Problem) {
		r := fv.cited[v.inst][seq]
		if r == nil {
			return nil, problemf(ProblemMissingApproval, FileApprovals, seq, "approval %s: %s names record %d, which is neither in %s nor among the cited records of %s", ap.ID, what, seq, FileRecords, FileCited)
		}
		used[seq] = true
		return r, nil
	}
	for _, id := range sortedKeys(fv.approvals) {
		ap := fv.approvals[id]
		for i := range ap.Statements {
			s := &ap.Statements[i]
			if s.Instance != v.inst {
				continue
			}
			if inRange(s.Record) {
				if !fv.seen[id+"\x00"+s.Instance+"\x00"+u(s.Record)] {
					return problemf(ProblemApprovalMismatch, FileApprovals, s.Record, "approval %s: %s's %s statement names record %d, which is not that decision", id, s.Approver, s.Decision, s.Record)
				}
				continue
			}
			r, p := cited(ap, s.Record, s.Approver+"'s "+s.Decision+" statement")
			if p != nil {
				return p
			}
			if p := matchStatement(ap, &s.Statement, r); p != nil {
				return p
			}
		}
		h := ap.Held
		if h == nil || h.Instance != v.inst {
			continue
		}
		if inRange(h.Seq) {
			if !fv.heldSeen[id] {
				return problemf(ProblemApprovalMismatch, FileApprovals, h.Seq, "approval %s says record %d held it, but that record is no request for it", id, h.Seq)
			}
			continue
		}
		r, p := cited(ap, h.Seq, "the held request")
		if p != nil {
			return p
		}
		if p := matchHeld(ap, r); p != nil {
			return p
		}
	}
	for _, seq := range e.Cited {
		if !used[seq] {
			return problemf(ProblemBadAnchor, FileFleet, seq, "%s lists record %d of instance %s as cited, but %s cites it nowhere", FileFleet, seq, v.inst, FileApprovals)
		}
	}
	return nil
}

// matchStatement holds a statement to the decision record r that it says
// keeps it.
func matchStatement(ap *FleetApproval, s *Statement, r *rec) *Problem {
	if r.ApprovalID != ap.ID || !r.is(record.KindApproval, record.Approve) && !r.is(record.KindApproval, record.Reject) {
		return problemf(ProblemApprovalMismatch, FileApprovals, r.Seq, "approval %s: %s's %s statement names record %d, which is not that decision", ap.ID, s.Approver, s.Decision, r.Seq)
	}
	d := dataOf[record.Signature](r)
	if s.Approver != d.Approver || s.Decision != string(r.Decision) || s.SignedAt != d.SignedAt || s.Signature != d.Signature || s.Role != d.Role || !sameWebAuthn(s.WebAuthn, d.WebAuthn) {
		return problemf(ProblemApprovalMismatch, FileApprovals, r.Seq, "approval %s: the statement for record %d differs from the record (approver, role, decision, signed_at, signature or passkey assertion)", ap.ID, r.Seq)
	}
	if d.StatementSHA256 != "" && d.StatementSHA256 != sha256Hex([]byte(s.Statement)) {
		return problemf(ProblemApprovalMismatch, FileApprovals, r.Seq, "approval %s: record %d's statement_sha256 is not the hash of the statement", ap.ID, r.Seq)
	}
	return nil
}

// matchHeld holds an approval to the request record r that held it.
func matchHeld(ap *FleetApproval, r *rec) *Problem {
	if r.ApprovalID != ap.ID || !r.is(record.KindRequest, record.Pending) && !r.is(record.KindOverride, record.Pending) ||
		ap.Digest != r.Digest || ap.Action != r.Action || ap.App != r.App {
		return problemf(ProblemApprovalMismatch, FileApprovals, r.Seq, "approval %s is not the request record %d held (held, digest, action or app differ)", ap.ID, r.Seq)
	}
	return nil
}
