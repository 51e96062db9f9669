package evidence

// Bundle file names (docs/reference.md#evidence-bundle), in the sorted order they have in the ZIP.
const (
	FileSums          = "SHA256SUMS"
	FileSumsSig       = "SHA256SUMS.sig"
	FileAnchor        = "anchor.json"
	FileApprovals     = "approvals.json"
	FileMappingJSON   = "control-mapping.json"
	FileMappingMD     = "control-mapping.md"
	FileGatewayPub    = "keys/gateway.pub"
	FilePrincipals    = "keys/principals.json"
	FileManifest      = "manifest.json"
	FileRecords       = "records.jsonl"
	FileReport        = "report.html"
	bundleFormat      = "uapk-evidence-bundle/1"
	generatorVersion  = "uapk-proxy evidence 2" // 2: the change-management control (SOX-ITGC-CM)
	sourceArchive     = "archive"
	sourceLiveHead    = "live_head"
	coversLastRecord  = "last_record"
	coversBeyondRange = "beyond_range"
)

// bundleFiles are every file a bundle has.
var bundleFiles = []string{
	FileSums, FileSumsSig, FileAnchor, FileApprovals, FileMappingJSON, FileMappingMD,
	FileGatewayPub, FilePrincipals, FileManifest, FileRecords, FileReport,
}

// Anchor is anchor.json: how the range links to the chain (the prev of its
// first record), what it ends on, and the signed head that covers it.
type Anchor struct {
	Format string `json:"format"`
	// Generator names the code that wrote the derived files (report,
	// control mapping); Verify rebuilds them only when it is its own.
	Generator         string     `json:"generator"`
	App               string     `json:"app"`
	Framework         string     `json:"framework"`
	IncludeApprovals  bool       `json:"include_approvals"`
	IncludeRejections bool       `json:"include_rejections"`
	Period            Period     `json:"period"`
	Records           uint64     `json:"records"`
	First             Link       `json:"first"`
	Last              Link       `json:"last"`
	Checkpoint        Checkpoint `json:"checkpoint"`
}

// Period is the range as asked for; First and Last say what it selected.
type Period struct {
	From    string `json:"from,omitempty"` // RFC 3339, inclusive
	To      string `json:"to,omitempty"`   // RFC 3339, exclusive
	FromSeq uint64 `json:"from_seq,omitempty"`
	ToSeq   uint64 `json:"to_seq,omitempty"`
}

// Link is a record at one end of the range.
type Link struct {
	Seq  uint64 `json:"seq"`
	Time string `json:"time"`
	Prev string `json:"prev,omitempty"` // first record only: where the range joins the chain
	Hash string `json:"hash"`
}

// Checkpoint is the signed head that covers the range: the latest archived
// checkpoint whose seq is at least the range's last, or, when the archive
// has none that far, the chain's head signed by the gateway key at export
// (Source "live_head"), which is weaker: it was made when the bundle was.
type Checkpoint struct {
	Source string `json:"source"` // "archive" or "live_head"
	Origin string `json:"origin"`
	Seq    uint64 `json:"seq"`
	Hash   string `json:"hash"`
	// Covers is "last_record" when the checkpoint is the range's last
	// record (checked against records.jsonl), "beyond_range" when it is a
	// later record: the archive's segments between link the two.
	Covers string `json:"covers"`
	Note   string `json:"note"` // the C2SP signed note, verbatim
}
