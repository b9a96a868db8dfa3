package connpool_test

import (
	"context"
	"testing"
	"time"

	"github.com/seed73091bf1/connpool"
)

// BenchmarkDo compares Do with the Get and Close it replaces on the hit
// path, with fake conns so that only the pool is measured: 1 address, idle
// timeout 1 minute and 0.
func BenchmarkDo(b *testing.B) {
	ctx := context.Background()
	keys := []string{"10.0.0.1:11211"}
	ok := func(*connpool.Conn) error { return nil }
	for _, timeout := range []time.Duration{time.Minute, 0} {
		prefix := "Timeout=" + timeout.String() + "/"
		b.Run(prefix+"Op=GetClose", func(b *testing.B) {
			p := newBenchPool(b, keys, timeout)
			b.ReportAllocs()
			for b.Loop() {
				c, err := p.Get(keys[0])
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
		b.Run(prefix+"Op=GetContextClose", func(b *testing.B) {
			p := newBenchPool(b, keys, timeout)
			b.ReportAllocs()
			for b.Loop() {
				c, err := p.GetContext(ctx, keys[0])
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
		b.Run(prefix+"Op=Do", func(b *testing.B) {
			p := newBenchPool(b, keys, timeout)
			b.ReportAllocs()
			for b.Loop() {
				if err := p.Do(ctx, keys[0], ok); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(prefix+"Op=DoIdempotent", func(b *testing.B) {
			p := newBenchPool(b, keys, timeout)
			b.ReportAllocs()
			for b.Loop() {
				if err := p.Do(ctx, keys[0], ok, connpool.Idempotent()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
