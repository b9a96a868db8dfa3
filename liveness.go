package connpool

import (
	"errors"
	"io"
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
	errValueClosed    = errors.New("connpool: the idle value's Closed channel is closed")
)

// probe is how the built-in liveness check reaches an idle conn, or an
// idle value of another kind, read once when it is dialed:
//   - a value with a socket (a net.Conn that is a syscall.Conn, directly or
//     under a wrapper with a NetConn method such as a *tls.Conn, a
//     syscall.Conn, or a value whose NetConn method returns such a conn) is
//     checked through the socket's file descriptor,
//     with a single non-blocking system call, with no RawConn.Control
//     around it (about 50 ns) and no allocation;
//   - a value that tells when it closed (a Closed() <-chan struct{} method,
//     as drpc conns have) is dead once that channel is closed;
//   - a value with an Unblocked() <-chan struct{} method (drpc conns again)
//     is skipped at checkout, not discarded, while the channel is open: it
//     is still cancelling its previous call.
//
// The descriptor stays valid for as long as the conn is open, and only the
// pool closes a pooled conn, after taking it out of service; a check runs on
// a conn that a checkout holds. (A dial function that keeps the conns it
// makes and closes them itself breaks that, as does a client that closes
// the socket under its NetConn by itself; a check of such a conn peeks at
// whatever the number then refers to, without reading from it, and the
// checkout gets the closed conn as it would without the check.)
//
// The zero probe is that of a value the check does not apply to.
type probe struct {
	fd       int32
	kind     probeKind
	tls      bool // the socket is under a wrapper such as a *tls.Conn: unread bytes are expected
	unblocks bool // the value has an Unblocked method
	closes   bool // the value has a Closed method
}

// probeKind is how the liveness check reaches a value.
type probeKind uint8

const (
	probeNone   probeKind = iota // the check does not apply
	probeFD                      // peek at the file descriptor fd
	probeClosed                  // the value's Closed channel
)

// closedNotifier is a value that tells when it closed.
type closedNotifier interface{ Closed() <-chan struct{} }

// unblockNotifier is a value that tells when it is ready for another call.
type unblockNotifier interface{ Unblocked() <-chan struct{} }

// netConner is a value that exposes the net.Conn it runs on.
type netConner interface{ NetConn() net.Conn }

// newProbe returns the probe of v, which is the zero probe if the check
// cannot apply: v offers none of the ways above, or the platform has no
// non-blocking peek and v no Closed method.
func newProbe(v io.Closer) probe {
	var pr probe
	_, pr.unblocks = v.(unblockNotifier)
	_, pr.closes = v.(closedNotifier)
	nc, ok := v.(net.Conn)
	if !ok {
		if n, isNC := v.(netConner); isNC {
			nc = n.NetConn()
		}
	}
	switch {
	case nc != nil:
		pr.fd, pr.tls, ok = socketFD(nc)
	default:
		var sc syscall.Conn
		if sc, ok = v.(syscall.Conn); ok {
			pr.fd, ok = syscallFD(sc)
		}
	}
	if ok {
		pr.kind = probeFD
	} else if pr.closes {
		pr.kind = probeClosed
	}
	return pr
}

// socketFD returns the file descriptor under nc, seeing through a wrapper
// that is no syscall.Conn itself but tells the conn it runs on with a
// NetConn method, as *tls.Conn does, and whether nc is such a wrapper: one
// that may buffer or expect bytes of its own (a TLS record, a session
// ticket), so unread bytes do not mean a dead conn. Asking for the method
// rather than the type keeps crypto/tls out of programs that do not use
// it.
func socketFD(nc net.Conn) (fd int32, wrapped, ok bool) {
	if _, isSC := nc.(syscall.Conn); !isSC {
		if w, isW := nc.(netConner); isW {
			if nc, wrapped = w.NetConn(), true; nc == nil {
				return 0, false, false
			}
		}
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return 0, false, false
	}
	fd, ok = syscallFD(sc)
	return fd, wrapped, ok
}

// syscallFD returns the file descriptor of sc, if it is a socket and the
// platform can peek. A peek at a pipe, a terminal or a device fails, which
// the check would take for a dead conn.
func syscallFD(sc syscall.Conn) (int32, bool) {
	if !canPeek {
		return 0, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	fd := -1
	err = rc.Control(func(f uintptr) {
		if isSocket(f) {
			fd = int(f)
		}
	})
	if err != nil || fd < 0 || fd > math.MaxInt32 {
		return 0, false
	}
	return int32(fd), true
}

// applies reports whether the check applies to the value.
func (pr probe) applies() bool { return pr.kind != probeNone }

// blocked reports whether v, the probed value, is still busy with its
// previous call: it has an Unblocked channel that is open. The method is
// called under the bucket's lock; like Closed, it must only return a
// channel.
func (pr probe) blocked(v io.Closer) bool {
	if !pr.unblocks {
		return false
	}
	select {
	case <-v.(unblockNotifier).Unblocked():
		return false
	default:
		return true
	}
}

// closed reports whether v, the probed value, has a Closed channel that is
// closed. Like blocked, it is called under the bucket's lock.
func (pr probe) closed(v io.Closer) bool {
	if !pr.closes {
		return false
	}
	select {
	case <-v.(closedNotifier).Closed():
		return true
	default:
		return false
	}
}

// check reports nil if v, the probed value, looks reusable, or why it is
// not:
//   - its Closed channel is closed;
//   - the peer closed it (a peek sees end of file) or reset it (the peek
//     fails with ECONNRESET or another error);
//   - on a plain conn, bytes are waiting to be read: a late reply to an
//     earlier request would desynchronise the protocol for the next holder;
//   - on a TLS conn, bytes are normal (TLS 1.3 session tickets arrive after
//     the handshake), so only a closed or reset peer counts; where the
//     kernel tells (Linux), a peer that sent bytes and then its FIN, such as
//     a close_notify alert, counts as closed too.
func (pr probe) check(v io.Closer) error {
	if pr.kind == probeClosed {
		if pr.closed(v) {
			return errValueClosed
		}
		return nil
	}
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
