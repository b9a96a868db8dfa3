package main

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Latencies are counted in log-linear buckets, as HdrHistogram does: each
// power of two of nanoseconds is split into subBuckets equal buckets, so a
// bucket is at most 1/subBuckets of the values it holds wide, whatever their
// size. A quantile is reported as the middle of its bucket, within
// 1/(2·subBuckets) ≈ 1.6% of the true value. Values are clamped to
// [histMin, histMax]; the buckets between take a few kilobytes, however many
// samples are recorded.
const (
	subBucketBits = 5
	subBuckets    = 1 << subBucketBits

	histMin = time.Microsecond
	histMax = 60 * time.Second
)

// maxRelativeError is the most a quantile differs from the true value, as a
// fraction of it, for values within [histMin, histMax].
const maxRelativeError = 1.0 / (2 * subBuckets)

var (
	firstBucket = bucketOf(histMin)
	numBuckets  = bucketOf(histMax) - firstBucket + 1
)

// bucketOf returns the index of the bucket holding v nanoseconds, counted
// from the bucket of 0. Below 2·subBuckets the buckets are one nanosecond
// wide; above, each power of two has subBuckets of them.
func bucketOf(v time.Duration) int {
	shift := max(0, bits.Len64(uint64(v))-1-subBucketBits)
	return shift<<subBucketBits + int(uint64(v)>>shift)
}

// bucketRange returns the smallest value of bucket i and its width, the
// inverse of bucketOf.
func bucketRange(i int) (low, width time.Duration) {
	shift := max(0, i>>subBucketBits-1)
	mantissa := i - shift<<subBucketBits
	return time.Duration(mantissa) << shift, time.Duration(1) << shift
}

// clampedBucket returns the index into a histogram's counts for d.
func clampedBucket(d time.Duration) int {
	return bucketOf(min(max(d, histMin), histMax)) - firstBucket
}

// Histogram counts latencies in fixed buckets. It is not safe for concurrent
// use; a Recorder is, and hands its counts over with Drain.
type Histogram struct {
	counts []uint64
	total  uint64
}

func newHistogram() *Histogram {
	return &Histogram{counts: make([]uint64, numBuckets)}
}

// Record adds one latency.
func (h *Histogram) Record(d time.Duration) {
	h.counts[clampedBucket(d)]++
	h.total++
}

// Count returns the number of latencies recorded.
func (h *Histogram) Count() uint64 { return h.total }

// Merge adds the counts of o to h.
func (h *Histogram) Merge(o *Histogram) {
	for i, n := range o.counts {
		h.counts[i] += n
	}
	h.total += o.total
}

// Reset empties h.
func (h *Histogram) Reset() {
	clear(h.counts)
	h.total = 0
}

// Quantile returns the latency that a fraction q (0 to 1) of the recorded
// ones are at or below: the nearest-rank quantile, the ⌈q·n⌉-th smallest
// value, to within maxRelativeError. It returns 0 for an empty histogram.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := max(1, uint64(math.Ceil(q*float64(h.total))))
	var seen uint64
	for i, n := range h.counts {
		seen += n
		if seen >= rank {
			low, width := bucketRange(i + firstBucket)
			return low + width/2
		}
	}
	panic("connpool-demo: bug: histogram total exceeds its counts")
}

// Recorder counts latencies from many goroutines at once, with one atomic
// add per latency and no lock. One reader at a time moves the counts out
// with Drain.
type Recorder struct {
	counts []atomic.Uint64
}

func newRecorder() *Recorder {
	return &Recorder{counts: make([]atomic.Uint64, numBuckets)}
}

// Record adds one latency. It is safe for concurrent use.
func (r *Recorder) Record(d time.Duration) {
	r.counts[clampedBucket(d)].Add(1)
}

// Drain moves the counts recorded since the last Drain into h. A latency
// recorded while Drain runs lands in this Drain or the next, never in both
// and never in none.
func (r *Recorder) Drain(h *Histogram) {
	for i := range r.counts {
		if n := r.counts[i].Swap(0); n > 0 {
			h.counts[i] += n
			h.total += n
		}
	}
}
