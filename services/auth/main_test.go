package auth

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: every
// goroutine the service starts must end when Run returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
