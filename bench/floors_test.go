package bench

import (
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// BenchmarkFloor measures the least work a hit path can do on this
// machine, so that BenchmarkHitPath's figures can be read against it: a
// conn taken from a locked idle list and put back, the same with the one
// small allocation a pool may make per Get, the same behind a map lookup
// by address, and the clock and atomic reads a pool may do on each Get.
func BenchmarkFloor(b *testing.B) {
	b.Run("Floor=MutexPopPush", func(b *testing.B) {
		modes(b, func(b *testing.B, parallel bool) {
			bk := newBucket(warm)
			run(b, parallel, func(int) { bk.push(bk.pop()) })
		})
	})
	b.Run("Floor=MutexPopPushAlloc32", func(b *testing.B) {
		modes(b, func(b *testing.B, parallel bool) {
			bk := newBucket(warm)
			run(b, parallel, func(int) {
				c := bk.pop()
				bk.pushKeep(c, new(handle))
			})
		})
	})
	for _, keys := range []int{1000, 100000} {
		b.Run("Floor=MapMutexPopPush/Keys="+strconv.Itoa(keys), func(b *testing.B) {
			modes(b, func(b *testing.B, parallel bool) {
				created, visits := addresses(keys)
				m := make(map[string]*bucket, keys)
				for _, a := range created {
					m[a] = newBucket(1)
				}
				// The map is only read during the run, so the
				// goroutines of a parallel run may share it.
				run(b, parallel, func(i int) {
					bk := m[visits[i%keys]]
					bk.push(bk.pop())
				})
			})
		})
	}
	// The same at 100,000 addresses with each address's structure padded
	// to 80, 128 and 160 bytes: blinklv/go-connpool's size, connpool's,
	// and connpool's before it was shrunk. What the size alone costs once
	// the addresses no longer fit in the caches. Not in run.sh's list;
	// docs/performance.md quotes it.
	for _, size := range []int{80, 128, 160} {
		b.Run("Floor=MapMutexPopPushPadded/Size="+strconv.Itoa(size)+"/Keys=100000", func(b *testing.B) {
			modes(b, func(b *testing.B, parallel bool) {
				const keys = 100000
				created, visits := addresses(keys)
				m := make(map[string]*bucket, keys)
				for _, a := range created {
					bk := newPaddedBucket(size)
					bk.idle = newBucket(1).idle
					m[a] = bk
				}
				run(b, parallel, func(i int) {
					bk := m[visits[i%keys]]
					bk.push(bk.pop())
				})
			})
		})
	}
	b.Run("Floor=TimeSince", func(b *testing.B) {
		modes(b, func(b *testing.B, parallel bool) {
			start := time.Now()
			run(b, parallel, func(int) {
				if d := time.Since(start); d < 0 {
					sink = int64(d)
				}
			})
		})
	})
	b.Run("Floor=TimeNow", func(b *testing.B) {
		modes(b, func(b *testing.B, parallel bool) {
			start := time.Now()
			run(b, parallel, func(int) {
				if t := time.Now(); t.Before(start) {
					sink = t.UnixNano()
				}
			})
		})
	})
	b.Run("Floor=AtomicLoad", func(b *testing.B) {
		modes(b, func(b *testing.B, parallel bool) {
			var v atomic.Int64
			v.Store(1)
			run(b, parallel, func(int) {
				if n := v.Load(); n < 0 {
					sink = n
				}
			})
		})
	})
}

// sink takes results that must not be optimised away. The ops store into it
// only when a result is impossible, so it is never written: one variable
// written by every goroutine would make a parallel run measure its cache
// line moving between cores instead of the op.
var sink int64

// bucket is the least an idle list for one address can be: a locked stack.
type bucket struct {
	mu   sync.Mutex // protects the fields below
	idle []net.Conn
	last *handle // the newest handle from pushKeep
}

// newPaddedBucket returns an empty bucket allocated as an object of size
// bytes (80, 128 or 160 on 64-bit platforms), as a pool's per-address
// structure of that size would be.
func newPaddedBucket(size int) *bucket {
	const bs = unsafe.Sizeof(bucket{})
	switch size {
	case 80:
		return &new(struct {
			bucket
			_ [80 - bs]byte
		}).bucket
	case 128:
		return &new(struct {
			bucket
			_ [128 - bs]byte
		}).bucket
	case 160:
		return &new(struct {
			bucket
			_ [160 - bs]byte
		}).bucket
	}
	panic("no padded bucket of " + strconv.Itoa(size) + " bytes")
}

// handle stands for the 32-byte value a pool may allocate on each Get.
type handle struct{ _ [32]byte }

func newBucket(n int) *bucket {
	bk := &bucket{idle: make([]net.Conn, 0, n)}
	for range n {
		bk.idle = append(bk.idle, fakeConn{})
	}
	return bk
}

// pop takes the newest idle conn. If another goroutine holds them all it
// makes a new one, as a pool would dial.
func (bk *bucket) pop() net.Conn {
	bk.mu.Lock()
	n := len(bk.idle)
	if n == 0 {
		bk.mu.Unlock()
		return fakeConn{}
	}
	c := bk.idle[n-1]
	bk.idle[n-1] = nil
	bk.idle = bk.idle[:n-1]
	bk.mu.Unlock()
	return c
}

func (bk *bucket) push(c net.Conn) {
	bk.mu.Lock()
	bk.idle = append(bk.idle, c)
	bk.mu.Unlock()
}

// pushKeep is push that also keeps h in the bucket, so that h escapes to the
// heap and the compiler cannot drop its allocation.
func (bk *bucket) pushKeep(c net.Conn, h *handle) {
	bk.mu.Lock()
	bk.idle = append(bk.idle, c)
	bk.last = h
	bk.mu.Unlock()
}
