package testnet

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"time"
)

// ErrRefused is returned by a CountingDialer while Refuse is set.
var ErrRefused = errors.New("testnet: dial refused")

// CountingDialer makes FakeConns and tracks how many exist at once, counting
// a conn from the start of its dial until it is closed, which is what a
// per-address cap on active conns must bound. Its dials can be refused or
// held at a gate.
type CountingDialer struct {
	fake FakeDialer

	// Refuse makes dials fail with ErrRefused while set.
	Refuse atomic.Bool

	// Gate, if set before the first dial, holds every dial until it
	// receives a token from Gate or its context ends.
	Gate chan struct{}

	live, maxLive       atomic.Int64
	dialing, maxDialing atomic.Int64
	refused             atomic.Int64
}

// NewCountingDialer returns a dialer with no gate, accepting dials.
func NewCountingDialer() *CountingDialer {
	d := &CountingDialer{}
	d.fake.OnClose = func(*FakeConn) { d.live.Add(-1) }
	return d
}

// Dial dials without a context.
func (d *CountingDialer) Dial(address string) (net.Conn, error) {
	return d.DialContext(context.Background(), address)
}

// DialContext dials address, waiting at the gate if there is one.
func (d *CountingDialer) DialContext(ctx context.Context, address string) (net.Conn, error) {
	raiseTo(&d.maxLive, d.live.Add(1))
	raiseTo(&d.maxDialing, d.dialing.Add(1))
	defer d.dialing.Add(-1)
	if d.Gate != nil {
		select {
		case <-d.Gate:
		case <-ctx.Done():
			d.live.Add(-1)
			return nil, ctx.Err()
		}
	}
	if d.Refuse.Load() {
		d.live.Add(-1)
		d.refused.Add(1)
		return nil, ErrRefused
	}
	return d.fake.Dial(address)
}

// Live returns how many conns exist now: being dialed or open.
func (d *CountingDialer) Live() int64 { return d.live.Load() }

// MaxLive returns the most conns that existed at once.
func (d *CountingDialer) MaxLive() int64 { return d.maxLive.Load() }

// Dialing returns how many dials are in flight now.
func (d *CountingDialer) Dialing() int64 { return d.dialing.Load() }

// MaxDialing returns the most dials that were in flight at once.
func (d *CountingDialer) MaxDialing() int64 { return d.maxDialing.Load() }

// Dials returns how many dials succeeded.
func (d *CountingDialer) Dials() int64 { return d.fake.Dials() }

// Refused returns how many dials were refused.
func (d *CountingDialer) Refused() int64 { return d.refused.Load() }

// Open returns how many dialed conns are open.
func (d *CountingDialer) Open() int64 { return d.fake.Open() }

// DelayDial returns a dial function that waits d before dialing TCP, or
// until its context ends. With d < 0 it waits for the context only: a dial
// that hangs.
func DelayDial(d time.Duration) func(ctx context.Context, address string) (net.Conn, error) {
	return func(ctx context.Context, address string) (net.Conn, error) {
		var wait <-chan time.Time
		if d >= 0 {
			t := time.NewTimer(d)
			defer t.Stop()
			wait = t.C
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		var dialer net.Dialer
		return dialer.DialContext(ctx, "tcp", address)
	}
}
