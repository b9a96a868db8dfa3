package clientpool

import (
	"context"
	"io"
	"time"

	"github.com/seed73091bf1/connpool/balancer"
	"github.com/seed73091bf1/connpool/internal/bridge"
)

// Balanced puts a balancer.Balancer in front of a [Pool], as balancer.Pool
// does for a connpool.Pool (it is one, over the same engine): Get and Do
// pick an address for each request, move on to another when a dial fails,
// and report each request's outcome to the balancer.
type Balanced[T io.Closer] struct {
	bp *balancer.Pool
}

// NewBalanced returns a Balanced that picks with b and leases values from
// p. Call Update to change the endpoints, so that removed addresses are
// drained from p. It panics, naming the mistake, if p or b is nil.
func NewBalanced[T io.Closer](p *Pool[T], b balancer.Balancer, opts ...balancer.PoolOption) *Balanced[T] {
	if p == nil || p.p == nil {
		panic("clientpool: NewBalanced needs a *Pool made by clientpool.New; got nil")
	}
	return &Balanced[T]{bp: balancer.NewPool(p.p, b, opts...)}
}

// Get picks an address and leases a value of it, as balancer.Pool.Get
// does: a failed dial is reported and another address tried.
func (bp *Balanced[T]) Get(ctx context.Context) (*BalancedLease[T], error) {
	c, err := bp.bp.Get(ctx)
	if err != nil {
		return nil, err
	}
	return &BalancedLease[T]{c: c.(*balancer.Conn)}, nil
}

// Do picks a backend, leases a value of it, calls fn with the value and
// ends the lease by itself, with the rules of balancer.Pool.Do and
// [Pool.Do]: outcomes go to the balancer; a connection error is retried,
// on a fresh value of the same backend or on another backend, only for a
// request marked [Idempotent], since the pool cannot see whether fn sent
// it.
func (bp *Balanced[T]) Do(ctx context.Context, fn func(v T) error, opts ...DoOption) error {
	if fn == nil {
		return bp.bp.Do(ctx, nil, opts...)
	}
	return bp.bp.Do(ctx, func(c *balancer.Conn) error { return callValue(c.Conn, fn) }, opts...)
}

// Update sets the endpoints of the balancer and drains the addresses that
// left from the pool.
func (bp *Balanced[T]) Update(endpoints []balancer.Endpoint) { bp.bp.Update(endpoints) }

// BalancedLease is a lease taken through a [Balanced]. Close reports
// success to the balancer, CloseWithError the outcome it is given, and
// Release failure. It is one-shot like a [Lease].
type BalancedLease[T io.Closer] struct {
	// c is not embedded: a balancer.Conn's net.Conn methods do not apply
	// to a value that is not one.
	c *balancer.Conn
}

func (l *BalancedLease[T]) conn() *balancer.Conn { return l.c }

// Value returns the leased value, or the zero T once the lease ended.
func (l *BalancedLease[T]) Value() T {
	v, _ := bridge.Value(l.conn().Conn).(T)
	return v
}

// Close returns the value to the pool and reports success.
func (l *BalancedLease[T]) Close() error { return l.conn().Close() }

// CloseWithError returns the value to the pool and reports outcome: nil
// for a success, an error wrapping balancer.ErrPickNotUsed for neither, any
// other error for a failure of the backend. Use Release instead for a
// value the request left broken.
func (l *BalancedLease[T]) CloseWithError(outcome error) error {
	return l.conn().CloseWithError(outcome)
}

// Release closes the value and reports failure to the balancer.
func (l *BalancedLease[T]) Release() error { return l.conn().Release() }

// Address returns the address the value is bound to.
func (l *BalancedLease[T]) Address() string { return l.conn().Address() }

// Reused reports whether the value was taken from the idle stack.
func (l *BalancedLease[T]) Reused() bool { return l.conn().Reused() }

// IdleTime returns how long a reused value sat idle before this lease, as
// [Lease.IdleTime] does.
func (l *BalancedLease[T]) IdleTime() time.Duration { return l.conn().IdleTime() }
