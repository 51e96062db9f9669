package ledger

import (
	"context"
	"errors"
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
