package ledger

import (
	"bytes"
	"context"
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/uapk-gateway/uapk-proxy/verifier"
)

// Scan is how the verifier reads the file; the verifier's own tests
// (../verifier) tamper with real files. These two hold Scan to its promises
// of bounded transactions and cancellation.

func TestVerifyHonoursContext(t *testing.T) {
	l := openTemp(t, Options{})
	appendN(t, l, 2)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := verifier.Verify(ctx, l); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

func TestVerifyAcrossChunksWhileAppending(t *testing.T) {
	defer func(n int) { chunkRecords = n }(chunkRecords)
	chunkRecords = 4

	l := openTemp(t, Options{})
	appendN(t, l, 10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 30 {
			if _, err := l.Append(context.Background(), entry(i)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for range 5 {
		rep, err := verifier.Verify(context.Background(), l)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK || rep.Records < 10 {
			t.Fatalf("verify beside a writer: %+v %+v", rep, rep.Problem)
		}
	}
	<-done
	mustVerify(t, l, 40)
}

// TestRangeBorrowIsRange: RangeBorrow visits what Range visits, the same
// bytes in the same order, across chunk boundaries, sub-ranges, records
// still only in the journal, and a read-only ledger's journal overlay.
func TestRangeBorrowIsRange(t *testing.T) {
	defer func(n int) { chunkRecords = n }(chunkRecords)
	chunkRecords = 3
	collect := func(l *Ledger, borrow bool, from, to uint64) (seqs []uint64, raws [][]byte) {
		fn := func(seq uint64, raw []byte) error {
			seqs = append(seqs, seq)
			raws = append(raws, bytes.Clone(raw))
			return nil
		}
		var err error
		if borrow {
			err = l.RangeBorrow(from, to, fn)
		} else {
			err = l.Range(from, to, fn)
		}
		if err != nil {
			t.Fatal(err)
		}
		return seqs, raws
	}
	same := func(t *testing.T, l *Ledger, from, to uint64, want int) {
		t.Helper()
		s1, r1 := collect(l, false, from, to)
		s2, r2 := collect(l, true, from, to)
		if len(s1) != want || !slices.Equal(s1, s2) {
			t.Fatalf("%d-%d: Range %v, RangeBorrow %v, want %d records", from, to, s1, s2, want)
		}
		for i := range r1 {
			if !bytes.Equal(r1[i], r2[i]) {
				t.Fatalf("record %d differs", s1[i])
			}
		}
	}
	l := openTemp(t, Options{})
	appendN(t, l, 10) // journaled; RangeBorrow must apply them first
	same(t, l, 1, 10, 10)
	same(t, l, 0, math.MaxUint64, 10)
	same(t, l, 4, 8, 5)
	same(t, l, 11, 20, 0)
	stop := errors.New("stop")
	n := 0
	if err := l.RangeBorrow(1, 10, func(uint64, []byte) error {
		if n++; n == 5 {
			return stop
		}
		return nil
	}); !errors.Is(err, stop) || n != 5 {
		t.Fatalf("stopping: %v after %d", err, n)
	}

	img := makeCrashImage(t)
	path := img.write(t)
	ro, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	same(t, ro, 1, math.MaxUint64, len(img.recs))
	same(t, ro, img.applied, img.applied+1, 2)
}

// TestScanBatchesIsScan: the batched read hands out exactly what Scan
// does, key for key and byte for byte, with the same head, across
// transactions; and a stray key below record 1 is seen too.
func TestScanBatchesIsScan(t *testing.T) {
	defer func(n int) { chunkRecords = n }(chunkRecords)
	chunkRecords = 4
	l := openTemp(t, Options{})
	appendN(t, l, 11)
	type kv struct{ k, v string }
	var want, got []kv
	wantHead, err := l.Scan(context.Background(), func(k, v []byte) error {
		want = append(want, kv{string(k), string(v)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var keys, raws [][]byte
	head, err := l.ScanBatches(context.Background(), func(ks, rs [][]byte) error {
		if len(ks) > chunkRecords || len(ks) != len(rs) {
			t.Fatalf("a batch of %d keys and %d records", len(ks), len(rs))
		}
		keys, raws = append(keys, ks...), append(raws, rs...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range keys { // kept past their call, as promised
		got = append(got, kv{string(keys[i]), string(raws[i])})
	}
	if !slices.Equal(got, want) || string(head) != string(wantHead) || len(got) != 11 {
		t.Fatalf("ScanBatches gave %d records, head %s; Scan %d, head %s", len(got), head, len(want), wantHead)
	}
	stop := errors.New("stop")
	if _, err := l.ScanBatches(context.Background(), func(_, _ [][]byte) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("fn's error: %v", err)
	}
}
