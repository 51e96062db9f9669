package ledger

import (
	"context"
	"errors"
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
