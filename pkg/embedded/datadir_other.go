//go:build !unix

package embedded

// lockDataDir does nothing where flock(2) is missing: there a second server given
// the same data dir is not refused.
func lockDataDir(string) (release func(), err error) { return func() {}, nil }
