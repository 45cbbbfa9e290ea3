//go:build integration

package integration

// fullRun is true under make integration (the integration build tag).
const fullRun = true
