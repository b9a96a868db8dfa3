package connpool

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/hashicorp/go-multierror"
)

// warmParallel is how many dials Warm runs at once.
const warmParallel = 4

// Warm dials conns to address until it has n idle ones, so that the first
// requests to a new backend find them ready. n is bounded by the pool's
// capacity and by [WithMaxActive]; each missing conn gets one dial, at most
// four at a time, and Warm returns the dial errors combined.
//
// If ctx ends first, Warm starts no more dials and returns ctx.Err() (with
// any dial errors so far) without waiting; dials already running finish in
// the background and their conns still go to the pool. It returns
// [ErrClosed] on a closed pool and an error for negative n.
func (p *Pool) Warm(ctx context.Context, address string, n int) error {
	if n < 0 {
		return fmt.Errorf("connpool: Warm: n %d is negative", n)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if p.closed.Load() {
		return ErrClosed
	}
	target := min(n, p.capacity)
	if p.maxActive > 0 {
		target = min(target, p.maxActive)
	}

	var (
		mu   sync.Mutex // protects errs
		errs *multierror.Error
		wg   sync.WaitGroup
	)
	record := func(err error) {
		mu.Lock()
		errs = multierror.Append(errs, err)
		mu.Unlock()
	}
	sem := make(chan struct{}, warmParallel)
	b := p.buckets.lookup(address)
launch:
	for range target {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break launch
		}
		err := b.reserveWarm(target)
		for err == errBucketDropped {
			b = p.buckets.lookupSlow(address)
			err = b.reserveWarm(target)
		}
		if err != nil {
			<-sem
			if err != errWarmEnough {
				record(err)
			}
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := p.warmOne(ctx, b); err != nil {
				record(err)
			}
		}()
	}

	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	mu.Lock()
	defer mu.Unlock()
	if err := ctx.Err(); err != nil {
		errs = multierror.Append(errs, err)
	}
	return errs.ErrorOrNil()
}

// errWarmEnough tells Warm to stop: the address has enough idle conns and
// warming dials, or no free slot.
var errWarmEnough = fmt.Errorf("connpool: bug: warm stop escaped")

// reserveWarm reserves a slot for one warming dial, unless the idle conns
// and warming dials of the address already reach target or no slot is free.
func (b *bucket) reserveWarm(target int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.dropped || b.draining:
		return errBucketDropped
	case b.pool.closed.Load():
		return ErrClosed
	case len(b.idle)+b.warming >= target || !b.hasSlotLocked():
		return errWarmEnough
	}
	b.dialing++
	b.warming++
	return nil
}

// warmOne runs one warming dial reserved with reserveWarm, with ctx's values
// but not its cancellation, and puts the conn in the pool.
func (p *Pool) warmOne(ctx context.Context, b *bucket) error {
	dctx, cancel := p.detachedContext(ctx)
	defer cancel()
	nc, err := p.dialConn(dctx, b.address)
	now, deadline := p.dialTimes()
	var toClose []net.Conn
	var victim *lruNode
	b.mu.Lock()
	b.warming--
	if err != nil {
		b.dialFailedLocked()
	} else {
		toClose, victim = b.adoptLocked(nc, now, deadline)
	}
	b.mu.Unlock()
	if victim != nil {
		victim.b.evict(victim)
	}
	b.closeDiscarded(toClose)
	return err
}
