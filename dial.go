package connpool

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"
)

// dialFor dials a conn for b, which has a slot reserved for a dial of
// generation gen (b.dialing counts it). With a context that can end, the
// dial runs in a goroutine of its own, so the caller can give up while the
// dial goes on.
//
// Once Pool.Close has begun no dial starts: the slot is given back and the
// caller gets ErrClosed. If the dial function panics, the slot is freed and
// the panic goes on.
func (p *Pool) dialFor(ctx context.Context, b *bucket, gen uint32) (*Conn, error) {
	if p.closed.Load() {
		b.mu.Lock()
		b.cancelDialLocked()
		b.mu.Unlock()
		p.releaseTotal(1)
		return nil, ErrClosed
	}
	if ctx.Done() != nil {
		return p.dialDetached(ctx, b, gen)
	}
	dialed := false
	defer func() {
		if !dialed { // the dial function panicked
			b.mu.Lock()
			b.dialFailedLocked()
			b.mu.Unlock()
		}
	}()
	pc, now, err := p.dialConn(ctx, b, gen)
	dialed = true
	b.mu.Lock()
	c, toClose, err := b.dialDoneLocked(pc, err, now)
	b.mu.Unlock()
	_ = b.closeDiscarded(toClose) // only when the pool closed: the caller gets ErrClosed
	if err != nil {
		return nil, err
	}
	return c, nil
}

// dialDoneLocked ends a reserved dial for a caller waiting on it: it returns
// the caller's handle, or the dial's error. If the pool closed meanwhile, the
// new conn is returned in toClose for closeDiscarded.
func (b *bucket) dialDoneLocked(pc *pconn, err error, now int64) (c *Conn, toClose []io.Closer, _ error) {
	if err != nil {
		b.dialFailedLocked()
		return nil, nil, err
	}
	if err := b.dialedLocked(pc, now); err != nil {
		return nil, []io.Closer{b.closingLocked(pc.v, ClosePoolClosed)}, err
	}
	return b.newConnLocked(pc, pc.info), nil, nil
}

// dialConn calls the dial function for b's address and wraps the conn in a
// pconn of generation gen, with the clock reading taken after the dial. It
// names the address in its errors. It takes no lock: the pconn is built,
// and the conn's addresses read, before the bucket sees it.
func (p *Pool) dialConn(ctx context.Context, b *bucket, gen uint32) (pc *pconn, now int64, err error) {
	var start time.Time
	if p.trace != nil {
		start = p.traceDialStart(b)
	}
	v, err := p.dial(ctx, b.address)
	if err == nil && v == nil {
		err = ErrNilConn
	}
	if err != nil {
		if v != nil {
			_ = v.Close() // the dial failed; its error is the one to report
		}
		err = &DialError{Address: b.address, Err: err}
		if p.trace != nil {
			p.traceDialDone(b, start, nil, err)
		}
		return nil, 0, err
	}
	if p.trace != nil {
		p.traceDialDone(b, start, v, nil)
	}
	var deadline int64
	if p.needClock {
		now = p.readClock()
		deadline = p.lifetimeDeadline(now)
	} else {
		now = p.coarse.Load()
	}
	info := &connInfo{b: b}
	if nc, ok := v.(net.Conn); ok {
		info.local, info.remote = nc.LocalAddr(), nc.RemoteAddr()
	}
	pc = &pconn{v: v, info: info, deadline: deadline, gen: gen}
	if p.liveness {
		pc.probe = newProbe(v)
	}
	return pc, now, nil
}

// errDialExited is the error of a dial whose function called
// runtime.Goexit in a goroutine the pool owns.
var errDialExited = fmt.Errorf("%w: it called runtime.Goexit", ErrDialPanicked)

// exitedDial is the error of a dial to address whose function called
// runtime.Goexit: it stands until the dial returns.
func exitedDial(address string) error { return &DialError{Address: address, Err: errDialExited} }

// dialConnRecovered is dialConn for goroutines the pool owns, where no
// caller could recover a panic: a panicking dial function becomes a
// DialError wrapping [ErrDialPanicked], delivered to whoever waits. A dial
// function that calls runtime.Goexit cannot be stopped from ending the
// goroutine; callers finish the dial in a deferred call for that case.
func (p *Pool) dialConnRecovered(ctx context.Context, b *bucket, gen uint32) (pc *pconn, now int64, err error) {
	defer func() {
		if v := recover(); v != nil {
			pc, now = nil, 0
			err = &DialError{Address: b.address, Err: fmt.Errorf("%w: %v", ErrDialPanicked, v)}
		}
	}()
	return p.dialConn(ctx, b, gen)
}

// detachedContext returns a context for a dial that outlives its caller: it
// carries ctx's values but ends only when the pool closes.
func (p *Pool) detachedContext(ctx context.Context) (context.Context, context.CancelFunc) {
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(p.closing, cancel)
	return dctx, func() {
		stop()
		cancel()
	}
}

// pendingDial is a dial running for a caller that may give up on it. Its
// fields are protected by the bucket's mu.
type pendingDial struct {
	done      chan struct{} // closed when c or err is set
	c         *Conn
	err       error
	abandoned bool // the caller gave up; the dialing goroutine adopts the conn
}

// dialDetached dials in a goroutine of its own and waits for it or for ctx.
// If ctx ends first, the caller gets ctx.Err() and the conn, once dialed,
// goes to the next waiter or the idle stack instead of being wasted.
func (p *Pool) dialDetached(ctx context.Context, b *bucket, gen uint32) (*Conn, error) {
	pd := &pendingDial{done: make(chan struct{})}
	dctx, cancel := p.detachedContext(ctx)
	go func() {
		defer cancel()
		var (
			pc  *pconn
			now int64
			err error = exitedDial(b.address) // unless the dial returns
		)
		defer func() { p.detachedDialDone(b, pd, pc, now, err) }()
		pc, now, err = p.dialConnRecovered(dctx, b, gen)
	}()

	select {
	case <-pd.done:
	case <-ctx.Done():
		b.mu.Lock()
		select {
		case <-pd.done: // finished while we took the lock: use it
		default:
			pd.abandoned = true
			b.mu.Unlock()
			return nil, ctx.Err()
		}
		b.mu.Unlock()
	}
	if pd.err != nil {
		return nil, pd.err
	}
	return pd.c, nil
}

// detachedDialDone ends the dial of dialDetached: it hands the conn or the
// error to the caller waiting in pd or, if the caller gave up, puts the conn
// in the pool. It runs deferred, so it also ends a dial whose function called
// runtime.Goexit.
func (p *Pool) detachedDialDone(b *bucket, pd *pendingDial, pc *pconn, now int64, err error) {
	var toClose []io.Closer
	var victim *lruNode
	b.mu.Lock()
	switch {
	case err != nil && pd.abandoned:
		b.dialFailedLocked()
	case pd.abandoned:
		toClose, victim = b.adoptLocked(pc, now)
	default:
		pd.c, toClose, pd.err = b.dialDoneLocked(pc, err, now)
		close(pd.done)
	}
	b.mu.Unlock()
	if victim != nil {
		victim.b.evict(victim)
	}
	_ = b.closeDiscarded(toClose) // a conn the pool did not keep; nobody waits for it
}
