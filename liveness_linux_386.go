//go:build linux && 386

package connpool

import "syscall"

// On linux/386 the socket system calls go through socketcall(2), so the
// raw calls of liveness_linux.go do not exist there; these use the
// syscall package's wrappers instead.

// peekFD looks at the next byte waiting on fd without removing it and
// without blocking.
func peekFD(fd uintptr, buf []byte) (int, error) {
	n, _, err := syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return n, err
}

// peerClosed reports whether the TCP peer of fd has sent its FIN, even if
// bytes sent before it are still unread. TCP_INFO's first byte is the
// state, and the kernel copies as much of the struct as there is room for,
// so reading it as an int (little-endian) is enough.
func peerClosed(fd uintptr) bool {
	v, err := syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_INFO)
	if err != nil {
		return false // not TCP (a Unix socket, say): the peek alone decides
	}
	return peerGone(uint8(v))
}
