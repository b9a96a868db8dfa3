package balancer

import (
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// coarseClock is mono for a hot path that can take a reading a few
// microseconds old. Most reads return the last reading; one in every
// `every`, chosen at random so that concurrent readers share no counter,
// reads the clock. every doubles, up to maxEvery, while readings come less
// than fastGap apart, and falls back to 1 as soon as two come more than
// slowGap apart: under load a read costs a fraction of a clock read and
// lags by a few microseconds, and when reads are sparse each one is exact.
// After a quiet spell, about `every` reads may return the reading from
// before it until one reads the clock.
//
// The zero value is ready to use.
type coarseClock struct {
	last  atomic.Int64  // the latest reading; never goes back
	every atomic.Uint64 // a power of two; 0 means 1
}

const (
	maxEvery = 16
	fastGap  = 5 * time.Microsecond
	slowGap  = 50 * time.Microsecond
)

// now returns the time in mono nanoseconds, possibly a few microseconds
// old, and whether it is a fresh reading of the clock.
func (c *coarseClock) now() (t int64, fresh bool) {
	if e := c.every.Load(); e > 1 && rand.Uint64()&(e-1) != 0 {
		return c.last.Load(), false
	}
	t = mono()
	if gap, ok := c.record(t); ok {
		c.adapt(gap)
	}
	return t, true
}

// record makes t, a reading of mono, the latest reading unless a later one
// was recorded meanwhile, and returns the time since the reading it
// replaced. A caller that read the clock for its own use records the
// reading so that others get it; it does not adapt, since its reading says
// nothing of how often now is called.
func (c *coarseClock) record(t int64) (gap time.Duration, ok bool) {
	for {
		last := c.last.Load()
		if t < last {
			return 0, false
		}
		if t == last || c.last.CompareAndSwap(last, t) {
			return time.Duration(t - last), true
		}
	}
}

// adapt sets how often now reads the clock from the gap between the last
// two readings. Concurrent calls may overwrite each other's choice, which
// the next reading corrects.
func (c *coarseClock) adapt(gap time.Duration) {
	e := max(c.every.Load(), 1)
	switch {
	case gap < fastGap && e < maxEvery:
		c.every.Store(e * 2)
	case gap > slowGap && e > 1:
		c.every.Store(1)
	}
}
