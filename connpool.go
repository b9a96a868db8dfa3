// Package connpool pools network connections per destination address.
//
// It is meant for clients of load-balanced backends: the caller (or the
// optional balancer subpackage) chooses an address for each request, and the
// pool keeps a small stack of idle connections for every address it has seen.
//
//	pool, err := connpool.New(dial, 16, 90*time.Second)
//	conn, err := pool.Get("10.0.0.7:11211")
//	... use conn ...
//	conn.Close() // returns it to the pool
//
// [Pool.Get] reuses the most recently returned idle conn of an address and
// dials only when there is none. [Pool.New] always dials; it is the retry path
// after a conn turned out to be dead. Calling Close on a conn returns it to the
// pool; calling [Conn.Release] closes the socket for good.
//
// A background cleaner closes conns that sat idle longer than the pool's
// timeout and forgets addresses that have no conns left, so backends that come
// and go do not grow the pool's memory.
//
// # Locking
//
// Lock order: registry.mu before bucket.mu. No lock is ever held while dialing or
// closing a socket: conns to close are collected under the lock and closed
// after it is released.
package connpool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-multierror"
)

// Dial creates a connection to address. It is the dial function of the
// predecessor API; see also [WithDialContext].
type Dial func(address string) (net.Conn, error)

var (
	// ErrClosed is returned by Get, GetContext, New and NewContext after
	// [Pool.Close] was called, and by a second call to Pool.Close.
	ErrClosed = errors.New("connpool: pool closed")

	// ErrConnClosed is returned by every method of a [Conn] that does I/O
	// or changes its state once the conn was returned with Close or closed
	// with Release. It wraps [net.ErrClosed], so code that checks
	// errors.Is(err, net.ErrClosed) treats it like any closed conn.
	ErrConnClosed = fmt.Errorf("connpool: conn already returned or released: %w", net.ErrClosed)

	// ErrInvalidConfig is wrapped by the error [New] returns for arguments
	// or options it rejects.
	ErrInvalidConfig = errors.New("connpool: invalid configuration")

	// ErrNilConn is wrapped in a [DialError] when a dial function returns
	// neither a conn nor an error.
	ErrNilConn = errors.New("connpool: dial returned a nil conn and a nil error")
)

// DialError is returned by Get, GetContext, New and NewContext when dialing
// fails. It names the address; Unwrap gives the dial function's error, so
// errors.Is(err, context.DeadlineExceeded) and similar checks work.
type DialError struct {
	Address string
	Err     error
}

func (e *DialError) Error() string {
	return "connpool: dial " + e.Address + ": " + e.Err.Error()
}

func (e *DialError) Unwrap() error { return e.Err }

// An Option configures a [Pool] in [New].
type Option func(*options)

type options struct {
	dialContext func(ctx context.Context, address string) (net.Conn, error)
	clock       func() int64 // replaced by tests in this package
}

// WithDialContext sets a dial function that honours a context. When it is
// given, the pool uses it for every dial, GetContext and NewContext pass their
// context to it (so a dial can be cancelled), and the dial argument of [New]
// may be nil and is ignored. The default is no context dialer; a nil function
// is the same as not giving the option.
func WithDialContext(dial func(ctx context.Context, address string) (net.Conn, error)) Option {
	return func(o *options) { o.dialContext = dial }
}

// Pool keeps idle connections per destination address. It is safe for
// concurrent use. Create it with [New] and release its resources with
// [Pool.Close].
type Pool struct {
	dial     func(ctx context.Context, address string) (net.Conn, error)
	capacity int   // most idle conns kept per address; >= 0
	timeout  int64 // idle timeout in nanoseconds; 0 means never

	// clock returns monotonic nanoseconds since the pool was created. Tests
	// in this package replace it.
	clock func() int64

	buckets registry
	closed  atomic.Bool

	stop chan struct{} // closed by Close to stop the cleaner
	done chan struct{} // closed by the cleaner when it has stopped
}

// New creates a pool that dials with dial, keeps at most capacity idle conns
// per address, and closes conns that sat idle for timeout.
//
//   - capacity is the most idle conns kept per address (not across all
//     addresses). Zero keeps none: every returned conn is closed. Negative is
//     rejected.
//   - timeout is how long a conn may sit idle in the pool. Get never hands out
//     a conn that has been idle that long, and a background cleaner closes
//     such conns within about 1.25 × timeout. Zero means idle conns never
//     expire. Negative is rejected. There is no minimum.
//   - dial may be nil only if [WithDialContext] is given.
//
// New starts the cleaner goroutine; [Pool.Close] stops it. Errors wrap
// [ErrInvalidConfig].
func New(dial Dial, capacity int, timeout time.Duration, opts ...Option) (*Pool, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if capacity < 0 {
		return nil, fmt.Errorf("%w: capacity %d is negative", ErrInvalidConfig, capacity)
	}
	if timeout < 0 {
		return nil, fmt.Errorf("%w: timeout %v is negative", ErrInvalidConfig, timeout)
	}
	if dial == nil && o.dialContext == nil {
		return nil, fmt.Errorf("%w: dial is nil and no WithDialContext was given", ErrInvalidConfig)
	}

	p := &Pool{
		dial:     o.dialContext,
		capacity: capacity,
		timeout:  int64(timeout),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	p.buckets.pool = p
	if p.dial == nil {
		p.dial = func(_ context.Context, address string) (net.Conn, error) { return dial(address) }
	}
	p.clock = o.clock
	if p.clock == nil {
		epoch := time.Now()
		p.clock = func() int64 { return int64(time.Since(epoch)) }
	}

	go p.runCleaner(sweepInterval(timeout))
	return p, nil
}

// Get returns an idle conn to address, the most recently returned one first,
// or dials a new one if there is none. The conn's dynamic type is *[Conn].
// Calling Close on it returns it to the pool.
func (p *Pool) Get(address string) (net.Conn, error) {
	return p.get(context.Background(), address)
}

// GetContext is like [Pool.Get] but gives up when ctx is done. With a done
// ctx it returns ctx.Err() at once, without dialing. While dialing, ctx is
// passed to the dial function set with [WithDialContext]; a plain [Dial]
// cannot be interrupted.
func (p *Pool) GetContext(ctx context.Context, address string) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return p.get(ctx, address)
}

// New dials a fresh conn to address, ignoring idle ones. Use it to retry
// after a conn from [Pool.Get] turned out to be dead: when the backend
// restarted, every idle conn of the address may be dead too. The conn is
// bound to address like any other and returns to the pool on Close.
func (p *Pool) New(address string) (net.Conn, error) {
	return p.new(context.Background(), address)
}

// NewContext is like [Pool.New] but gives up when ctx is done, as
// [Pool.GetContext] does.
func (p *Pool) NewContext(ctx context.Context, address string) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return p.new(ctx, address)
}

func (p *Pool) get(ctx context.Context, address string) (net.Conn, error) {
	if p.closed.Load() {
		return nil, ErrClosed
	}
	var now int64
	if p.timeout > 0 {
		now = p.clock()
	}
	b := p.buckets.lookup(address)
	for {
		c, expired, err := b.get(now)
		if err == errBucketDropped {
			b = p.buckets.lookupSlow(address)
			continue
		}
		if err != nil {
			return nil, err
		}
		if c != nil {
			return c, nil
		}
		closeIdle(expired)
		return p.dialFor(ctx, b)
	}
}

func (p *Pool) new(ctx context.Context, address string) (net.Conn, error) {
	if p.closed.Load() {
		return nil, ErrClosed
	}
	b := p.buckets.lookup(address)
	for {
		err := b.reserveDial()
		if err == errBucketDropped {
			b = p.buckets.lookupSlow(address)
			continue
		}
		if err != nil {
			return nil, err
		}
		return p.dialFor(ctx, b)
	}
}

// dialFor dials a conn for b, which must have a dial reserved with
// b.reserveDial or b.get.
func (p *Pool) dialFor(ctx context.Context, b *bucket) (net.Conn, error) {
	nc, err := p.dial(ctx, b.address)
	if err == nil && nc == nil {
		err = ErrNilConn
	}
	if err != nil {
		if nc != nil {
			nc.Close()
		}
		b.dialFailed()
		return nil, &DialError{Address: b.address, Err: err}
	}
	var now int64
	if p.timeout > 0 {
		now = p.clock()
	}
	if err := b.dialed(now); err != nil {
		// The pool was closed while dialing.
		nc.Close()
		return nil, err
	}
	return &Conn{nc: nc, b: b}, nil
}

// Close closes the pool: it stops the cleaner, closes every idle conn and
// returns their close errors combined. Afterwards Get and New return
// [ErrClosed] without dialing, and conns still in use are closed when their
// holders call Close or Release. A second call returns ErrClosed and does
// nothing else.
func (p *Pool) Close() error {
	if !p.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	close(p.stop)
	<-p.done

	var idle []idleConn
	p.buckets.mu.Lock()
	for _, b := range p.buckets.all {
		idle = append(idle, b.drain()...)
	}
	p.buckets.mu.Unlock()

	var result *multierror.Error
	for _, ic := range idle {
		if err := ic.nc.Close(); err != nil {
			result = multierror.Append(result, err)
		}
	}
	return result.ErrorOrNil()
}

// closeIdle closes conns taken out of a bucket because they expired. Their
// close errors are of no use to anyone: the conns were idle and nobody is
// waiting on them.
func closeIdle(conns []idleConn) {
	for _, ic := range conns {
		ic.nc.Close()
	}
}
