// Package integration holds Roster's multi-process tests: real NATS servers and Roster
// services as separate processes, so that nodes and instances can be killed. The
// long-running ones are behind the integration build tag (make integration).
package integration
