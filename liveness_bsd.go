//go:build unix && !linux && !aix

package connpool

import "syscall"

// peekFD looks at the next byte waiting on fd without removing it and
// without blocking.
func peekFD(fd uintptr, buf []byte) (int, error) {
	n, _, err := syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return n, err
}

// peerClosed cannot tell on this platform; the peek alone decides.
func peerClosed(uintptr) bool { return false }
