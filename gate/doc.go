// Package gate is where every request is decided and recorded, whichever
// door it came through. It takes a transport-neutral Call, asks the rules
// for a decision, applies what the rules leave to it (the app check,
// approvals presented, override tokens, cumulative_cap, which needs the
// sums of requests already let through), writes the request record durably,
// and returns a Verdict value. It knows nothing of HTTP: the doors (package
// proxy) translate their native requests into Calls and Verdicts into
// status codes, headers and bodies.
//
// # Where things happen
//
//   - the policy decision: rules.Engine.Decide
//   - the verdict and its request record: Gate.Check (this package)
//   - every change of an approval's state: package approvals
//   - the sums behind cumulative_cap: the Cumulative interface, kept in the
//     ledger's file by internal/cumulative
//   - what came of a forwarded request: Gate.Forwarded and its kin
//
// Record layouts are the typed data of package record; the reference is
// docs/reference.md#records.
package gate
