package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBucketRangeInvertsBucketOf(t *testing.T) {
	for _, v := range []time.Duration{0, 1, 31, 32, 63, 64, 65, 127, 128, 999, 1000, 1001, 12345, time.Second, histMax} {
		low, width := bucketRange(bucketOf(v))
		assert.LessOrEqual(t, low, v, "value %d", v)
		assert.Less(t, v, low+width, "value %d", v)
	}
}

// TestHistogramQuantilesMatchASortedSlice compares the histogram's
// quantiles with the exact nearest-rank ones of the same latencies, for
// several shapes of distribution.
func TestHistogramQuantilesMatchASortedSlice(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tests := []struct {
		name string
		gen  func() time.Duration
	}{
		{"uniform 1µs..60s", func() time.Duration {
			return histMin + time.Duration(rng.Int64N(int64(histMax-histMin)))
		}},
		{"log-uniform 1µs..60s", func() time.Duration {
			return time.Duration(float64(histMin) * math.Pow(float64(histMax/histMin), rng.Float64()))
		}},
		{"bimodal 1ms and 20ms", func() time.Duration {
			if rng.IntN(10) == 0 {
				return 20*time.Millisecond + time.Duration(rng.Int64N(int64(time.Millisecond)))
			}
			return time.Millisecond + time.Duration(rng.Int64N(int64(100*time.Microsecond)))
		}},
		{"a single value", func() time.Duration { return 1234567 * time.Nanosecond }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHistogram()
			var exact []time.Duration
			for range 100_000 {
				d := tt.gen()
				h.Record(d)
				exact = append(exact, d)
			}
			slices.Sort(exact)
			require.EqualValues(t, len(exact), h.Count())
			for _, q := range []float64{0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1} {
				want := exact[max(1, int(math.Ceil(q*float64(len(exact)))))-1]
				got := h.Quantile(q)
				assert.InEpsilon(t, float64(want), float64(got), maxRelativeError, "q=%v", q)
			}
		})
	}
}

func TestHistogramClampsOutOfRangeValues(t *testing.T) {
	h := newHistogram()
	h.Record(0)
	h.Record(-time.Second)
	assert.InEpsilon(t, float64(histMin), float64(h.Quantile(1)), maxRelativeError)
	h.Reset()
	h.Record(time.Hour)
	assert.InEpsilon(t, float64(histMax), float64(h.Quantile(0)), maxRelativeError)
	assert.Zero(t, newHistogram().Quantile(0.5), "an empty histogram")
}

// TestHistogramMemoryIsBounded checks that recording allocates nothing, so
// a histogram's size does not grow with the number of samples, and that the
// whole range fits in a few kilobytes.
func TestHistogramMemoryIsBounded(t *testing.T) {
	assert.Less(t, numBuckets*8, 8<<10, "bytes of counts per histogram")
	h, r := newHistogram(), newRecorder()
	d := time.Microsecond
	allocs := testing.AllocsPerRun(10_000, func() {
		d = d*17/16 + 1
		if d > histMax {
			d = time.Microsecond
		}
		h.Record(d)
		r.Record(d)
	})
	assert.Zero(t, allocs)
	assert.Len(t, h.counts, numBuckets)
	assert.Len(t, r.counts, numBuckets)
}

// TestRecorderDrainCountsEachLatencyOnce drains a recorder while goroutines
// record into it: every latency must land in exactly one drain.
func TestRecorderDrainCountsEachLatencyOnce(t *testing.T) {
	const writers, each = 8, 20_000
	r := newRecorder()
	total := newHistogram()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				r.Record(time.Duration(w*each+i) * time.Microsecond)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	interval := newHistogram()
	for drained := false; !drained; {
		select {
		case <-done:
			drained = true
		default:
		}
		interval.Reset()
		r.Drain(interval)
		total.Merge(interval)
	}
	assert.EqualValues(t, writers*each, total.Count())
	var sum uint64
	for _, n := range total.counts {
		sum += n
	}
	assert.Equal(t, total.Count(), sum)
}
