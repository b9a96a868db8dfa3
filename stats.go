package connpool

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Counters are running totals of what happened to a pool's conns since it
// was created.
type Counters struct {
	// Dials counts successful dials.
	Dials int64 `json:"dials"`
	// DialErrors counts failed dials, including dials that returned a nil
	// conn.
	DialErrors int64 `json:"dial_errors"`
	// Reuses counts Gets served from an idle conn.
	Reuses int64 `json:"reuses"`
	// WaitCount counts checkouts that had to wait at a WithMaxActive cap.
	WaitCount int64 `json:"wait_count"`
	// WaitDuration is the total time those checkouts waited, including
	// waits that ended in a timeout or a cancelled context.
	WaitDuration time.Duration `json:"wait_duration"`
	// ClosedIdleTimeout counts idle conns closed because they sat idle for
	// the pool's timeout, by the cleaner or by Get.
	ClosedIdleTimeout int64 `json:"closed_idle_timeout"`
	// ClosedMaxLifetime counts conns closed because they reached their
	// WithMaxLifetime age, when returned, at Get or by the cleaner.
	ClosedMaxLifetime int64 `json:"closed_max_lifetime"`
	// ClosedBucketFull counts conns closed on Close because their address
	// already had capacity idle conns.
	ClosedBucketFull int64 `json:"closed_bucket_full"`
	// ClosedIdleCapEvicted counts idle conns closed to keep the pool within
	// its WithMaxIdle cap.
	ClosedIdleCapEvicted int64 `json:"closed_idle_cap_evicted"`
	// ClosedDeadAtCheckout counts idle conns the built-in liveness check
	// found closed or reset by the peer, or holding unread bytes, when Get
	// was about to hand them out.
	ClosedDeadAtCheckout int64 `json:"closed_dead_at_checkout"`
	// ClosedDeadWhileIdle counts idle conns the cleaner found closed or
	// reset by the peer, or holding unread bytes, when it checked them for
	// WithMinIdle.
	ClosedDeadWhileIdle int64 `json:"closed_dead_while_idle"`
	// ClosedValidatorFailed counts idle conns the WithValidator function
	// rejected.
	ClosedValidatorFailed int64 `json:"closed_validator_failed"`
	// ClosedDrained counts conns closed by Pool.Drain: idle ones at once,
	// in-use ones when returned.
	ClosedDrained int64 `json:"closed_drained"`
	// ClosedForNew counts conns closed on Close because the only checkouts
	// waiting for their address came from New, which needs a slot to dial
	// rather than a used conn.
	ClosedForNew int64 `json:"closed_for_new"`
	// Released counts conns closed with Conn.Release.
	Released int64 `json:"released"`
	// Retries counts retries that the retry budget let go (Do,
	// balancer.Pool and SpendRetry), under the address whose request
	// failed.
	Retries int64 `json:"retries"`
	// RetryBudgetExhausted counts retries the retry budget refused.
	RetryBudgetExhausted int64 `json:"retry_budget_exhausted"`
}

func (c *Counters) add(o Counters) {
	c.Dials += o.Dials
	c.DialErrors += o.DialErrors
	c.Reuses += o.Reuses
	c.WaitCount += o.WaitCount
	c.WaitDuration += o.WaitDuration
	c.ClosedIdleTimeout += o.ClosedIdleTimeout
	c.ClosedMaxLifetime += o.ClosedMaxLifetime
	c.ClosedBucketFull += o.ClosedBucketFull
	c.ClosedIdleCapEvicted += o.ClosedIdleCapEvicted
	c.ClosedForNew += o.ClosedForNew
	c.ClosedDrained += o.ClosedDrained
	c.ClosedDeadAtCheckout += o.ClosedDeadAtCheckout
	c.ClosedDeadWhileIdle += o.ClosedDeadWhileIdle
	c.ClosedValidatorFailed += o.ClosedValidatorFailed
	c.Released += o.Released
	c.Retries += o.Retries
	c.RetryBudgetExhausted += o.RetryBudgetExhausted
}

// notCounted is the reason of a conn closed because the pool closed,
// which no counter counts; code that judges whether a conn must be closed
// also returns it for a conn that may stay.
const notCounted = ClosePoolClosed

// count adds one conn closed for r to c.
func (c *Counters) count(r CloseReason) {
	if n := c.closed(r); n != nil {
		*n++
	}
}

// closed returns the counter of conns closed for r, or nil for
// ClosePoolClosed, which no counter counts.
func (c *Counters) closed(r CloseReason) *int64 {
	switch r {
	case CloseIdleTimeout:
		return &c.ClosedIdleTimeout
	case CloseMaxLifetime:
		return &c.ClosedMaxLifetime
	case CloseBucketFull:
		return &c.ClosedBucketFull
	case CloseIdleCapEvicted:
		return &c.ClosedIdleCapEvicted
	case CloseForNew:
		return &c.ClosedForNew
	case CloseDrained:
		return &c.ClosedDrained
	case CloseDeadAtCheckout:
		return &c.ClosedDeadAtCheckout
	case CloseDeadWhileIdle:
		return &c.ClosedDeadWhileIdle
	case CloseValidatorFailed:
		return &c.ClosedValidatorFailed
	case CloseReleased:
		return &c.Released
	}
	return nil
}

// Closed returns how many conns were closed for r: the counter that r
// names, such as ClosedIdleTimeout for [CloseIdleTimeout], or 0 for
// [ClosePoolClosed], which no counter counts. Exporters use it with
// [CountedCloseReasons] to label closes by reason.
func (c Counters) Closed(r CloseReason) int64 {
	if n := c.closed(r); n != nil {
		return *n
	}
	return 0
}

// CountedCloseReasons returns the reasons that [Counters] count, one per
// Closed… field and Released, in the order of the fields.
func CountedCloseReasons() []CloseReason {
	return []CloseReason{
		CloseIdleTimeout, CloseMaxLifetime, CloseBucketFull, CloseIdleCapEvicted,
		CloseDeadAtCheckout, CloseDeadWhileIdle, CloseValidatorFailed, CloseDrained,
		CloseForNew, CloseReleased,
	}
}

// DestinationStats describes the conns of one address.
type DestinationStats struct {
	// Address is the destination, as given to Get or New.
	Address string `json:"address"`
	// Total is the number of open conns bound to the address: in use plus
	// idle. Dials in flight are not counted.
	Total int64 `json:"total"`
	// Idle is the number of conns resting in the pool.
	Idle int64 `json:"idle"`
	// InUse is Total minus Idle: conns handed out and not yet returned.
	InUse int64 `json:"in_use"`
	// Waiting is the number of checkouts waiting at the WithMaxActive cap.
	Waiting int64 `json:"waiting"`

	// Shared is the number of values that leases share, in the shared mode
	// of clientpool.WithShared: they count in InUse. Leases is the number
	// of leases on them, and PeakLeases the most leases one value of the
	// address held at once; it restarts when the counters do. The time
	// checkouts waited for a share is in WaitCount and WaitDuration. All
	// three are 0 outside shared mode.
	Shared     int64 `json:"shared,omitempty"`
	Leases     int64 `json:"leases,omitempty"`
	PeakLeases int64 `json:"peak_leases,omitempty"`

	// Counters are running totals for the address. They restart from zero
	// when the cleaner forgets an address that has no conns left; the
	// pool-wide totals in Stats keep counting.
	Counters
}

// Stats is a snapshot of a pool, returned by [Pool.Stats].
type Stats struct {
	// Timestamp is when the snapshot was taken, in seconds since the Unix
	// epoch.
	Timestamp int64 `json:"timestamp"`

	// Total, Idle, InUse and Waiting are the sums over all addresses, and
	// so are Shared and Leases, which only shared mode moves.
	Total   int64 `json:"total"`
	Idle    int64 `json:"idle"`
	InUse   int64 `json:"in_use"`
	Waiting int64 `json:"waiting"`
	Shared  int64 `json:"shared,omitempty"`
	Leases  int64 `json:"leases,omitempty"`

	// Counters are the pool-wide running totals, including those of
	// addresses the cleaner has since forgotten.
	Counters

	// Destinations has one entry per address the pool currently knows,
	// sorted by address.
	Destinations []DestinationStats `json:"destinations"`
}

// Stats returns a snapshot of the pool's counts. Each address is read
// consistently; different addresses are read one after the other.
func (p *Pool) Stats() Stats {
	p.mustBeNew()
	s := Stats{Timestamp: time.Now().Unix()}
	r := &p.buckets
	r.mu.Lock()
	retired := r.retired
	s.Destinations = make([]DestinationStats, 0, r.n)
	r.eachLocked(func(b *bucket) {
		b.mu.Lock()
		s.Destinations = append(s.Destinations, b.statsLocked())
		b.mu.Unlock()
	})
	r.mu.Unlock()

	slices.SortFunc(s.Destinations, func(a, b DestinationStats) int {
		return strings.Compare(a.Address, b.Address)
	})
	s.Counters = retired
	for _, d := range s.Destinations {
		s.Total += d.Total
		s.Idle += d.Idle
		s.InUse += d.InUse
		s.Waiting += d.Waiting
		s.Shared += d.Shared
		s.Leases += d.Leases
		s.Counters.add(d.Counters)
	}
	if p.total != nil {
		s.Waiting += int64(p.total.waiting.Load())
	}
	return s
}

// String formats the snapshot as one line for the pool and one per address.
func (s Stats) String() string {
	lines := make([]string, 0, len(s.Destinations)+1)
	lines = append(lines, formatCounts("all", s.Total, s.Idle, s.InUse))
	for _, d := range s.Destinations {
		lines = append(lines, d.String())
	}
	return strings.Join(lines, "\n")
}

// String formats the counts of one address on one line.
func (d DestinationStats) String() string {
	return formatCounts(d.Address, d.Total, d.Idle, d.InUse)
}

func formatCounts(name string, total, idle, inUse int64) string {
	return fmt.Sprintf("%-24s total: %-6d idle: %-6d in use: %d", name, total, idle, inUse)
}
