package connpool

import (
	"io"
	"net"
	"sync/atomic"
	"time"
	"unsafe"
)

// Conn is a pooled connection handed out by [Pool.Get] and [Pool.New]. It
// implements [net.Conn]; its Close returns the connection to the pool.
//
// A Conn is a handle for one checkout: every Get returns a new one, even when
// it reuses a socket. After Close or Release the handle is inert: Read, Write,
// the deadline setters, Close and Release return [ErrConnClosed] (which wraps
// [net.ErrClosed]) and never touch the socket, which by then may belong to
// another caller. An ended handle no longer refers to the socket, so holding
// on to it keeps no socket or buffer in memory.
//
// As with any net.Conn, Read and Write may be called concurrently. Close must
// not race with the handle's other methods (Read, Write, the deadline
// setters, NetConn), only with Release and the address getters, since it
// hands the socket to the next caller; the race detector reports such a
// race. To abort blocked I/O, set a deadline or call Release, which may race
// with every method. Close and Release may race with each other: one of them
// ends the handle, the other returns ErrConnClosed.
type Conn struct {
	// pc is the *pconn while the handle is in use, and nil from the moment
	// Close or Release ends it: that change is the handle's one-shot state
	// change. It is written plainly when the handle is carved, before any
	// other goroutine can see it. Readers outside b.mu load it atomically
	// (load). Afterwards it changes once, to nil:
	//   - for a handle that was handed out, always under b.mu (put,
	//     release), so that a Close, which is not allowed to race with the
	//     handle's other methods, can test and clear it with plain
	//     instructions: an atomic swap would be one more locked
	//     instruction on every return. Release, which may race with a
	//     Read, clears it with an atomic store;
	//   - for a handle not yet handed out, with an atomic swap (end).
	// (A typed atomic.Pointer would need an atomic store at carving.)
	pc unsafe.Pointer
	// b is info.b, the conn's bucket, kept here so that Close and Release
	// need not read info: in a pool of many addresses that read is a
	// cache miss.
	b    *bucket
	info *connInfo // pc.info: the bucket and addresses, which outlive the handle's use
	// state holds the flag bits below and, from bit idleShift up, the
	// nanoseconds the conn sat idle before this checkout. It is written
	// plainly while the handle is made, before any other goroutine can see
	// it; afterwards Read and Write set their bits with an atomic OR (they
	// may run concurrently), so every later read is atomic. One word for
	// all of it keeps a handle at 32 bytes. The zero-size field before it
	// aligns it to 8 bytes on 32-bit platforms too, in an array of
	// handles as well, which 64-bit atomics there require.
	_     [0]atomic.Uint64
	state uint64
}

// The bits of Conn.state.
const (
	sentBit     uint64 = 1 << iota // a Write wrote at least one byte
	receivedBit                    // a Read read at least one byte
	reusedBit                      // the conn was not dialed for this checkout
	// probedBit is pc.probe.applies(), kept here so that Get need not
	// read pc again.
	probedBit
	sharedBit // a lease on a value that other leases may share (shared.go)
	// notIdleBit is set on a reused conn that did not come from the idle
	// stack: a holder's Close handed it straight to this waiting
	// checkout, or it is a share of a value in use (shared.go).
	notIdleBit

	idleShift = 8
	maxIdle   = 1<<(64-idleShift) - 1 // about 2.3 years
)

// has reports whether bit is set in c.state.
func (c *Conn) has(bit uint64) bool { return atomic.LoadUint64(&c.state)&bit != 0 }

// set sets bits in c.state. Only the code that makes the handle calls it,
// before the handle is shared.
func (c *Conn) set(bits uint64) { c.state |= bits }

// setIdle records how long the conn sat idle, in nanoseconds, before the
// handle is shared.
func (c *Conn) setIdle(idle int64) {
	c.state = c.state&(1<<idleShift-1) | uint64(min(max(idle, 0), maxIdle))<<idleShift
}

// idle returns how long the conn sat idle before this checkout.
func (c *Conn) idle() int64 { return int64(atomic.LoadUint64(&c.state) >> idleShift) }

// mark sets bit in c.state, reading first: the bit is set by the first I/O
// of the checkout, and later calls only load.
func (c *Conn) mark(bit uint64) {
	if !c.has(bit) {
		atomic.OrUint64(&c.state, bit)
	}
}

// load returns the handle's pconn, or nil once the handle has ended.
func (c *Conn) load() *pconn { return (*pconn)(atomic.LoadPointer(&c.pc)) }

// end ends the handle and returns its pconn, or nil if it had ended
// already. It serves handles not yet handed out; see Conn.pc.
func (c *Conn) end() *pconn { return (*pconn)(atomic.SwapPointer(&c.pc, nil)) }

// ended reports whether a handle the pool handed out has ended. Any
// goroutine may call it.
func (c *Conn) ended() bool {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	return c.load() == nil
}

// pconn is one pooled value, bound to its address for life: a net.Conn for
// a [Pool]'s own API, any io.Closer for the clientpool package, which runs
// on the same engine. Handles come and go; the pconn moves between them and
// the idle stack.
type pconn struct {
	v        io.Closer
	info     *connInfo
	deadline int64  // clock reading at which the max lifetime ends; 0 for none
	probe    probe  // how the liveness check reaches the value
	gen      uint32 // the bucket's drain generation when the dial was reserved
}

// connInfo is what a socket's handles need to know of it besides the socket
// itself: its bucket, and its addresses, read once at dial. It is kept apart
// from the socket so that an ended handle can still answer LocalAddr,
// RemoteAddr and Address without keeping the socket reachable.
type connInfo struct {
	b             *bucket
	local, remote net.Addr

	// node is the conn's place in the pool's idle LRU while it is idle;
	// with WithMaxIdle, every idle conn has one. It is guarded by b.mu.
	node *lruNode
}

// Close hands the connection to the oldest checkout waiting for its address,
// or else returns it to the address's idle stack if the pool is open and the
// stack has room. Otherwise, or if the connection has outlived the pool's max
// lifetime, it closes the socket and returns the socket's close error. A second Close or Release returns [ErrConnClosed] and
// does nothing else.
//
// Return only connections that are in a clean state for the next holder: no
// unread reply, no half-written request. Release the others.
func (c *Conn) Close() error {
	if c.b == nil { // a Conn the pool did not make
		return ErrConnClosed
	}
	return c.b.put(c)
}

// Release closes the socket and removes it from the pool's counts. Use it
// for connections found dead or left in an unknown state. A second Release or
// Close returns [ErrConnClosed] and does nothing else.
func (c *Conn) Release() error { return c.release(false) }

// netConn returns the net.Conn of pc. A handle whose I/O methods are called
// holds a net.Conn: only a [Pool] hands handles out, and its dial function
// makes net.Conns.
func netConn(pc *pconn) net.Conn { return pc.v.(net.Conn) }

// releaseIfHeld releases the conn unless its checkout has ended. Handles
// are never reused, so on an ended handle it does nothing.
func (c *Conn) releaseIfHeld() {
	if c.load() != nil {
		_ = c.Release()
	}
}

// Read reads from the connection. It returns [ErrConnClosed] after Close or
// Release.
func (c *Conn) Read(p []byte) (int, error) {
	pc := c.load()
	if pc == nil {
		return 0, ErrConnClosed
	}
	n, err := netConn(pc).Read(p)
	if n > 0 {
		c.mark(receivedBit)
	}
	return n, err
}

// Write writes to the connection. It returns [ErrConnClosed] after Close or
// Release.
func (c *Conn) Write(p []byte) (int, error) {
	pc := c.load()
	if pc == nil {
		return 0, ErrConnClosed
	}
	n, err := netConn(pc).Write(p)
	if n > 0 {
		c.mark(sentBit)
	}
	return n, err
}

// SetDeadline sets the read and write deadlines of the connection. It returns
// [ErrConnClosed] after Close or Release.
//
// Deadlines belong to the socket, not the handle: clear them (set the zero
// time) before Close if the next holder should not inherit them.
func (c *Conn) SetDeadline(t time.Time) error {
	pc := c.load()
	if pc == nil {
		return ErrConnClosed
	}
	return netConn(pc).SetDeadline(t)
}

// SetReadDeadline sets the read deadline of the connection. It returns
// [ErrConnClosed] after Close or Release.
func (c *Conn) SetReadDeadline(t time.Time) error {
	pc := c.load()
	if pc == nil {
		return ErrConnClosed
	}
	return netConn(pc).SetReadDeadline(t)
}

// SetWriteDeadline sets the write deadline of the connection. It returns
// [ErrConnClosed] after Close or Release.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	pc := c.load()
	if pc == nil {
		return ErrConnClosed
	}
	return netConn(pc).SetWriteDeadline(t)
}

// release serves Release, and clientpool's ReleaseNow with now set: a
// value that other leases share is then closed at once rather than when
// its last lease ends.
func (c *Conn) release(now bool) error {
	if c.b == nil { // a Conn the pool did not make
		return ErrConnClosed
	}
	return c.b.release(c, now)
}

// NetConn returns the net.Conn the pool dialed, under this handle, for
// what the handle does not offer: TCP options (SetNoDelay, SetKeepAlive),
// syscall.Conn, CloseWrite. It is valid only until Close or Release: the
// socket then belongs to the pool and may go to another caller, so do not
// keep it. It returns nil once the handle has ended. Closing it directly
// closes the pooled socket under the pool: call Release instead.
func (c *Conn) NetConn() net.Conn {
	pc := c.load()
	if pc == nil {
		return nil
	}
	nc, _ := pc.v.(net.Conn)
	return nc
}

// LocalAddr returns the local address of the connection. Addresses do not
// change, so it answers even after Close or Release.
func (c *Conn) LocalAddr() net.Addr {
	if c.info == nil { // a Conn the pool did not make
		return nil
	}
	return c.info.local
}

// RemoteAddr returns the remote address of the connection. Addresses do not
// change, so it answers even after Close or Release.
func (c *Conn) RemoteAddr() net.Addr {
	if c.info == nil { // a Conn the pool did not make
		return nil
	}
	return c.info.remote
}

// Reused reports whether the connection was taken from the idle stack
// rather than dialed for this checkout. Like net/http's
// httptrace.GotConnInfo.Reused, it tells a caller whose request failed
// whether the failure may be a stale connection, so that retrying on a fresh
// one (from [Pool.New]) is worth it.
func (c *Conn) Reused() bool { return c.has(reusedBit) }

// Sent reports whether a byte was written to the connection through this
// handle. A request that failed before it sent anything cannot have reached
// the server, so retrying it is always safe.
func (c *Conn) Sent() bool { return c.has(sentBit) }

// Received reports whether a byte was read from the connection through this
// handle. Once part of a response has been read, a request is never
// retried: the server answered it.
func (c *Conn) Received() bool { return c.has(receivedBit) }

// IdleTime returns how long a reused connection sat idle before this
// checkout, and 0 for a new one. It is measured on the pool's coarse clock,
// so it may be off by up to one tick of the cleaner either way: a
// sixteenth of the shortest of the idle timeout, the max lifetime and the
// validator's minIdle, at least 1 ms and at most 250 ms, or 1 s for a pool
// with none of them.
func (c *Conn) IdleTime() time.Duration { return time.Duration(c.idle()) }

// Address returns the destination address the connection is bound to: the
// address given to [Pool.Get] or [Pool.New].
func (c *Conn) Address() string {
	if c.b == nil { // a Conn the pool did not make
		return ""
	}
	return c.b.address
}
