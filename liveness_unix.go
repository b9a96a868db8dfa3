//go:build unix && !aix

package connpool

import "syscall"

const canPeek = true

// wouldBlock reports whether err, as peekFD returns it, says that nothing
// is waiting to be read. peekFD returns the bare errno, so a comparison
// does; errors.Is would cost a dozen nanoseconds more.
func wouldBlock(err error) bool {
	return err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
}

// isSocket reports whether fd is a socket. It runs once per dialed conn.
func isSocket(fd uintptr) bool {
	_, err := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TYPE)
	return err == nil
}
