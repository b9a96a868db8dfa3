package clientpool_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed73091bf1/connpool/clientpool"
)

// guardedDialer makes clients that report misuse: a value leased twice at
// once, used after it was closed, or closed twice.
type guardedDialer struct {
	dialer
	misuse atomic.Int64
	last   atomic.Value // string: the latest misuse
}

func (d *guardedDialer) report(what string) {
	d.misuse.Add(1)
	d.last.Store(what)
}

// take marks c leased by one more holder and reports misuse.
func (d *guardedDialer) take(c *client) {
	if c == nil {
		d.report("a live lease with no value")
		return
	}
	if n := c.leases.Add(1); n != 1 {
		d.report("client " + strconv.FormatInt(c.id, 10) + " held " + strconv.Itoa(int(n)) + " times")
	}
	if c.closed.Load() {
		d.report("client " + strconv.FormatInt(c.id, 10) + " leased after it was closed")
	}
}

func (d *guardedDialer) give(c *client) { c.leases.Add(-1) }

// tally counts the open clients, and the misuses, counting a client closed
// more than once as one.
func (d *guardedDialer) tally() (open int, misuse int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.clients {
		switch n := c.closes.Load(); {
		case n == 0:
			open++
		case n > 1:
			d.report("client " + strconv.FormatInt(c.id, 10) + " closed " + strconv.Itoa(int(n)) + " times")
		}
	}
	return open, int(d.misuse.Load())
}

// TestStress runs leases, Do calls, Warm and Drain from several goroutines
// over a few addresses, under every limit, with a short idle timeout and
// lifetime so that the cleaner takes values out while they are used. No
// value may be held twice or used after its close; none may leak; the
// counts must add up throughout.
func TestStress(t *testing.T) {
	const (
		goroutines = 8
		rounds     = 1500
		maxActive  = 3
	)
	addrs := []string{"a", "b", "c", "d"}
	var d guardedDialer
	var dialFails atomic.Int64
	dial := func(ctx context.Context, address string) (*client, error) {
		if rand.IntN(20) == 0 {
			dialFails.Add(1)
			return nil, errRefused
		}
		return d.dial(ctx, address)
	}
	p, err := clientpool.New(dial, 2, 2*time.Millisecond,
		clientpool.WithMaxActive(maxActive),
		clientpool.WithMaxIdle(5),
		clientpool.WithMaxLifetime(20*time.Millisecond),
		clientpool.WithWaitTimeout(50*time.Millisecond),
		clientpool.WithMinIdle(1),
	)
	require.NoError(t, err)

	errApp := errors.New("app error")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	statsDone := make(chan struct{})
	go func() { // the counts add up while everything runs
		defer close(statsDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, ds := range p.Stats().Destinations {
				if ds.Total != ds.Idle+ds.InUse || ds.Total > maxActive || ds.Idle < 0 || ds.InUse < 0 {
					d.report("inconsistent stats: " + ds.String())
				}
			}
			time.Sleep(100 * time.Microsecond) // pacing only; nothing waits on it
		}
	}()
	for g := range goroutines {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			ctx := context.Background()
			for range rounds {
				addr := addrs[rng.IntN(len(addrs))]
				switch op := rng.IntN(100); {
				case op < 50:
					l, err := p.Get(ctx, addr)
					if err != nil {
						continue
					}
					v := l.Value()
					d.take(v)
					d.give(v)
					if op < 40 {
						_ = l.Close()
					} else {
						_ = l.Release()
					}
				case op < 85:
					_ = p.Do(ctx, addr, func(c *client) error {
						d.take(c)
						defer d.give(c)
						switch rng.IntN(4) {
						case 0:
							return errApp
						case 1:
							return clientpool.Clean(errApp)
						}
						return nil
					}, clientpool.Idempotent())
				case op < 95:
					wctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
					_ = p.Warm(wctx, addr, 2)
					cancel()
				default:
					_ = p.Drain(addr)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-statsDone

	require.NoError(t, p.Close())
	open, misuse := d.tally()
	if misuse > 0 {
		t.Fatalf("%d misuses; the latest: %v", misuse, d.last.Load())
	}
	assert.Zero(t, open, "every value is closed once the pool is closed and no lease is out")
	st := p.Stats()
	assert.Zero(t, st.Total)
	assert.Equal(t, int64(d.dials())+dialFails.Load(), st.Dials+st.DialErrors,
		"every dial is counted, failed or not")
	t.Logf("dials %d (%d failed), reuses %d, %v", d.dials(), dialFails.Load(), st.Reuses, st.Counters)
}
