package lock

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a goroutine outlives the tests: every committer,
// timer and watch must end when Run returns.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
