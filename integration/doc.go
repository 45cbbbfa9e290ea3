// Package integration holds Roster's multi-process tests: real NATS servers and Roster
// services as separate processes, so that nodes and instances can be killed. They
// all run in go test ./... (make test) at a CI size; the integration build tag (make
// integration) runs them at full size. TestBenchReport, behind the benchreport tag,
// writes bench/report.md (make bench).
//
// TestLockSafetyThroughFailures, with ROSTER_HISTORY_DUMP=path, writes a history
// that failed its check to path (one operation a line, with its request id, tries
// and error) and every version of the lock records the run committed to
// path.commits.
package integration
