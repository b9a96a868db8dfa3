package clientpool_test

import (
	"context"
	"testing"
	"time"

	"github.com/seed73091bf1/connpool/clientpool"
)

// nop is a pooled value that does nothing, so that the benchmarks measure
// the pool alone.
type nop struct{ _ int }

func (*nop) Close() error { return nil }

// BenchmarkGetClose measures a lease of an idle value and its return, and
// the same through Do.
func BenchmarkGetClose(b *testing.B) {
	p, err := clientpool.New(func(context.Context, string) (*nop, error) { return new(nop), nil }, 64, time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	if err := p.Warm(ctx, "a", 8); err != nil {
		b.Fatal(err)
	}
	b.Run("Get", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			l, err := p.Get(ctx, "a")
			if err != nil {
				b.Fatal(err)
			}
			if l.Value() == nil {
				b.Fatal("no value")
			}
			_ = l.Close()
		}
	})
	b.Run("Do", func(b *testing.B) {
		b.ReportAllocs()
		fn := func(v *nop) error { return nil }
		for b.Loop() {
			if err := p.Do(ctx, "a", fn); err != nil {
				b.Fatal(err)
			}
		}
	})
}
