package connpool

import (
	"context"
	"net"
)

// dialFor dials a conn for b, which has a slot reserved for it (b.dialing
// counts it). With a context that can end, the dial runs in a goroutine of
// its own, so the caller can give up while the dial goes on.
func (p *Pool) dialFor(ctx context.Context, b *bucket) (net.Conn, error) {
	if ctx.Done() == nil {
		nc, err := p.dialConn(ctx, b.address)
		now, deadline := p.dialTimes()
		b.mu.Lock()
		c, toClose, err := b.dialDoneLocked(nc, err, now, deadline)
		b.mu.Unlock()
		b.closeDiscarded(toClose)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	return p.dialDetached(ctx, b)
}

// dialDoneLocked ends a reserved dial for a caller waiting on it: it returns
// the caller's handle, or the dial's error. If the pool closed meanwhile, the
// new conn is returned in toClose for closeDiscarded.
func (b *bucket) dialDoneLocked(nc net.Conn, err error, now, deadline int64) (c *Conn, toClose []net.Conn, _ error) {
	if err != nil {
		b.dialFailedLocked()
		return nil, nil, err
	}
	pc, err := b.dialedLocked(nc, now, deadline)
	if err != nil {
		return nil, []net.Conn{nc}, err
	}
	return b.newConnLocked(pc, pc.probe != nil), nil, nil
}

// dialConn calls the dial function and names the address in its errors.
func (p *Pool) dialConn(ctx context.Context, address string) (net.Conn, error) {
	nc, err := p.dial(ctx, address)
	if err == nil && nc == nil {
		err = ErrNilConn
	}
	if err != nil {
		if nc != nil {
			nc.Close()
		}
		return nil, &DialError{Address: address, Err: err}
	}
	return nc, nil
}

// dialTimes returns the clock reading after a dial and the new conn's
// lifetime deadline.
func (p *Pool) dialTimes() (now, deadline int64) {
	if !p.needClock {
		return 0, 0
	}
	now = p.clock()
	return now, p.lifetimeDeadline(now)
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
func (p *Pool) dialDetached(ctx context.Context, b *bucket) (net.Conn, error) {
	pd := &pendingDial{done: make(chan struct{})}
	dctx, cancel := p.detachedContext(ctx)
	go func() {
		defer cancel()
		nc, err := p.dialConn(dctx, b.address)
		now, deadline := p.dialTimes()
		var toClose []net.Conn
		var victim *lruNode
		b.mu.Lock()
		switch {
		case err != nil && pd.abandoned:
			b.dialFailedLocked()
		case pd.abandoned:
			toClose, victim = b.adoptLocked(nc, now, deadline)
		default:
			pd.c, toClose, pd.err = b.dialDoneLocked(nc, err, now, deadline)
			close(pd.done)
		}
		b.mu.Unlock()
		if victim != nil {
			victim.b.evict(victim)
		}
		b.closeDiscarded(toClose)
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
