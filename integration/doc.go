// Package integration holds Roster's multi-process tests: real NATS servers and Roster
// services as separate processes, so that nodes and instances can be killed. They
// all run in go test ./... (make test) at a CI size; the integration build tag (make
// integration) runs them at full size. TestBenchReport, behind the benchreport tag,
// writes bench/report.md (make bench).
package integration
