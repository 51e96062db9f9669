// Package faults is the fault-injection suite of issue 17 (`make faults`):
// real `uapk-proxy serve` processes under load from a client whose every
// request carries a nonce, an upstream that logs the nonces it sees, and a
// checker that proves, after each scenario, that
//
//	(a) every acknowledged request is in the chain with its digest (and an
//	    allowed one has its forward or outcome record),
//	(b) every request the upstream saw has an allow record,
//	(c) the chain verifies (`uapk-proxy verify --data-dir`),
//	(d) nothing was forwarded twice.
//
// The scenarios (kill -9, ENOSPC, fsfreeze, MinIO killed and stopped, the
// ERP failing in five ways, held approvals across SIGTERM and kill -9,
// PostgreSQL killed) are the subtests of TestFaults; each check inside a
// scenario is a subtest of its own, so a failure names the property that
// broke. The suite prints one line per scenario at the end
// (`runs N requests N acknowledged N lost N duplicated N`) and writes the
// same lines to $FAULTS_SUMMARY when set. $FAULTS_RUNS multiplies the
// number of kill -9 rounds and of requests per scenario.
//
// The package has no code outside its tests.
package faults
