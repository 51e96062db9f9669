package archive

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/uapk-gateway/uapk-proxy/checkpoint"
	"github.com/uapk-gateway/uapk-proxy/ledger"
	"github.com/uapk-gateway/uapk-proxy/record"
	"github.com/uapk-gateway/uapk-proxy/verifier"
)

// Problem.Reason codes. They are stable: tools and tests match on them.
const (
	ReasonRefused           = "store_refused"       // the bucket has no Object Lock or versioning, or cannot be read
	ReasonBadName           = "segment_bad_name"    // a key under segments/ that is not FIRST-LAST.jsonl
	ReasonGap               = "segment_gap"         // records missing between two segments (or before the first)
	ReasonOverlap           = "segment_overlap"     // two segments hold the same records
	ReasonMismatch          = "segment_mismatch"    // an archived record differs from the local chain's
	ReasonLocalMissing      = "local_missing"       // the archive holds a record the local chain lacks (truncated)
	ReasonChain             = "segment_chain"       // the archived records do not form a valid chain
	ReasonChecksum          = "checksum_mismatch"   // the server's SHA-256 differs from the bytes read
	ReasonNoObjectLock      = "object_lock_missing" // an S3 object without Object Lock retention
	ReasonRetention         = "retention_short"     // retain-until earlier than last record's time + retention
	ReasonCheckpointMissing = "checkpoint_missing"  // no checkpoint for a segment's last record
	ReasonCheckpointInvalid = "checkpoint_invalid"  // bad signature, unknown key, or not a checkpoint
	ReasonCheckpointHead    = "checkpoint_mismatch" // a checkpoint names another hash than the chain has
)

// Problem names the first thing wrong with the archive.
type Problem struct {
	Key    string `json:"key"` // the object where it shows
	Seq    uint64 `json:"seq,omitempty"`
	Reason string `json:"reason"` // an ArchiveReason* code
	Detail string `json:"detail"`
}

// Report is the result of Verify.
type Report struct {
	OK          bool            `json:"ok"`
	Store       string          `json:"store"`
	Segments    int             `json:"segments"`     // segments checked
	Checkpoints int             `json:"checkpoints"`  // checkpoints checked
	ArchivedSeq uint64          `json:"archived_seq"` // the archive covers records 1..ArchivedSeq
	LocalHead   uint64          `json:"local_head"`   // records after ArchivedSeq are not archived yet
	Anchors     []verifier.Head `json:"anchors,omitempty"`
	Problem     *Problem        `json:"problem,omitempty"`
}

// Verify checks the archive cfg names against the local chain, for
// `verify --archive`: the segments must cover records 1..N contiguously,
// each byte for byte equal to the local records and forming a valid chain;
// each segment's checkpoint must carry a valid signature by one of
// gatewayKeys (several, for a key that was replaced) and the segment's last
// hash; in S3 the bucket must pass the start-up check and every object must
// be under Object Lock until at least its last record's time plus
// cfg.RetentionYears. It stops at the first problem. Anchors, the signed
// heads, can be passed to Ledger.Verify to check the local chain reaches
// them. The error is for I/O and outages; archive problems are in the Report.
func Verify(ctx context.Context, l *ledger.Ledger, cfg Config, gatewayKeys ...ed25519.PublicKey) (Report, error) {
	if err := cfg.setDefaults(); err != nil {
		return Report{}, err
	}
	store, err := newStore(ctx, &cfg)
	if err != nil {
		return Report{}, err
	}
	defer closeIdle(store)
	return verify(ctx, l, &cfg, store, gatewayKeys)
}

type checker struct {
	ctx   context.Context
	l     *ledger.Ledger // nil: no local chain to compare with (ReadInstance)
	cfg   *Config
	store objStore
	keys  []ed25519.PublicKey
	chain *verifier.Verifier
	rep   Report
	// onRecord, when set, gets each archived record once the chain
	// verifier has taken it; an error from it stops the walk.
	onRecord func(seq uint64, raw []byte) error
	// learnKeys adds the gateway key each config record names to keys:
	// offline, the chain is the only place an instance's keys are written.
	learnKeys bool
	// onCheckpoint, when set, gets each checkpoint note once it verified.
	onCheckpoint func(seq uint64, note []byte)
}

func verify(ctx context.Context, l *ledger.Ledger, cfg *Config, store objStore, keys []ed25519.PublicKey) (Report, error) {
	v := &checker{
		ctx: ctx, l: l, cfg: cfg, store: store, keys: keys,
		chain: verifier.New(1, ledger.ZeroHash),
		rep:   Report{Store: cfg.storeID(), LocalHead: l.Head().Seq},
	}
	if len(keys) == 0 {
		return v.rep, errors.New("verify archive: no gateway public key given")
	}
	err := v.run()
	v.rep.OK = v.rep.Problem == nil && err == nil
	return v.rep, err
}

func (v *checker) fail(key string, seq uint64, reason, detail string, args ...any) error {
	v.rep.Problem = &Problem{Key: key, Seq: seq, Reason: reason, Detail: fmt.Sprintf(detail, args...)}
	return nil
}

func (v *checker) run() error {
	if _, err := v.store.check(v.ctx); err != nil {
		if errors.Is(err, ErrRefused) {
			return v.fail("", 0, ReasonRefused, "%v", err)
		}
		return err
	}
	base := v.cfg.base()
	segKeys, err := v.store.list(v.ctx, base+"/segments/")
	if err != nil {
		return err
	}
	type seg struct {
		key         string
		first, last uint64
	}
	var segs []seg
	for _, k := range segKeys {
		first, last, ok := parseSegmentName(strings.TrimPrefix(k, base+"/segments/"))
		if !ok {
			return v.fail(k, 0, ReasonBadName, "%s is not FIRST-LAST.jsonl with 20-digit sequence numbers", k)
		}
		segs = append(segs, seg{k, first, last})
	}
	// Names are zero-padded, so key order is seq order.
	next := uint64(1)
	for _, s := range segs {
		switch {
		case s.first > next:
			return v.fail(s.key, next, ReasonGap, "records %d-%d are in no archived segment", next, s.first-1)
		case s.first < next:
			return v.fail(s.key, s.first, ReasonOverlap, "segment starts at record %d, already archived in an earlier segment", s.first)
		}
		if done, err := v.segment(s.key, s.first, s.last); err != nil || done {
			return err
		}
		next = s.last + 1
		v.rep.ArchivedSeq = s.last
		v.rep.Segments++
	}
	return nil
}

func parseSegmentName(name string) (first, last uint64, ok bool) {
	a, b, ok := strings.Cut(strings.TrimSuffix(name, ".jsonl"), "-")
	if !ok || !strings.HasSuffix(name, ".jsonl") || len(a) != 20 || len(b) != 20 {
		return 0, 0, false
	}
	first, err1 := strconv.ParseUint(a, 10, 64)
	last, err2 := strconv.ParseUint(b, 10, 64)
	if err1 != nil || err2 != nil || first < 1 || last < first {
		return 0, 0, false
	}
	return first, last, true
}

// segment checks one segment and its checkpoint; done reports a problem.
func (v *checker) segment(key string, first, last uint64) (done bool, err error) {
	data, info, err := v.store.get(v.ctx, key)
	if errors.Is(err, errObjectNotFound) {
		return true, v.fail(key, first, ReasonGap, "%s is listed but has no current version", key)
	}
	if err != nil {
		return true, err
	}
	if info.StoredChecksum != "" && info.StoredChecksum != info.ChecksumSHA256 {
		return true, v.fail(key, first, ReasonChecksum, "the server's SHA-256 %s differs from the bytes read (%s)", info.StoredChecksum, info.ChecksumSHA256)
	}
	local, err := v.localRecords(first, last)
	if err != nil {
		return true, err
	}
	if len(data) == 0 || data[len(data)-1] != '\n' {
		return true, v.fail(key, last, ReasonMismatch, "%s does not end with a newline: cut short or not a segment", key)
	}
	lines := bytes.Split(data[:len(data)-1], []byte("\n"))
	for i := range max(len(lines), len(local), int(last-first+1)) {
		seq := first + uint64(i)
		switch {
		case i >= len(lines):
			return true, v.fail(key, seq, ReasonMismatch, "%s ends at record %d but its name says %d", key, seq-1, last)
		case seq > last:
			return true, v.fail(key, seq, ReasonMismatch, "%s has more lines than records %d-%d", key, first, last)
		case v.l != nil && i >= len(local):
			return true, v.fail(key, seq, ReasonLocalMissing, "record %d is archived in %s but missing from the local chain (head %d): the local chain was cut", seq, key, v.rep.LocalHead)
		case v.l != nil && !bytes.Equal(lines[i], local[i]):
			return true, v.fail(key, seq, ReasonMismatch, "record %d in %s differs from the local chain's record %d", seq, key, seq)
		}
		if !v.chain.Add(lines[i]) {
			p := v.chain.Finish().Problem
			return true, v.fail(key, p.Seq, ReasonChain, "%s: %s", p.Reason, p.Detail)
		}
		if v.learnKeys {
			v.learnKey(lines[i])
		}
		if v.onRecord != nil {
			if err := v.onRecord(seq, lines[i]); err != nil {
				return true, err
			}
		}
	}
	head := v.chain.Finish().Head
	if done := v.lock(key, last, info, head.Time); done {
		return true, nil
	}
	return v.checkCheckpoint(last, head)
}

// localRecords reads records first..last of the local chain; none
// without one.
func (v *checker) localRecords(first, last uint64) ([][]byte, error) {
	if v.l == nil {
		return nil, nil
	}
	local := make([][]byte, 0, last-first+1)
	err := v.l.Range(first, last, func(_ uint64, raw []byte) error {
		local = append(local, raw)
		return nil
	})
	return local, err
}

var kindConfig = []byte(`"kind":"` + record.KindConfig + `"`)

// learnKey adds the gateway key a config record names, if new. The
// verifier has already checked the record is part of the chain.
func (v *checker) learnKey(raw []byte) {
	if !bytes.Contains(raw, kindConfig) {
		return
	}
	var r struct {
		Kind record.Kind   `json:"kind"`
		Data record.Config `json:"data"`
	}
	if json.Unmarshal(raw, &r) != nil || r.Kind != record.KindConfig {
		return
	}
	k, err := base64.StdEncoding.DecodeString(r.Data.GatewayKey)
	if err != nil || len(k) != ed25519.PublicKeySize {
		return
	}
	if !slices.ContainsFunc(v.keys, func(x ed25519.PublicKey) bool { return bytes.Equal(x, k) }) {
		v.keys = append(v.keys, k)
	}
}

// lock checks an S3 object is under Object Lock long enough. The local
// store has no object lock, and says so with an empty mode.
func (v *checker) lock(key string, seq uint64, info objectInfo, lastTime string) bool {
	if v.cfg.S3 == nil {
		return false
	}
	if info.LockMode != "COMPLIANCE" && info.LockMode != "GOVERNANCE" {
		v.fail(key, seq, ReasonNoObjectLock, "%s (version %s) has no Object Lock retention", key, info.VersionID)
		return true
	}
	want := retainUntil(lastTime, v.cfg.RetentionYears).Truncate(time.Second)
	if info.RetainUntil.Before(want) {
		v.fail(key, seq, ReasonRetention, "%s is retained until %s, before %s (last record + %d years)",
			key, s3Time(info.RetainUntil), s3Time(want), v.cfg.RetentionYears)
		return true
	}
	return false
}

func (v *checker) checkCheckpoint(last uint64, head verifier.Head) (bool, error) {
	key := checkpointKey(v.cfg.base(), last)
	msg, info, err := v.store.get(v.ctx, key)
	if errors.Is(err, errObjectNotFound) {
		return true, v.fail(key, last, ReasonCheckpointMissing, "no checkpoint for record %d, the end of a segment", last)
	}
	if err != nil {
		return true, err
	}
	cp, err := checkpoint.Open(msg, v.cfg.Origin, v.keys...)
	if err != nil {
		return true, v.fail(key, last, ReasonCheckpointInvalid, "%v", err)
	}
	if cp.Size != last || cp.Hash != head.Hash {
		return true, v.fail(key, last, ReasonCheckpointHead, "checkpoint says record %d has hash %s; the chain has record %d with hash %s", cp.Size, cp.Hash, head.Seq, head.Hash)
	}
	if v.lock(key, last, info, head.Time) {
		return true, nil
	}
	v.rep.Checkpoints++
	if v.onCheckpoint != nil {
		v.onCheckpoint(cp.Size, msg)
	}
	v.rep.Anchors = append(v.rep.Anchors, verifier.Head{Seq: cp.Size, Hash: cp.Hash, Time: head.Time})
	return false, nil
}
