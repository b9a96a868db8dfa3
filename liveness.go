package connpool

import (
	"crypto/tls"
	"errors"
	"math"
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

// probe is how the built-in liveness check reaches an idle conn's socket:
// its file descriptor, read once when the conn is dialed. A check is then a
// single non-blocking system call, with no RawConn.Control around it (about
// 50 ns) and no allocation.
//
// The descriptor stays valid for as long as the conn is open, and only the
// pool closes a pooled conn, after taking it out of service; a check runs on
// a conn that a checkout holds. (A dial function that keeps the conns it
// makes and closes them itself breaks that; a check of such a conn peeks at
// whatever the number then refers to, without reading from it, and the
// checkout gets the closed conn as it would without the check.)
//
// The zero probe is that of a conn the check does not apply to.
type probe struct {
	fd  int32
	ok  bool // the check applies: fd is set
	tls bool // the conn is a *tls.Conn: unread bytes are expected
}

// newProbe returns the probe of nc, or the zero probe if the check cannot
// apply:
// the conn exposes no file descriptor (no syscall.Conn, directly, embedded
// or under a *tls.Conn), or the platform has no non-blocking peek.
func newProbe(nc net.Conn) probe {
	isTLS := false
	if tc, ok := nc.(*tls.Conn); ok {
		nc, isTLS = tc.NetConn(), true
	}
	sc, ok := nc.(syscall.Conn)
	if !ok || !canPeek {
		return probe{}
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return probe{}
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil || fd < 0 || fd > math.MaxInt32 {
		return probe{}
	}
	return probe{fd: int32(fd), ok: true, tls: isTLS}
}

// applies reports whether the check applies to the conn.
func (pr probe) applies() bool { return pr.ok }

// check reports nil if the conn looks reusable, or why it is not:
//   - the peer closed it (a peek sees end of file) or reset it (the peek
//     fails with ECONNRESET or another error);
//   - on a plain conn, bytes are waiting to be read: a late reply to an
//     earlier request would desynchronise the protocol for the next holder;
//   - on a TLS conn, bytes are normal (TLS 1.3 session tickets arrive after
//     the handshake), so only a closed or reset peer counts; where the
//     kernel tells (Linux), a peer that sent bytes and then its FIN, such as
//     a close_notify alert, counts as closed too.
func (pr probe) check() error {
	var buf [1]byte
	n, err := peekFD(uintptr(pr.fd), buf[:])
	switch {
	case wouldBlock(err):
		return nil // nothing to read: alive
	case err != nil:
		return err
	case n == 0:
		return errPeerClosed
	case !pr.tls:
		return errUnexpectedData
	case peerClosed(uintptr(pr.fd)):
		return errPeerClosed
	}
	return nil
}
