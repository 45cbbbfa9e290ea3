package client

import "time"

// SetMaxHeldRequest sets the bound on one acquire request for a test, and returns
// a function that restores it.
func SetMaxHeldRequest(d time.Duration) (restore func()) {
	old := maxHeldRequest
	maxHeldRequest = d
	return func() { maxHeldRequest = old }
}

// MaxHandlers is the number of handlers one Handle runs at once.
const MaxHandlers = maxHandlers
