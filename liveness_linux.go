//go:build linux && !386

package connpool

import (
	"syscall"
	"unsafe"
)

// peekFD looks at the next byte waiting on fd without removing it and
// without blocking. It is a raw system call: it cannot block, and it
// allocates nothing.
func peekFD(fd uintptr, buf []byte) (int, error) {
	n, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd,
		uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)),
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// peerClosed reports whether the TCP peer of fd has sent its FIN, even if
// bytes sent before it are still unread.
func peerClosed(fd uintptr) bool {
	var info syscall.TCPInfo
	size := uint32(syscall.SizeofTCPInfo)
	_, _, errno := syscall.RawSyscall6(syscall.SYS_GETSOCKOPT, fd,
		syscall.IPPROTO_TCP, syscall.TCP_INFO,
		uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&size)), 0)
	if errno != 0 {
		return false // not TCP (a Unix socket, say): the peek alone decides
	}
	return peerGone(info.State)
}
