package connpool

import (
	"context"
	"fmt"
	"io"
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
	p.mustBeNew()
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
		mu       sync.Mutex // protects errs and returned
		errs     *multierror.Error
		returned bool // Warm has returned errs: dials that end later add nothing to it
		wg       sync.WaitGroup
	)
	record := func(err error) {
		mu.Lock()
		if !returned {
			errs = multierror.Append(errs, err)
		}
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
		gen, err := b.reserveWarm(target)
		for err == errBucketDropped {
			b = p.buckets.lookupSlow(address)
			gen, err = b.reserveWarm(target)
		}
		if err != nil {
			<-sem
			if err != errWarmEnough {
				record(err)
			}
			break
		}
		wg.Add(1)
		go func(b *bucket) { // the dial ends on the bucket it reserved a slot on
			defer wg.Done()
			defer func() { <-sem }()
			err := exitedDial(b.address)
			defer func() { // deferred, so that a dial calling runtime.Goexit is reported too
				if err != nil {
					record(err)
				}
			}()
			err = p.warmOne(ctx, b, gen)
		}(b)
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
	returned = true
	if err := ctx.Err(); err != nil {
		errs = multierror.Append(errs, err)
	}
	return combined("warm", errs)
}

// errWarmEnough tells Warm to stop: the address has enough idle conns and
// warming dials, or no free slot.
var errWarmEnough = fmt.Errorf("connpool: bug: warm stop escaped")

// reserveWarm reserves a slot for one warming dial, unless the idle conns
// and warming dials of the address already reach target or no slot is free.
// It returns the generation the slot was reserved in.
func (b *bucket) reserveWarm(target int) (gen uint32, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.dropped:
		return 0, errBucketDropped
	case b.pool.closed.Load():
		return 0, ErrClosed
	case b.idleLenLocked()+b.warmingLocked() >= target || !b.hasSlotLocked():
		return 0, errWarmEnough
	}
	b.dialing++
	b.topUp = true
	cold := b.coldLocked()
	cold.warming++
	return cold.gen, nil
}

// warmOne runs one warming dial reserved with reserveWarm in generation
// gen, with ctx's values but not its cancellation, and puts the conn in the
// pool. A dial function that panics or calls runtime.Goexit fails the dial
// with ErrDialPanicked; no dial starts once the pool is closing.
func (p *Pool) warmOne(ctx context.Context, b *bucket, gen uint32) (err error) {
	var (
		pc  *pconn
		now int64
	)
	err = exitedDial(b.address) // unless the dial returns
	defer func() {
		var toClose []io.Closer
		var victim *lruNode
		b.mu.Lock()
		if gen == b.genLocked() {
			b.cold.warming--
		}
		switch {
		case err == ErrClosed || err == errAtMaxTotal:
			b.cancelDialLocked()
		case err != nil:
			b.dialFailedLocked()
		default:
			toClose, victim = b.adoptLocked(pc, now)
		}
		b.mu.Unlock()
		if victim != nil {
			victim.b.evict(victim)
		}
		_ = b.closeDiscarded(toClose) // a conn the pool did not keep; Warm reports dials only
	}()
	if p.closed.Load() {
		return ErrClosed
	}
	if p.total != nil && !p.total.tryAcquire() {
		return errAtMaxTotal
	}
	dctx, cancel := p.detachedContext(ctx)
	defer cancel()
	pc, now, err = p.dialConnRecovered(dctx, b, gen)
	return err
}
