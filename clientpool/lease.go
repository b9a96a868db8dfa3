package clientpool

import (
	"io"
	"time"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/internal/bridge"
)

// Lease is one checkout of a value, from [Pool.Get] until Close or
// Release. Like a connpool.Conn, it is one-shot: every Get returns a new
// lease, even when it reuses a value, and after Close or Release the lease
// is inert: a second Close or Release returns [ErrLeaseEnded] and does
// nothing else, and Value returns the zero T. An ended lease no longer
// refers to its value.
//
// Close must not race with a call still running on the value through this
// lease, nor with Value, since it hands the value to the next caller; the
// race detector reports such a race. Release may race with both.
type Lease[T io.Closer] connpool.Conn

// conn returns the engine's handle that the lease is.
func (l *Lease[T]) conn() *connpool.Conn { return (*connpool.Conn)(l) }

// Value returns the leased value, or the zero T once the lease ended.
func (l *Lease[T]) Value() T {
	v, _ := bridge.Value(l.conn()).(T)
	return v
}

// Close returns the value to the pool: to the oldest checkout waiting for
// its address, or else to the address's idle stack if the pool is open and
// the stack has room. Otherwise, or if the value outlived the pool's max
// lifetime, it closes the value and returns its close error. Return only
// values that are fit for the next caller; Release the others. In shared
// mode ([WithShared]) Close ends this lease only: its share goes to the
// oldest waiting checkout, and the value goes back to the idle stack when
// its last lease ends.
func (l *Lease[T]) Close() error { return l.conn().Close() }

// Release closes the value and removes it from the pool's counts. Use it
// for values found broken or left in an unknown state. In shared mode
// ([WithShared]) the value takes no new lease from then on, and is closed
// when the last lease on it ends.
func (l *Lease[T]) Release() error { return l.conn().Release() }

// ReleaseNow is Release, but in shared mode ([WithShared]) it closes the
// value at once, rather than once every lease on it has ended: leases
// still running on it get the client's errors. In exclusive mode it is
// Release.
func (l *Lease[T]) ReleaseNow() error { return bridge.ReleaseNow(l.conn()) }

// Address returns the address the value is bound to.
func (l *Lease[T]) Address() string { return l.conn().Address() }

// Reused reports whether the value was taken from the idle stack rather
// than dialed for this lease.
func (l *Lease[T]) Reused() bool { return l.conn().Reused() }

// IdleTime returns how long a reused value sat idle before this lease, on
// the pool's coarse clock (see connpool's Conn.IdleTime), and 0 for a new
// one.
func (l *Lease[T]) IdleTime() time.Duration { return l.conn().IdleTime() }
