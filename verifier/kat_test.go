package verifier

import "testing"

// Known-answer vectors for the record hash (docs/reference.md#records).
// Each hash is reproduced without any Go code by:
//
// seq 1 (prev = 32 zero bytes):
//
//	( head -c 32 /dev/zero; printf '%s' '{"action":"create_journal_entry","app":"erp-agent","approval_id":"","data":{"amount":"1250.00","currency":"USD","lines":2,"memo":"accrual <Q1> & €"},"decision":"allow","digest":"11d8307e6a4a315d650c03e783033557a85b98346a076f05b1d5ee98fb4b7a12","kind":"request","policy":"05b3abf2579a5eb66403cd78be557fd860633a1fe2103c7642030defe32c657f","prev":"0000000000000000000000000000000000000000000000000000000000000000","reason":"auto_approve","seq":1,"time":"2026-01-15T14:30:00.123456789Z","v":1}' ) | sha256sum
//	670093f4acacbd1c306a391f8b91235700fd0a2518506efb610063987315d258  -
//
// seq 2 (prev = record 1's hash, hex-decoded into octal escapes, which
// every POSIX printf understands):
//
//	( printf '\147\000\223\364\254\254\275\034\060\152\071\037\213\221\043\127\000\375\012\045\030\120\156\373\141\000\143\230\163\025\322\130'; printf '%s' '{"action":"create_journal_entry","app":"erp-agent","approval_id":"","data":{"latency_ms":42,"request":1,"status":201},"decision":"allow","digest":"11d8307e6a4a315d650c03e783033557a85b98346a076f05b1d5ee98fb4b7a12","kind":"forward","policy":"05b3abf2579a5eb66403cd78be557fd860633a1fe2103c7642030defe32c657f","prev":"670093f4acacbd1c306a391f8b91235700fd0a2518506efb610063987315d258","reason":"","seq":2,"time":"2026-01-15T14:30:00.187000000Z","v":1}' ) | sha256sum
//	78035d161d50b88f1d6714cc590032594df7799c1fc11900f72e51ad95bc9182  -
//
// The same records, stored form, are in ../ledger/testdata/kat.jsonl,
// which the writer reproduces byte for byte (ledger's
// TestAppendReproducesKnownAnswer).
const (
	katBody1 = `{"action":"create_journal_entry","app":"erp-agent","approval_id":"","data":{"amount":"1250.00","currency":"USD","lines":2,"memo":"accrual <Q1> & €"},"decision":"allow","digest":"` + katDigest + `","kind":"request","policy":"` + katPolicy + `","prev":"` + zeroHash + `","reason":"auto_approve","seq":1,"time":"2026-01-15T14:30:00.123456789Z","v":1}`
	katBody2 = `{"action":"create_journal_entry","app":"erp-agent","approval_id":"","data":{"latency_ms":42,"request":1,"status":201},"decision":"allow","digest":"` + katDigest + `","kind":"forward","policy":"` + katPolicy + `","prev":"` + katHash1 + `","reason":"","seq":2,"time":"2026-01-15T14:30:00.187000000Z","v":1}`
)

func TestKnownAnswerHash(t *testing.T) {
	kat := readKAT(t)
	tests := []struct {
		name   string
		stored []byte
		body   string
		prev   string
		hash   string
	}{
		{"seq 1", kat[0], katBody1, zeroHash, katHash1},
		{"seq 2 chains from seq 1", kat[1], katBody2, katHash1, katHash2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, err := CanonicalWithoutHash(tt.stored)
			if err != nil {
				t.Fatal(err)
			}
			if string(body) != tt.body {
				t.Fatalf("canonical body:\n got %s\nwant %s", body, tt.body)
			}
			got, err := ComputeHash(tt.prev, body)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.hash {
				t.Fatalf("hash = %s, want %s", got, tt.hash)
			}
		})
	}
	// And the two records verify as a chain.
	rep, err := VerifyRecords(stream(kat...), "", 1)
	if err != nil || !rep.OK || rep.Head != (Head{Seq: 2, Hash: katHash2, Time: "2026-01-15T14:30:00.187000000Z"}) {
		t.Fatalf("kat chain: %+v %v", rep, err)
	}
}
