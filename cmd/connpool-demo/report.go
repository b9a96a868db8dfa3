package main

import (
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/balancer"
)

// stater is a balancer that reports its endpoints' state, as every policy
// of package balancer does.
type stater interface {
	States() []balancer.State
}

// meter turns what the clients recorded into a status per interval. It is
// used by one goroutine: the one that reports.
type meter struct {
	start    time.Time
	backends []*backend
	pool     *connpool.Pool
	bal      balancer.Balancer
	failed   *atomic.Int64

	last       time.Time         // end of the previous interval
	lastFailed int64             // failed requests by then
	lastStats  connpool.Counters // pool counters by then

	interval, total *Histogram // latencies of all backends
}

func newMeter(start time.Time, backends []*backend, pool *connpool.Pool, bal balancer.Balancer, failed *atomic.Int64) *meter {
	return &meter{
		start: start, backends: backends, pool: pool, bal: bal, failed: failed,
		last: start, interval: newHistogram(), total: newHistogram(),
	}
}

// status is what happened in one interval, and since the start.
type status struct {
	elapsed time.Duration // since the start, at the end of the interval
	span    time.Duration // the interval's length
	rows    []backendRow

	requests uint64 // of the interval, like the fields below
	p50, p99 time.Duration
	failed   int64
	dials    int64
	dialErrs int64
	reuses   int64

	allP50, allP99 time.Duration // since the start
	haveStates     bool          // whether rows hold InFlight and Ejected
}

// backendRow is one backend's part of a status.
type backendRow struct {
	addr       string
	requests   uint64
	p50, p99   time.Duration
	inFlight   int64
	ejected    bool
	ejectedFor time.Duration // left, if ejected
}

// sample ends the interval at now: it takes the latencies recorded since
// the last sample from the backends' recorders, and the counters of the
// pool.
func (m *meter) sample(now time.Time) status {
	s := status{elapsed: now.Sub(m.start), span: now.Sub(m.last)}
	states := map[string]balancer.State{}
	if st, ok := m.bal.(stater); ok {
		s.haveStates = true
		for _, e := range st.States() {
			states[e.Address] = e
		}
	}
	m.interval.Reset()
	for _, b := range m.backends {
		b.interval.Reset()
		b.latency.Drain(b.interval)
		b.total.Merge(b.interval)
		m.interval.Merge(b.interval)
		e := states[b.addr]
		row := backendRow{
			addr: b.addr, requests: b.interval.Count(),
			p50: b.interval.Quantile(0.5), p99: b.interval.Quantile(0.99),
			inFlight: e.InFlight, ejected: e.Ejected,
		}
		if e.Ejected {
			row.ejectedFor = max(0, e.EjectedUntil.Sub(now))
		}
		s.rows = append(s.rows, row)
	}
	m.total.Merge(m.interval)
	s.requests = m.interval.Count()
	s.p50, s.p99 = m.interval.Quantile(0.5), m.interval.Quantile(0.99)
	s.allP50, s.allP99 = m.total.Quantile(0.5), m.total.Quantile(0.99)

	failed, c := m.failed.Load(), m.pool.Stats().Counters
	s.failed = failed - m.lastFailed
	s.dials, s.dialErrs, s.reuses = c.Dials-m.lastStats.Dials, c.DialErrors-m.lastStats.DialErrors, c.Reuses-m.lastStats.Reuses
	m.last, m.lastFailed, m.lastStats = now, failed, c
	return s
}

// rate returns n per second of the interval.
func (s status) rate(n uint64) float64 {
	if s.span <= 0 {
		return 0
	}
	return float64(n) / s.span.Seconds()
}

// reuse returns the share of checkouts of the interval that reused a conn,
// in percent.
func (s status) reuse() float64 {
	if s.reuses+s.dials == 0 {
		return 0
	}
	return 100 * float64(s.reuses) / float64(s.reuses+s.dials)
}

// line formats s as one status line.
func (s status) line() string {
	return fmt.Sprintf("%s  %7.0f req/s  p50 %-7s p99 %-7s  errors %d  dials %d  dial errors %d  reuse %5.1f%%  (since start: p50 %s, p99 %s)",
		stamp(s.elapsed), s.rate(s.requests), dur(s.p50), dur(s.p99),
		s.failed, s.dials, s.dialErrs, s.reuse(), dur(s.allP50), dur(s.allP99))
}

// table formats s as the live table, one line per backend and two for all
// of them.
func (s status) table() string {
	var b strings.Builder
	row := func(name, rate, p50, p99, inFlight, ejected string) {
		line := fmt.Sprintf("%-22s %9s %9s %9s %10s  %s", name, rate, p50, p99, inFlight, ejected)
		b.WriteString(strings.TrimRight(line, " ") + "\n")
	}
	fmt.Fprintf(&b, "\n%s  status of the last %s:\n", stamp(s.elapsed), s.span.Round(time.Millisecond))
	row("backend", "req/s", "p50", "p99", "in flight", "ejected")
	var inFlight int64
	for _, r := range s.rows {
		flight, ejected := "-", "-"
		if s.haveStates {
			flight, ejected = fmt.Sprint(r.inFlight), ""
			if r.ejected {
				ejected = fmt.Sprintf("yes, %.1fs left", r.ejectedFor.Seconds())
			}
		}
		inFlight += r.inFlight
		row(r.addr, fmt.Sprintf("%.0f", s.rate(r.requests)), dur(r.p50), dur(r.p99), flight, ejected)
	}
	total := "-"
	if s.haveStates {
		total = fmt.Sprint(inFlight)
	}
	row("all backends", fmt.Sprintf("%.0f", s.rate(s.requests)), dur(s.p50), dur(s.p99), total, "")
	row("  since start", "", dur(s.allP50), dur(s.allP99), "", "")
	fmt.Fprintf(&b, "errors %d  dials %d  dial errors %d  reuse %.1f%%\n", s.failed, s.dials, s.dialErrs, s.reuse())
	return b.String()
}

// dur formats a latency to three significant digits, or "-" for none.
func dur(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	unit := time.Duration(1)
	for d >= 1000*unit {
		unit *= 10
	}
	return d.Round(unit).String()
}
