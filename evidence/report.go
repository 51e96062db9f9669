package evidence

import (
	"bytes"
	"fmt"
	"html/template"
	"strconv"
	"strings"
	"unicode/utf8"
)

type card struct {
	Label, Value, Note string
}

type kv struct{ K, V string }

type reportModel struct {
	Framework, App, Period        string
	FirstSeq, LastSeq, Records    uint64
	Cards                         []card
	Chain                         []kv
	Activity, Kinds               Table
	Overrides, Rejections, Refuse Table
	Controls                      []Control
	Included                      string
	Approvals                     int
	Files                         []string
}

func (b *builder) report(a *Anchor, m Mapping, approvals int) ([]byte, error) {
	rm := reportModel{
		Framework: a.Framework, App: a.App, FirstSeq: a.First.Seq, LastSeq: a.Last.Seq, Records: a.Records,
		Period: periodText(a), Controls: m.Controls, Approvals: approvals,
		Activity: b.activityTable(), Kinds: b.kindTable(), Overrides: b.overrideTable(),
		Rejections: b.rejections.out("Rejections", []string{"Approval", "Action", "Rejected by", "Signed at", "Reason given", "Record"},
			"No approver rejected a request in this range."),
		Refuse: b.refusals.out("Refused decisions", []string{"Record", "Approval", "Action", "Approver", "Refusal", "Detail"},
			"No decision was refused in this range."),
		Files: bundleFiles,
	}
	c := b.counts
	rm.Cards = []card{
		{"Records", u(b.records), fmt.Sprintf("seq %d to %d", a.First.Seq, a.Last.Seq)},
		{"Requests", u(c["requests"]), fmt.Sprintf("%s allowed, %s denied, %s held", u(c["requests_allow"]), u(c["requests_deny"]), u(c["requests_pending"]))},
		{"Signed approvals", u(c["signed_approve"]), fmt.Sprintf("%s tokens issued", u(c["tokens_issued"]))},
		{"Rejections", u(c["signed_reject"]), fmt.Sprintf("%s decisions refused", u(c["decisions_refused"]))},
		{"Overrides used", u(b.itemCount("ISO27001-A.12", "override_used")), fmt.Sprintf("%s requested", u(b.itemCount("ISO27001-A.12", "override_requested")))},
		{"Forwarded to the ERP", u(c["forwards"]), fmt.Sprintf("%s upstream errors", u(c["upstream_errors"]))},
	}
	switch {
	case a.IncludeApprovals && a.IncludeRejections:
		rm.Included = "every approval referenced by the range, with every signed statement"
	case a.IncludeApprovals:
		rm.Included = "approvals only: rejected approvals and rejection statements were left out at export (include_rejections=false)"
	case a.IncludeRejections:
		rm.Included = "rejections only: approved approvals and approval statements were left out at export (include_approvals=false); completeness of approvals cannot be checked from this bundle"
	default:
		rm.Included = "none: approvals were left out at export (include_approvals=false, include_rejections=false)"
	}
	cp := a.Checkpoint
	rm.Chain = []kv{
		{"Status", fmt.Sprintf("Intact: all %d records re-hashed at export, each linked to the one before", a.Records)},
		{"Joins the chain at", fmt.Sprintf("record %d, whose prev is %s", a.First.Seq, a.First.Prev)},
		{"Ends at", fmt.Sprintf("record %d, hash %s (%s)", a.Last.Seq, a.Last.Hash, a.Last.Time)},
		{"Signed head", anchorText(a)},
		{"Checkpoint", fmt.Sprintf("%s: record %d, hash %s", cp.Origin, cp.Seq, cp.Hash)},
	}
	var w bytes.Buffer
	if err := reportTemplate.Execute(&w, rm); err != nil {
		return nil, err
	}
	return showBidi(w.Bytes()), nil
}

// showBidi writes every bidirectional control character as visible text
// ([U+202E]): the template escapes markup, but a right-to-left override an
// agent put in a justification or a URL would still reorder what an auditor
// reads next to it (an amount, an approver). The report's own text has
// none, so this changes nothing else.
func showBidi(b []byte) []byte {
	if !bytes.ContainsFunc(b, isBidi) {
		return b
	}
	out := make([]byte, 0, len(b)+64)
	for _, r := range string(b) {
		if isBidi(r) {
			out = fmt.Appendf(out, "[U+%04X]", r)
			continue
		}
		out = utf8.AppendRune(out, r)
	}
	return out
}

func isBidi(r rune) bool {
	return r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069 || r == 0x200e || r == 0x200f || r == 0x061c
}

func periodText(a *Anchor) string {
	p := a.Period
	var parts []string
	if p.From != "" || p.To != "" {
		from, to := p.From, p.To
		if from == "" {
			from = "the start of the chain"
		}
		if to == "" {
			to = "the head at export"
		}
		parts = append(parts, fmt.Sprintf("%s to %s (end excluded)", from, to))
	}
	if p.FromSeq != 0 || p.ToSeq != 0 {
		to := "the head"
		if p.ToSeq != 0 {
			to = strconv.FormatUint(p.ToSeq, 10)
		}
		parts = append(parts, fmt.Sprintf("records %d to %s", max(p.FromSeq, 1), to))
	}
	if len(parts) == 0 {
		parts = append(parts, "the whole chain")
	}
	return strings.Join(parts, ", ")
}

var reportTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"shown": func(t Table) [][]string {
		if len(t.Rows) > showRows {
			return t.Rows[:showRows]
		}
		return t.Rows
	},
	"more": func(t Table) string {
		if shown := min(len(t.Rows), showRows); uint64(shown) < t.Total {
			return fmt.Sprintf("%d of %d shown; control-mapping.json has up to %d, records.jsonl all of them.", shown, t.Total, maxRows)
		}
		return ""
	},
	"runs":  func(s string) string { return limitRuns(s, showRows) },
	"short": shortTime,
	"badge": func(s string) string {
		if s == "evidenced" {
			return "ok"
		}
		return "none"
	},
	"status": statusWord,
}).Parse(reportHTML))

// reportHTML is one self-contained page: inline CSS, no script, no external
// asset of any kind, so that it renders the same offline years from now.
const reportHTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Evidence report: {{.Framework}}, {{.App}}, records {{.FirstSeq}} to {{.LastSeq}}</title>
<style>
:root{--ink:#1d2330;--muted:#5d6678;--line:#d8dce4;--band:#13294b;--ok:#1e6b3a;--okbg:#e5f3ea;--no:#7a5a00;--nobg:#fbf1d6;--bg:#f6f7f9}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.5 "Segoe UI",Helvetica,Arial,sans-serif}
header{background:var(--band);color:#fff;padding:28px 40px 24px}
header h1{margin:0 0 4px;font:600 24px/1.2 Georgia,"Times New Roman",serif;letter-spacing:.2px}
header .sub{opacity:.85}
header dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:16px 0 0}
header dt{opacity:.7}
header dd{margin:0}
main{max-width:1200px;margin:0 auto;padding:8px 40px 48px}
h2{font:600 19px/1.3 Georgia,"Times New Roman",serif;margin:36px 0 10px;padding-bottom:6px;border-bottom:2px solid var(--band)}
h3{font-size:15px;margin:22px 0 8px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:12px;margin-top:20px}
.card{background:#fff;border:1px solid var(--line);border-radius:6px;padding:12px 14px}
.card .v{font:600 26px/1.2 Georgia,serif}
.card .l{font-weight:600}
.card .n{color:var(--muted);font-size:12px}
table{width:100%;border-collapse:collapse;background:#fff;border:1px solid var(--line);margin:6px 0 4px;font-size:13px}
th,td{text-align:left;vertical-align:top;padding:6px 9px;border-bottom:1px solid var(--line)}
th{background:#eef1f6;font-weight:600;white-space:nowrap}
tr:nth-child(even) td{background:#fafbfc}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.mono,code{font-family:"SFMono-Regular",Consolas,"Liberation Mono",monospace;font-size:12px;word-break:break-all}
.badge{display:inline-block;padding:1px 9px;border-radius:10px;font-size:12px;font-weight:600;text-transform:uppercase;letter-spacing:.4px}
.badge.ok{color:var(--ok);background:var(--okbg);border:1px solid #b9dcc5}
.badge.none{color:var(--no);background:var(--nobg);border:1px solid #ecd9a0}
.control{background:#fff;border:1px solid var(--line);border-left:4px solid var(--band);border-radius:6px;padding:4px 20px 16px;margin:18px 0}
.control h3{font:600 17px/1.3 Georgia,serif;margin:14px 0 6px}
.control p{margin:6px 0}
.statement{font-weight:600}
.muted{color:var(--muted)}
.empty{color:var(--muted);font-style:italic;margin:4px 0 10px}
ul.policy{margin:4px 0 8px;padding-left:20px;color:var(--muted)}
.chain td:first-child{width:170px;font-weight:600}
footer{color:var(--muted);font-size:12px;border-top:1px solid var(--line);margin-top:40px;padding-top:12px}
@media print{body{background:#fff}header{color:#000;background:#fff;border-bottom:3px solid #000}.control,.card{break-inside:avoid}}
</style>
</head>
<body>
<header>
<h1>Evidence report &middot; {{.Framework}}</h1>
<div class="sub">Application <strong>{{.App}}</strong>, governed by uapk-proxy</div>
<dl>
<dt>Period</dt><dd>{{.Period}}</dd>
<dt>Records</dt><dd>{{.Records}} ledger records, seq {{.FirstSeq}} to {{.LastSeq}}</dd>
<dt>Approvals</dt><dd>{{.Approvals}} in approvals.json: {{.Included}}</dd>
</dl>
</header>
<main>
<section class="cards">
{{range .Cards}}<div class="card"><div class="l">{{.Label}}</div><div class="v">{{.Value}}</div><div class="n">{{.Note}}</div></div>
{{end}}</section>

<h2>Chain integrity</h2>
<table class="chain">
{{range .Chain}}<tr><td>{{.K}}</td><td class="mono">{{.V}}</td></tr>
{{end}}</table>
<p class="muted">Check this bundle offline: <code>uapk-proxy verify bundle.zip</code> checks every file against SHA256SUMS, its gateway signature, the chain from its anchor, every approval signature and that each approved request had all its approvals. Without uapk-proxy: <code>sha256sum -c SHA256SUMS</code>; <code>base64 -d SHA256SUMS.sig &gt; sig.bin &amp;&amp; openssl pkeyutl -verify -pubin -inkey keys/gateway.pub -rawin -in SHA256SUMS -sigfile sig.bin</code>; each record's hash is SHA-256 of its prev (32 bytes) followed by the record without "hash" in RFC 8785 canonical JSON.</p>

<h2>Activity</h2>
{{template "table" .Activity}}
{{template "table" .Kinds}}

<h2>Overrides</h2>
{{template "table" .Overrides}}

<h2>Rejections and refused decisions</h2>
{{template "table" .Rejections}}
{{template "table" .Refuse}}

<h2>Controls</h2>
<table>
<tr><th>Control</th><th>Title</th><th>Status</th><th>Kinds of evidence present</th></tr>
{{range .Controls}}<tr><td>{{.Section}}</td><td>{{.Title}}</td><td><span class="badge {{badge .Status}}">{{status .Status}}</span></td><td>{{.Presence}}</td></tr>
{{end}}</table>
{{range .Controls}}
<section class="control" id="{{.ID}}">
<h3>{{.Section}}: {{.Title}} <span class="badge {{badge .Status}}">{{status .Status}}</span></h3>
<p class="statement">{{.Statement}}</p>
<p><strong>Requirement.</strong> {{.Requirement}}</p>
<p><strong>Mechanism.</strong> {{.Mechanism}}</p>
<ul class="policy">{{range .Policy}}<li>{{.}}</li>{{end}}</ul>
<table>
<tr><th>Evidence</th><th class="num">Count</th><th>Records (seq)</th></tr>
{{range .Evidence}}<tr><td>{{.Description}}</td><td class="num">{{.Count}}</td><td class="mono">{{if .Count}}{{runs .Seqs}}{{else}}<span class="muted">none in this range</span>{{end}}</td></tr>
{{end}}</table>
{{range .Details}}{{template "table" .}}{{end}}
</section>
{{end}}

<footer>
Bundle files: {{range $i, $f := .Files}}{{if $i}}, {{end}}<code>{{$f}}</code>{{end}}.
This page is derived from records.jsonl, manifest.json and anchor.json; <code>uapk-proxy verify</code> rebuilds it from them and compares.
</footer>
</main>
</body>
</html>
{{define "table"}}<h3>{{.Title}}</h3>
{{if and (eq .Total 0) (not .Rows)}}<p class="empty">{{.Empty}}</p>
{{else}}<table>
<tr>{{range .Columns}}<th>{{.}}</th>{{end}}</tr>
{{range shown .}}<tr>{{range .}}<td>{{.}}</td>{{end}}</tr>
{{end}}</table>
{{with more .}}<p class="muted">{{.}}</p>{{end}}{{end}}{{end}}`
