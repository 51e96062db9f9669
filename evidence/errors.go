package evidence

import (
	"errors"
	"fmt"
)

// Sentinel errors of Export and the HTTP handler. Match them with errors.Is:
// they are wrapped with the seq, file or approval concerned.
var (
	// ErrBadRange is an unusable range: unparsable dates, from after to.
	ErrBadRange = errors.New("bad range")
	// ErrEmptyRange means no record falls in the range; no bundle is made.
	ErrEmptyRange = errors.New("no records in the range")
	// ErrFramework is an unknown framework name.
	ErrFramework = errors.New("unknown framework: want SOX, ISO27001 or ALL")
	// ErrChainBroken means the records of the range do not form an intact
	// chain; Export refuses to certify them (run uapk-proxy verify).
	ErrChainBroken = errors.New("the chain is broken in the range")
	// ErrNoManifest means a record of the range was decided under a policy
	// whose manifest bytes are not available.
	ErrNoManifest = errors.New("manifest not available")
	// ErrManifestMismatch means a manifest was given that no record of the
	// range was decided under.
	ErrManifestMismatch = errors.New("manifest was not in force in the range")
	// ErrNoPrincipals means the range holds signed decisions made while the
	// chain named no principals (its config records are from before they
	// did) and no principals file was given, so approvers' keys cannot go
	// in the bundle.
	ErrNoPrincipals = errors.New("principals file needed")
	// ErrPrincipalsMismatch means a signed decision does not verify with the
	// key the principals in force (the chain's, or the file given) give its
	// approver.
	ErrPrincipalsMismatch = errors.New("principals do not match the signed decisions")
	// ErrPrincipalsDisagree means a principals file was given that is not
	// what the chain's config records say was in force for the range.
	ErrPrincipalsDisagree = errors.New("principals file disagrees with the chain")
	// ErrApprovalMismatch means the approvals store and the ledger disagree
	// on a decision: a passkey decision whose signature record does not
	// keep the same assertion.
	ErrApprovalMismatch = errors.New("approval store disagrees with the ledger")
	// ErrMissingApproval means a record names an approval the store lacks.
	ErrMissingApproval = errors.New("approval referenced by the ledger is missing")
	// ErrCheckpoint means the archive's checkpoint does not verify.
	ErrCheckpoint = errors.New("checkpoint does not verify")
	// ErrChanged means the records read twice (once to hash, once to write)
	// differ: the ledger file changed under the export.
	ErrChanged = errors.New("the ledger changed during the export")
	// ErrBusy is the HTTP handler's answer while MaxConcurrent exports run.
	ErrBusy = errors.New("too many exports running")
)

// Problem codes of Verify, stable: tools and tests match on them.
const (
	ProblemNotZip             = "not_a_zip"           // unreadable as a ZIP
	ProblemBadEntry           = "bad_entry"           // unsafe or duplicate name, unreadable entry
	ProblemMissingFile        = "missing_file"        // a bundle file, or one SHA256SUMS lists, is absent
	ProblemUnlistedFile       = "unlisted_file"       // a file SHA256SUMS does not list
	ProblemBadSums            = "bad_sums"            // SHA256SUMS malformed
	ProblemBadKey             = "bad_key"             // keys/gateway.pub unusable
	ProblemBadSignature       = "bad_signature"       // SHA256SUMS.sig does not verify
	ProblemHashMismatch       = "hash_mismatch"       // a file's SHA-256 differs from SHA256SUMS
	ProblemBadAnchor          = "bad_anchor"          // anchor.json malformed or contradicted by the records
	ProblemBadManifest        = "bad_manifest"        // manifest.json malformed, a policy without its manifest
	ProblemBadPrincipals      = "bad_principals"      // keys/principals.json malformed
	ProblemBadApprovals       = "bad_approvals"       // approvals.json malformed
	ProblemApprovalSignature  = "approval_signature"  // a signed statement does not verify with its approver's key
	ProblemApprovalMismatch   = "approval_mismatch"   // approvals.json disagrees with the ledger records
	ProblemMissingApproval    = "missing_approval"    // a record needs an approval approvals.json lacks
	ProblemIncompleteApproval = "incomplete_approval" // a forwarded request lacks its required approvals
	ProblemChain              = "chain_broken"        // records.jsonl is not an intact chain from its anchor
	ProblemBadCheckpoint      = "bad_checkpoint"      // a checkpoint note does not verify or contradicts the chain
	ProblemDerived            = "derived_mismatch"    // report or control mapping differs from what the records give
)

// Problem is the first thing wrong with a bundle.
type Problem struct {
	Code string `json:"code"`
	// Instance names the fleet instance whose part of a fleet bundle the
	// problem is in; "" in a single proxy's bundle.
	Instance string `json:"instance,omitempty"`
	File     string `json:"file,omitempty"`
	Seq      uint64 `json:"seq,omitempty"`
	Message  string `json:"message"`
}

func (p *Problem) Error() string { return p.Message }

func problemf(code, file string, seq uint64, format string, args ...any) *Problem {
	return &Problem{Code: code, File: file, Seq: seq, Message: fmt.Sprintf(format, args...)}
}
