// Package clientpool pools clients of any kind per destination address: a
// *rpc.Client, a *grpc.ClientConn, a drpc conn, or any other value that is
// an io.Closer. It is the generic face of the engine of package connpool,
// and behaves as a connpool.Pool does: per-address idle stacks with a
// capacity, an idle timeout kept by a background cleaner, limits with FIFO
// waiting, a max lifetime, a validator, a minimum of ready values, Warm,
// Drain, Stats and a balancer in front (see [NewBalanced]).
//
//	pool, err := clientpool.New(dialRPC, 8, time.Minute)
//	err = pool.Do(ctx, "10.0.0.7:4000", func(c *rpc.Client) error {
//		return c.Call("Arith.Add", args, &reply)
//	})
//
// A value is leased to one caller at a time, from [Pool.Get] until
// [Lease.Close] returns it or [Lease.Release] closes it; [Pool.Do] does
// both by itself.
//
// # Liveness
//
// Before an idle value is handed out again, the pool checks it the cheapest
// way the value offers:
//   - a value that is a net.Conn or a syscall.Conn over a socket, or has
//     a NetConn() net.Conn method, is checked on its socket with one
//     non-blocking peek: a peer that closed or reset it, or (on a conn that
//     is not TLS) unread bytes, mean dead;
//   - a value with a Closed() <-chan struct{} method is dead once that
//     channel is closed;
//   - otherwise only the validator of [WithValidator], if one is set,
//     judges it.
//
// A dead value is closed and the next idle one tried, or a new one dialed.
// A value with an Unblocked() <-chan struct{} method (drpc conns have one)
// is skipped while that channel is open, as drpcpool does: it is still
// cancelling its previous call. It stays idle and is handed out once it
// unblocks, to the oldest checkout waiting at the [WithMaxActive] limit if
// there is one, which checks it as above. A blocked value whose Closed
// channel closes is closed at the next checkout of its address, and its
// slot freed. Closed and Unblocked are called under the pool's locks, so
// they must only return a channel.
package clientpool

import (
	"context"
	"fmt"
	"io"
	"net"
	"reflect"
	"time"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/internal/bridge"
)

// The errors of the engine, which this package returns as package
// connpool does; errors.Is matches them whichever package names them.
var (
	// ErrClosed is returned by Get, Do and Warm after [Pool.Close], and
	// by a second Pool.Close.
	ErrClosed = connpool.ErrClosed
	// ErrLeaseEnded is returned by Close and Release on a lease that was
	// already returned or released.
	ErrLeaseEnded = connpool.ErrConnClosed
	// ErrInvalidConfig is wrapped by the errors of [New].
	ErrInvalidConfig = connpool.ErrInvalidConfig
	// ErrNilValue is wrapped in the DialError of a dial function that
	// returned neither a value nor an error.
	ErrNilValue = connpool.ErrNilConn
	// ErrExhausted is returned by a checkout that waited at a
	// [WithMaxActive] limit for the [WithWaitTimeout] duration.
	ErrExhausted = connpool.ErrExhausted
	// ErrDialPanicked is wrapped in the DialError of a dial function that
	// panicked in a goroutine of the pool's.
	ErrDialPanicked = connpool.ErrDialPanicked
)

// These types are those of package connpool.
type (
	// DialError is the error of a failed dial; it names the address.
	DialError = connpool.DialError
	// DoError is the error of a request that Do could not complete.
	DoError = connpool.DoError
	// DoOption configures one call of Do: see [Idempotent] and
	// [WithRetries].
	DoOption = connpool.DoOption
	// Stats is a snapshot of the pool's counts: see [Pool.Stats].
	Stats = connpool.Stats
	// DestinationStats are the counts of one address.
	DestinationStats = connpool.DestinationStats
	// Counters are the counters of an address or of the pool.
	Counters = connpool.Counters
	// Trace is the set of hooks of [WithTrace].
	Trace = connpool.Trace
	// GotConnInfo describes a value a checkout got, for Trace.GotConn.
	GotConnInfo = connpool.GotConnInfo
	// CloseReason says why the pool closed a value, for Trace.ConnClosed.
	CloseReason = connpool.CloseReason
	// LeakReport describes a lease held past the threshold of
	// [WithLeakDetection].
	LeakReport = connpool.LeakReport
)

// Pool keeps idle values of type T per destination address. It is safe for
// concurrent use. Create it with [New] and release its resources with
// [Pool.Close].
type Pool[T io.Closer] struct {
	p *connpool.Pool
}

// New creates a pool that dials with dial, keeps at most capacity idle
// values per address, and closes values that sat idle for timeout; the
// arguments mean what they mean for connpool.New.
//
// dial gets the context of the checkout that needs the value, with its
// values but not its cancellation when the checkout's context can end:
// such a dial runs in a goroutine of its own, so that a caller that gives up
// does not waste it, and its value goes to the next checkout or the idle
// stack. Those dials are cancelled when the pool closes; bound them
// otherwise with a timeout of their own. The context ends once dial
// returns: a value must not keep it. A dial that returns a nil value (a
// nil pointer too) and no error fails with [ErrNilValue]; a value returned
// with an error is closed.
//
// Errors wrap [ErrInvalidConfig].
func New[T io.Closer](dial func(ctx context.Context, address string) (T, error), capacity int, timeout time.Duration, opts ...Option) (*Pool[T], error) {
	if dial == nil {
		return nil, fmt.Errorf("%w: dial is nil", ErrInvalidConfig)
	}
	all := make([]connpool.Option, 0, len(opts)+1)
	all = append(all, bridge.DialOption(func(ctx context.Context, address string) (io.Closer, error) {
		v, err := dial(ctx, address)
		if isNil(v) {
			return nil, err
		}
		return v, err
	}).(connpool.Option))
	for _, o := range opts {
		if o.opt != nil {
			all = append(all, o.opt)
		}
	}
	p, err := connpool.New(nil, capacity, timeout, all...)
	if err != nil {
		return nil, err
	}
	return &Pool[T]{p: p}, nil
}

// isNil reports whether v is a nil interface, pointer, map, slice,
// channel or function: a value the pool cannot keep.
func isNil[T any](v T) bool {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Invalid:
		return true
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Chan, reflect.Func, reflect.Interface, reflect.UnsafePointer:
		return rv.IsNil()
	}
	return false
}

// Get leases an idle value of address, the most recently returned one
// first, or dials a new one if there is none. At a [WithMaxActive] limit
// it waits for a value or a slot, for at most the [WithWaitTimeout]
// duration and until ctx ends. With a done ctx it returns ctx.Err() at
// once.
func (p *Pool[T]) Get(ctx context.Context, address string) (*Lease[T], error) {
	return asLease[T](p.engine().GetContext(ctx, address))
}

// GetFresh is like Get but dials a new value, ignoring idle ones, as
// connpool's Pool.New does: the retry path after a value turned out to be
// dead, when every idle value of the address may be dead too.
func (p *Pool[T]) GetFresh(ctx context.Context, address string) (*Lease[T], error) {
	return asLease[T](p.engine().NewContext(ctx, address))
}

// asLease returns the result of an engine checkout as a lease: nil, and not
// a nil *Lease, on error.
func asLease[T io.Closer](nc net.Conn, err error) (*Lease[T], error) {
	if err != nil {
		return nil, err
	}
	return (*Lease[T])(nc.(*connpool.Conn)), nil
}

// Do leases a value of address, calls fn with it and ends the lease by
// itself, with the rules of connpool's Pool.Do:
//   - fn returns nil, or an error marked with [Clean] or [CleanFailure]:
//     the value goes back to the pool;
//   - fn returns any other error: the value is released (closed), since
//     it may be broken;
//   - fn panics: the value is released and the panic goes on.
//
// fn must not keep the value after it returns.
//
// A request that failed with a connection error (see connpool.IsConnError)
// on a reused value, which the server may have closed while it sat idle,
// is retried once on a freshly dialed value if it is [Idempotent], within
// the retry budget (see [WithRetryBudget]). The pool cannot see whether fn
// sent anything, so a request that is not idempotent is never retried.
// The error Do returns is a *[DoError].
func (p *Pool[T]) Do(ctx context.Context, address string, fn func(v T) error, opts ...DoOption) error {
	if fn == nil {
		return p.engine().Do(ctx, address, nil, opts...)
	}
	return p.engine().Do(ctx, address, func(c *connpool.Conn) error { return callValue(c, fn) }, opts...)
}

// callValue calls fn with the value of c, after marking c as having sent
// its request: the pool cannot tell.
func callValue[T io.Closer](c *connpool.Conn, fn func(T) error) error {
	bridge.MarkSent(c)
	v, _ := bridge.Value(c).(T)
	return fn(v)
}

// Warm dials values to address in the background until n are idle, as
// connpool's Pool.Warm does, and returns the dial errors combined.
func (p *Pool[T]) Warm(ctx context.Context, address string, n int) error {
	return p.engine().Warm(ctx, address, n)
}

// Drain retires the values of address, as connpool's Pool.Drain does: the
// idle ones are closed now, those in use when their leases end.
func (p *Pool[T]) Drain(address string) error { return p.engine().Drain(address) }

// Stats returns a snapshot of the pool's counts, per address and in total.
func (p *Pool[T]) Stats() Stats { return p.engine().Stats() }

// SpendRetry takes one retry from the retry budget of address, as
// connpool's Pool.SpendRetry does, for retry loops of your own.
func (p *Pool[T]) SpendRetry(address string) bool { return p.engine().SpendRetry(address) }

// Close closes the pool as connpool's Pool.Close does: idle values are
// closed now, leased ones when their leases end, and waiting checkouts get
// [ErrClosed].
func (p *Pool[T]) Close() error { return p.engine().Close() }

// engine returns the pool's engine; on a nil or zero-value Pool it returns
// nil, whose methods panic with a message naming the mistake.
func (p *Pool[T]) engine() *connpool.Pool {
	if p == nil {
		return nil
	}
	return p.p
}

// Idempotent declares that the request of Do may be sent twice without
// harm, so that Do may retry it after a connection error.
func Idempotent() DoOption { return connpool.Idempotent() }

// WithRetries sets the most retries of a request; see connpool.WithRetries.
func WithRetries(n int) DoOption { return connpool.WithRetries(n) }

// Clean marks an error of fn as one that left the value clean, such as an
// error reply of the application protocol: Do returns the value to the
// pool and does not retry. Clean(nil) is nil.
func Clean(err error) error { return connpool.Clean(err) }

// CleanFailure is like [Clean], but balancer.Pool counts the request as a
// failure of the backend.
func CleanFailure(err error) error { return connpool.CleanFailure(err) }
