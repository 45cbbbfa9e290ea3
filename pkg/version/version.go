// Package version holds the one version of a Roster build: the roster binary reports
// it (roster --version, the service.version of its telemetry) and so does every
// service it runs ($SRV.INFO, $SRV.PING and the health endpoint).
//
// A release sets it when it builds:
//
//	go build -ldflags "-X github.com/seed-3c836eab/roster/pkg/version.Version=1.2.0" ./cmd/roster
//
// It must be a SemVer version without a leading "v" (the NATS micro framework
// refuses to start a service with any other, and so roster serve stops at once).
package version

// Version is this build's version; a build without -ldflags is a development one.
var Version = "0.1.0-dev"
