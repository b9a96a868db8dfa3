package connpool

import (
	"crypto/tls"
	"errors"
	"net"
	"syscall"
)

// Errors the built-in liveness check reports for an idle conn it discards.
// They are not returned to callers: a dead idle conn is closed and the next
// one tried, or a new one dialed.
var (
	errPeerClosed     = errors.New("connpool: peer closed the idle conn")
	errUnexpectedData = errors.New("connpool: unread bytes on an idle conn")
)

// probe checks, without blocking and without reading, whether the peer of an
// idle conn has closed or reset it. It is made once per conn, when the conn
// is dialed, so that a check allocates nothing: the function handed to
// RawConn.Control is bound here and leaves its results in the probe.
//
// Only the holder of the conn uses its probe, so it needs no lock.
type probe struct {
	rc  syscall.RawConn
	tls bool // the conn is a *tls.Conn: unread bytes are expected

	fn     func(fd uintptr) // pr.peek, bound once
	buf    [1]byte
	n      int   // bytes the last peek saw
	errno  error // error of the last peek
	closed bool  // the kernel says the peer has sent its FIN
}

// newProbe returns a probe for nc, or nil if the check cannot apply: the
// conn exposes no file descriptor (no syscall.Conn, directly, embedded or
// under a *tls.Conn), or the platform has no non-blocking peek.
func newProbe(nc net.Conn) *probe {
	pr := &probe{}
	if tc, ok := nc.(*tls.Conn); ok {
		nc, pr.tls = tc.NetConn(), true
	}
	sc, ok := nc.(syscall.Conn)
	if !ok || !canPeek {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	pr.rc = rc
	pr.fn = pr.peek
	return pr
}

func (pr *probe) peek(fd uintptr) {
	pr.n, pr.errno = peekFD(fd, pr.buf[:])
	pr.closed = pr.tls && pr.n > 0 && peerClosed(fd)
}

// check reports nil if the conn looks reusable, or why it is not:
//   - the peer closed it (a peek sees end of file) or reset it (the peek
//     fails with ECONNRESET or another error);
//   - on a plain conn, bytes are waiting to be read: a late reply to an
//     earlier request would desynchronise the protocol for the next holder;
//   - on a TLS conn, bytes are normal (TLS 1.3 session tickets arrive after
//     the handshake), so only a closed or reset peer counts; where the
//     kernel tells (Linux), a peer that sent bytes and then its FIN, such as
//     a close_notify alert, counts as closed too.
func (pr *probe) check() error {
	if err := pr.rc.Control(pr.fn); err != nil {
		return err
	}
	switch {
	case wouldBlock(pr.errno):
		return nil // nothing to read: alive
	case pr.errno != nil:
		return pr.errno
	case pr.n == 0:
		return errPeerClosed
	case !pr.tls:
		return errUnexpectedData
	case pr.closed:
		return errPeerClosed
	}
	return nil
}
