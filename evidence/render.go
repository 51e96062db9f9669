package evidence

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/rules"
)

// Table is a detail table of the report and the control mapping. Rows holds
// at most 1,000 rows (the first ones in chain order); Total counts them all.
type Table struct {
	Title   string     `json:"title"`
	Columns []string   `json:"columns"`
	Rows    [][]string `json:"rows"`
	Total   uint64     `json:"total"`
	Empty   string     `json:"empty,omitempty"` // what it means that there are none
}

// Evidence is one kind of record that evidences a control.
type Evidence struct {
	ID          string `json:"id"`
	Description string `json:"description"`
	// Selector is a jq filter that picks these records out of
	// records.jsonl: jq -c 'SELECTOR' records.jsonl.
	Selector      string `json:"selector"`
	Count         uint64 `json:"count"`
	Seqs          string `json:"seqs"` // runs: "3, 7-9"
	SeqsTruncated bool   `json:"seqs_truncated,omitempty"`
}

// Control is one control of the mapping.
type Control struct {
	ID          string     `json:"id"`
	Framework   string     `json:"framework"`
	Section     string     `json:"section"`
	Title       string     `json:"title"`
	Requirement string     `json:"requirement"`
	Mechanism   string     `json:"mechanism"`
	Policy      []string   `json:"policy_in_force"`
	Status      string     `json:"status"` // "evidenced" or "no_evidence"
	Statement   string     `json:"statement"`
	Evidence    []Evidence `json:"evidence"`
	Details     []Table    `json:"details"`
}

// Mapping is control-mapping.json.
type Mapping struct {
	Format    string    `json:"format"`
	App       string    `json:"app"`
	Framework string    `json:"framework"`
	FirstSeq  uint64    `json:"first_seq"`
	LastSeq   uint64    `json:"last_seq"`
	From      string    `json:"from"`
	To        string    `json:"to"`
	Controls  []Control `json:"controls"`
}

// frameworkControls says which controls each framework's bundle maps.
// SOX bundles carry the ISO 27001 controls as well: the bundle's definition lists all
// five, and SOX 404 testing of IT general controls relies on exactly these.
func frameworkControls(fw string) func(framework string) bool {
	switch fw {
	case "ISO27001":
		return func(f string) bool { return f == "ISO27001" }
	default: // SOX, ALL
		return func(string) bool { return true }
	}
}

// NormalizeFramework returns the canonical framework name, or ErrFramework.
func NormalizeFramework(s string) (string, error) {
	switch strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s), " ", "")) {
	case "", "SOX":
		return "SOX", nil
	case "ISO27001", "ISO-27001", "ISO/IEC27001":
		return "ISO27001", nil
	case "ALL":
		return "ALL", nil
	}
	return "", fmt.Errorf("%w: %q", ErrFramework, s)
}

func (b *builder) mapping(a *Anchor) Mapping {
	m := Mapping{Format: "uapk-control-mapping/1", App: a.App, Framework: a.Framework,
		FirstSeq: a.First.Seq, LastSeq: a.Last.Seq, From: a.First.Time, To: a.Last.Time}
	keep := frameworkControls(a.Framework)
	dual, change := b.dualList(), b.changeList()
	for _, def := range controlDefs {
		if !keep(def.framework) {
			continue
		}
		c := Control{ID: def.id, Framework: def.framework, Section: def.section, Title: def.title,
			Requirement: def.requirement, Mechanism: def.mechanism, Policy: b.policyLines(def.id)}
		var present []string
		for _, it := range b.items {
			if it.control != def.id {
				continue
			}
			e := Evidence{ID: it.id, Description: it.desc, Selector: it.spec.jq(dual, change), Count: it.seqs.count,
				Seqs: it.seqs.text(maxRuns), SeqsTruncated: it.seqs.truncated}
			if it.id == "chain" {
				e.Selector = "."
			}
			c.Evidence = append(c.Evidence, e)
			if e.Count > 0 {
				present = append(present, fmt.Sprintf("%d %s", e.Count, e.Description))
			}
		}
		c.Details = b.controlTables(def.id, a)
		if len(present) > 0 {
			c.Status = "evidenced"
			c.Statement = "Evidenced in this range by " + strings.Join(present, "; ") + "."
		} else {
			c.Status = "no_evidence"
			c.Statement = fmt.Sprintf("No record of this range (seq %d to %d) evidences this control: %s.", a.First.Seq, a.Last.Seq, def.none)
		}
		if def.id == "SOX-802" {
			c.Statement = fmt.Sprintf("All %d records of the range are hash-chained and anchored (%s).", b.records, anchorText(a))
			if b.itemCount("SOX-802", "archive") == 0 {
				c.Statement += " No segment was archived in this range: its Object Lock retention is not evidenced by this bundle (archiving may be off, or the segments holding these records were sealed later; see the checkpoint)."
			}
		}
		m.Controls = append(m.Controls, c)
	}
	return m
}

func (b *builder) itemCount(control, id string) uint64 {
	for _, it := range b.items {
		if it.control == control && it.id == id {
			return it.seqs.count
		}
	}
	return 0
}

func anchorText(a *Anchor) string {
	c := a.Checkpoint
	switch {
	case c.Source == sourceArchive && c.Covers == coversLastRecord:
		return fmt.Sprintf("archived checkpoint %s signed the range's last record, %d", c.Origin, c.Seq)
	case c.Source == sourceArchive:
		return fmt.Sprintf("archived checkpoint %s signed record %d, after the range; the archived segments in between link it", c.Origin, c.Seq)
	case c.Covers == coversLastRecord:
		return fmt.Sprintf("no archived checkpoint covers the range yet; the gateway signed the head, the range's last record %d, at export", c.Seq)
	default:
		return fmt.Sprintf("no archived checkpoint covers the range yet; the gateway signed the head, record %d, at export", c.Seq)
	}
}

// policyLines describe, per manifest in force, the settings a control
// rests on.
func (b *builder) policyLines(control string) []string {
	var out []string
	for _, pu := range b.policies {
		m := pu.m
		pre := fmt.Sprintf("manifest %s (version %s, records %d-%d): ", short(pu.hash), m.Version, pu.first, pu.last)
		var parts []string
		for _, act := range m.Actions {
			switch control {
			case "SOX-302":
				if act.Policy == rules.DualApproval {
					s := fmt.Sprintf("%s needs DUAL_APPROVAL by %s", act.Name, strings.Join(act.RolesRequired, " and "))
					if act.BusinessHoursOnly {
						s += ", business hours only"
					}
					parts = append(parts, s)
				}
			case "SOX-404":
				if act.Policy == rules.RequireApproval {
					s := fmt.Sprintf("%s needs REQUIRE_APPROVAL by %s", act.Name, strings.Join(act.RolesRequired, " or "))
					if act.AmountCap != nil {
						esc := "one cfo approval"
						if act.Escalation != nil {
							esc = fmt.Sprintf("%s by %s", act.Escalation.Policy, strings.Join(act.Escalation.RolesRequired, " and "))
						}
						s += fmt.Sprintf("; above %s: %s", act.AmountCap.FloatString(0), esc)
					}
					parts = append(parts, s)
				}
				if len(act.RolesAllowed) > 0 {
					parts = append(parts, fmt.Sprintf("%s callers must hold %s", act.Name, strings.Join(act.RolesAllowed, " or ")))
				}
			case "ISO27001-A.9":
				if len(act.RolesAllowed) > 0 {
					parts = append(parts, fmt.Sprintf("%s: roles_allowed %s", act.Name, strings.Join(act.RolesAllowed, ", ")))
				}
				if act.Policy == rules.DenyPolicy {
					parts = append(parts, act.Name+": DENY")
				}
			}
		}
		switch control {
		case "SOX-ITGC-CM":
			parts = append(parts, changePolicy(m)...)
		case "SOX-802":
			parts = append(parts, fmt.Sprintf("audit.retention_years %d, storage_class %s, immutable %t", m.Audit.RetentionYears, m.Audit.StorageClass, m.Audit.Immutable))
			if len(m.Denylist) > 0 {
				parts = append(parts, "denylist "+strings.Join(m.Denylist, ", "))
			}
		case "ISO27001-A.9":
			parts = append(parts, "default_policy "+string(m.DefaultPolicy))
		case "ISO27001-A.12":
			if m.BusinessHours != nil {
				parts = append(parts, "business hours "+m.BusinessHours.String())
			}
			var bh []string
			for _, act := range m.Actions {
				if act.BusinessHoursOnly {
					bh = append(bh, act.Name)
				}
				if act.AmountCap != nil {
					parts = append(parts, fmt.Sprintf("%s amount_cap %s", act.Name, act.AmountCap.FloatString(0)))
				}
			}
			if len(bh) > 0 {
				parts = append(parts, "business_hours_only: "+strings.Join(bh, ", "))
			}
			if len(m.Denylist) > 0 {
				parts = append(parts, "denylist "+strings.Join(m.Denylist, ", "))
			}
			if m.Override != nil {
				parts = append(parts, fmt.Sprintf("overrides approved by %s, at most %s", strings.Join(m.Override.RolesRequired, " or "), m.Override.MaxDuration))
			} else {
				parts = append(parts, "no override section: overrides cannot be granted")
			}
		}
		if len(parts) == 0 {
			parts = append(parts, "no setting of this manifest bears on this control")
		}
		out = append(out, pre+strings.Join(parts, "; "))
	}
	if len(out) == 0 {
		out = append(out, "no record of the range names a manifest")
	}
	return out
}

func (b *builder) controlTables(id string, a *Anchor) []Table {
	switch id {
	case "SOX-302":
		t := Table{Title: "Financial reports and who signed them",
			Columns: []string{"Approval", "Action", "Requested", "Required roles", "Signed", "Outcome"},
			Total:   b.apprTotal[1], Empty: "No DUAL_APPROVAL request or decision in this range."}
		for _, r := range b.apprOrder[1] {
			t.Rows = append(t.Rows, []string{r.id, r.action, requested(r.reqSeq, r.reqTime), strings.Join(r.roles, ", "),
				strings.Join(r.decisions, "; "), r.outcome})
		}
		return []Table{t}
	case "SOX-404":
		t := Table{Title: "Journal entries and other approval-gated requests",
			Columns: []string{"Approval", "Action", "Requested", "Amount", "Required roles", "On behalf of", "Decisions", "Refused attempts", "Outcome"},
			Total:   b.apprTotal[0], Empty: "No approval-gated request or decision in this range."}
		for _, r := range b.apprOrder[0] {
			t.Rows = append(t.Rows, []string{r.id, r.action, requested(r.reqSeq, r.reqTime), r.amount, strings.Join(r.roles, ", "),
				r.onBehalf, strings.Join(r.decisions, "; "), strconv.Itoa(r.refused), r.outcome})
		}
		return []Table{t}
	case "SOX-ITGC-CM":
		t := Table{Title: "Code changes and who reviewed them",
			Columns: []string{"Approval", "Action", "Requested", "Author (on behalf of)", "Required roles", "Reviews", "Refused attempts", "Outcome"},
			Total:   b.chgTotal, Empty: "No code change was held, reviewed or released in this range."}
		for _, r := range b.chgOrder {
			t.Rows = append(t.Rows, []string{r.id, r.action, requested(r.reqSeq, r.reqTime), r.onBehalf, strings.Join(r.roles, ", "),
				strings.Join(r.decisions, "; "), strconv.Itoa(r.refused), r.outcome})
		}
		return []Table{t}
	case "SOX-802":
		ret := Table{Title: "Retention policy in force", Columns: []string{"Manifest (SHA-256)", "Version", "Records", "retention_years", "storage_class", "immutable"},
			Empty: "No record of the range names a manifest."}
		for _, pu := range b.policies {
			ret.Rows = append(ret.Rows, []string{pu.hash, pu.m.Version, fmt.Sprintf("%d-%d (%d)", pu.first, pu.last, pu.count),
				strconv.Itoa(pu.m.Audit.RetentionYears), pu.m.Audit.StorageClass, strconv.FormatBool(pu.m.Audit.Immutable)})
		}
		ret.Total = uint64(len(ret.Rows))
		anchor := Table{Title: "Anchor of this bundle", Columns: []string{"Source", "Origin", "Seq", "Hash", "Covers"},
			Rows:  [][]string{{a.Checkpoint.Source, a.Checkpoint.Origin, strconv.FormatUint(a.Checkpoint.Seq, 10), a.Checkpoint.Hash, a.Checkpoint.Covers}},
			Total: 1}
		return []Table{
			ret, anchor,
			b.archives.out("Archived segments", []string{"Record", "Object", "Records", "Lock mode", "Retain until", "SHA-256 (base64)", "Store"},
				"No segment was archived in this range."),
			b.cps.out("Signed checkpoints", []string{"Record", "Origin", "Seq", "Hash", "Object"}, "No checkpoint was signed in this range."),
			b.configs.out("Configuration records", []string{"Record", "Time", "Manifest", "Version", "Proxy", "Gateway key", "Manifest file"},
				"No proxy start in this range."),
		}
	case "ISO27001-A.9":
		t := Table{Title: "Capability tokens", Columns: []string{"Approval", "Action", "App", "Token id", "Issued", "Expires", "Bound to digest", "Used by"},
			Total: b.capTotal, Empty: "No capability token was issued in this range."}
		for _, c := range b.capOrder {
			used := "not used in the range"
			if c.used != 0 {
				used = seqText(c.used)
			}
			t.Rows = append(t.Rows, []string{c.approval, c.action, c.app, c.tokenID, seqText(c.seq) + " " + c.issued, c.expires, short(c.digest), used})
		}
		return []Table{t, b.denialTable()}
	case "ISO27001-A.12":
		return []Table{b.overrideTable()}
	}
	return nil
}

func requested(seq uint64, t string) string {
	if seq == 0 {
		return "before this range"
	}
	return seqText(seq) + " " + shortTime(t)
}

func (t *table) out(title string, cols []string, empty string) Table {
	return Table{Title: title, Columns: cols, Rows: t.rows, Total: t.total, Empty: empty}
}

func (b *builder) overrideTable() Table {
	t := Table{Title: "Overrides and their approvals",
		Columns: []string{"Override", "Action", "Requested by", "Duration", "Justification", "Requested", "Decisions", "Token", "Uses"},
		Total:   b.ovrTotal, Empty: "No override was requested, decided or used in this range."}
	for _, o := range b.ovrOrder {
		uses := "none"
		if o.uses.count > 0 {
			uses = fmt.Sprintf("%d: %s", o.uses.count, o.uses.text(20))
		}
		t.Rows = append(t.Rows, []string{o.id, o.action, o.requestedBy, o.duration, o.justification, requested(o.reqSeq, o.reqTime),
			strings.Join(o.decisions, "; "), o.token, uses})
	}
	return t
}

func (b *builder) denialTable() Table {
	t := Table{Title: "Denials by reason", Columns: []string{"Reason", "Requests"}, Empty: "No request was denied in this range."}
	for _, k := range sortedKeys(b.denials) {
		t.Rows = append(t.Rows, []string{k, strconv.FormatUint(b.denials[k], 10)})
	}
	t.Total = uint64(len(t.Rows))
	return t
}

func (b *builder) activityTable() Table {
	t := Table{Title: "Requests by action and decision", Columns: []string{"Action", string(record.Allow), string(record.Deny), string(record.Pending), "total"},
		Empty: "No request in this range."}
	var tot [4]uint64
	for _, k := range sortedKeys(b.byAction) {
		c := b.byAction[k]
		t.Rows = append(t.Rows, []string{k, u(c[0]), u(c[1]), u(c[2]), u(c[0] + c[1] + c[2] + c[3])})
		for i := range tot {
			tot[i] += c[i]
		}
	}
	t.Total = uint64(len(t.Rows))
	if t.Total > 0 {
		t.Rows = append(t.Rows, []string{"all actions", u(tot[0]), u(tot[1]), u(tot[2]), u(tot[0] + tot[1] + tot[2] + tot[3])})
	}
	return t
}

func (b *builder) kindTable() Table {
	t := Table{Title: "Records by kind", Columns: []string{"Kind", "Records"}}
	for _, k := range sortedKeys(b.byKind) {
		t.Rows = append(t.Rows, []string{k, u(b.byKind[k])})
	}
	t.Total = uint64(len(t.Rows))
	return t
}

func u(n uint64) string { return strconv.FormatUint(n, 10) }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (m Mapping) json() ([]byte, error) {
	out, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// markdown renders the mapping for people: one section per control.
func (m Mapping) markdown(a *Anchor) []byte {
	var w bytes.Buffer
	fmt.Fprintf(&w, "# Control mapping: %s, %s\n\n", m.Framework, m.App)
	fmt.Fprintf(&w, "Records %d to %d of the ledger (%s to %s), %d records.", m.FirstSeq, m.LastSeq, m.From, m.To, a.Records)
	fmt.Fprintf(&w, " Anchor: %s.\n\n", anchorText(a))
	w.WriteString("Each control lists the mechanism that serves it, the settings in force, and the records that evidence it ")
	w.WriteString("(by seq; `jq -c 'SELECTOR' records.jsonl` lists them). `control-mapping.json` has the same content for tools.\n\n")
	w.WriteString("| Control | Title | Status | Kinds of evidence present |\n|---|---|---|---|\n")
	for _, c := range m.Controls {
		fmt.Fprintf(&w, "| %s | %s | %s | %s |\n", mdCell(c.Section), mdCell(c.Title), statusWord(c.Status), c.Presence())
	}
	for _, c := range m.Controls {
		fmt.Fprintf(&w, "\n## %s: %s\n\n", c.Section, c.Title)
		fmt.Fprintf(&w, "**Status: %s.** %s\n\n", statusWord(c.Status), c.Statement)
		fmt.Fprintf(&w, "**Requirement.** %s\n\n", c.Requirement)
		fmt.Fprintf(&w, "**Mechanism.** %s\n\n", c.Mechanism)
		w.WriteString("**Policy in force.**\n\n")
		for _, p := range c.Policy {
			fmt.Fprintf(&w, "- %s\n", p)
		}
		w.WriteString("\n| Evidence | Count | Records | Selector |\n|---|---:|---|---|\n")
		for _, e := range c.Evidence {
			seqs := e.Seqs
			if e.Count == 0 {
				seqs = "none in this range"
			} else {
				seqs = limitRuns(seqs, showRows)
			}
			fmt.Fprintf(&w, "| %s | %d | %s | `%s` |\n", mdCell(e.Description), e.Count, mdCell(seqs), strings.ReplaceAll(e.Selector, "|", `\|`))
		}
		for _, t := range c.Details {
			fmt.Fprintf(&w, "\n### %s\n\n", t.Title)
			writeMDTable(&w, t)
		}
	}
	return w.Bytes()
}

func writeMDTable(w *bytes.Buffer, t Table) {
	if t.Total == 0 && len(t.Rows) == 0 {
		fmt.Fprintf(w, "%s\n", t.Empty)
		return
	}
	w.WriteString("|")
	for _, c := range t.Columns {
		w.WriteString(" " + mdCell(c) + " |")
	}
	w.WriteString("\n|")
	for range t.Columns {
		w.WriteString("---|")
	}
	w.WriteString("\n")
	for i, r := range t.Rows {
		if i == showRows {
			break
		}
		w.WriteString("|")
		for _, c := range r {
			w.WriteString(" " + mdCell(c) + " |")
		}
		w.WriteString("\n")
	}
	if shown := min(len(t.Rows), showRows); uint64(shown) < t.Total {
		fmt.Fprintf(w, "\n%d of %d shown; control-mapping.json has up to %d, records.jsonl all of them.\n", shown, t.Total, maxRows)
	}
}

func limitRuns(s string, n int) string {
	parts := strings.SplitN(s, ", ", n+1)
	if len(parts) <= n {
		return s
	}
	return strings.Join(parts[:n], ", ") + ", … (see control-mapping.json)"
}

func mdCell(s string) string {
	s = strings.ReplaceAll(s, "\\", "\\\\")
	s = strings.ReplaceAll(s, "|", "\\|")
	s = strings.ReplaceAll(s, "\r", " ")
	s = strings.ReplaceAll(s, "\n", " ")
	for _, c := range []string{"<", ">", "`", "*", "[", "]"} {
		s = strings.ReplaceAll(s, c, "\\"+c)
	}
	return s
}

func statusWord(s string) string {
	if s == "evidenced" {
		return "evidenced"
	}
	return "no evidence"
}

// Presence says how many of the control's kinds of evidence occur.
func (c Control) Presence() string {
	n := 0
	for _, e := range c.Evidence {
		if e.Count > 0 {
			n++
		}
	}
	return fmt.Sprintf("%d of %d", n, len(c.Evidence))
}

// changePolicy describes what a manifest requires of its code changes.
func changePolicy(m *rules.Manifest) []string {
	var parts []string
	for _, act := range m.Actions {
		if !isChangeAction(act) {
			continue
		}
		var s string
		switch {
		case m.Denylisted(act.Name):
			s = act.Name + " denylisted"
		case act.Policy == rules.DenyPolicy:
			s = act.Name + ": DENY"
		case act.Policy == rules.DualApproval:
			s = fmt.Sprintf("%s needs DUAL_APPROVAL by %s", act.Name, strings.Join(act.RolesRequired, " and "))
		case act.Policy == rules.RequireApproval:
			s = fmt.Sprintf("%s needs REQUIRE_APPROVAL by %s", act.Name, strings.Join(act.RolesRequired, " or "))
		default:
			s = fmt.Sprintf("%s is %s: NOT reviewed", act.Name, act.Policy)
		}
		if len(act.RolesAllowed) > 0 {
			s += fmt.Sprintf(", on behalf of a %s", strings.Join(act.RolesAllowed, " or "))
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		parts = append(parts, "no action of this manifest is a code change (named merge… or push…, or approved by a functional_reviewer or security_reviewer)")
	}
	return parts
}
