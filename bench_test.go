package connpool_test

import (
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/internal/testnet"
)

// BenchmarkGetClose measures the hit path: Get an idle conn and Close it
// back, on fake conns so that only the pool is measured.
func BenchmarkGetClose(b *testing.B) {
	for _, addrs := range []int{1, 1000} {
		for _, timeout := range []time.Duration{time.Minute, 0} {
			keys := make([]string, addrs)
			for i := range keys {
				keys[i] = "10.0." + strconv.Itoa(i/250) + "." + strconv.Itoa(i%250) + ":11211"
			}
			name := fmt.Sprintf("Addrs=%d/Timeout=%v", addrs, timeout)
			b.Run(name+"/Serial", func(b *testing.B) {
				p := newBenchPool(b, keys, timeout)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					c, err := p.Get(keys[i%len(keys)])
					if err != nil {
						b.Fatal(err)
					}
					c.Close()
				}
			})
			b.Run(name+"/Parallel", func(b *testing.B) {
				p := newBenchPool(b, keys, timeout)
				var seq atomic.Int64
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					i := int(seq.Add(1)) * 7919
					for pb.Next() {
						i++
						c, err := p.Get(keys[i%len(keys)])
						if err != nil {
							b.Fatal(err)
						}
						c.Close()
					}
				})
			})
		}
	}
}

// newBenchPool returns a pool with a few idle conns for every key.
func newBenchPool(b *testing.B, keys []string, timeout time.Duration) *connpool.Pool {
	b.Helper()
	var d testnet.FakeDialer
	p, err := connpool.New(d.Dial, 8, timeout)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	for _, k := range keys {
		for range 4 {
			c, err := p.New(k)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
		}
	}
	return p
}
