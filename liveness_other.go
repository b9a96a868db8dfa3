//go:build !unix || aix

package connpool

// canPeek is false: this platform has no non-blocking peek, so the built-in
// liveness check applies to no conn. A validator set with WithValidator
// still runs.
const canPeek = false

func wouldBlock(error) bool               { return false }
func peekFD(uintptr, []byte) (int, error) { return 0, nil }
func peerClosed(uintptr) bool             { return false }
func isSocket(uintptr) bool               { return false }
