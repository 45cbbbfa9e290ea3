//go:build !integration

package integration

// fullRun is false in CI: tests run their CI size. make integration sets the
// integration build tag for the full size.
const fullRun = false
