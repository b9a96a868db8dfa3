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

// BenchmarkShared compares a lease and its return in exclusive mode with
// the same in shared mode (WithShared(16)), serial and parallel. In
// Shared, with 8 values idle, a lease takes an idle value, which has no
// lease and so is the least loaded, and its Close puts it back: each op
// moves a value from the idle stack to the shared list and back. In
// SharedHeld there is one value, which another lease holds throughout, so
// each op takes and gives back a share of it.
func BenchmarkShared(b *testing.B) {
	for _, mode := range []string{"Exclusive", "Shared", "SharedHeld"} {
		b.Run("Mode="+mode, func(b *testing.B) {
			var opts []clientpool.Option
			if mode != "Exclusive" {
				opts = append(opts, clientpool.WithShared(16))
			}
			p, err := clientpool.New(func(context.Context, string) (*nop, error) { return new(nop), nil }, 64, time.Minute, opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			ctx := context.Background()
			if mode != "SharedHeld" {
				if err := p.Warm(ctx, "a", 8); err != nil {
					b.Fatal(err)
				}
			} else {
				held, err := p.Get(ctx, "a")
				if err != nil {
					b.Fatal(err)
				}
				defer held.Close()
			}
			op := func(b *testing.B) {
				l, err := p.Get(ctx, "a")
				if err != nil {
					b.Fatal(err)
				}
				_ = l.Close()
			}
			b.Run("Serial", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					op(b)
				}
			})
			b.Run("Parallel", func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						op(b)
					}
				})
			})
		})
	}
}
