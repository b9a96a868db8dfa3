package prometheus

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/balancer"
)

// StatsSource is a pool the [Collector] reads: *connpool.Pool and
// *clientpool.Pool[T] are both one.
type StatsSource interface {
	Stats() connpool.Stats
}

// StateSource is a balancer the [Collector] reads: every balancer of package
// balancer is one.
type StateSource interface {
	States() []balancer.State
}

// Option configures a [Collector].
type Option func(*Collector)

// WithBalancer adds the connpool_balancer_* metrics of b, read with the
// pool's at each scrape. Without it, or with a nil b, the collector reports
// no balancer metrics.
func WithBalancer(b StateSource) Option {
	return func(c *Collector) { c.balancer = b }
}

// WithoutAddressLabel reports pool-wide totals instead of one series per
// address, for pools that reach very many addresses, where a series per
// address would cost the Prometheus server more than it is worth. The
// counters then come from the pool-wide totals of [connpool.Stats], which
// keep counting across addresses the pool forgets, and the balancer metrics
// are sums over the endpoints. By default every metric but
// connpool_max_total_checkouts_waiting has an address label.
func WithoutAddressLabel() Option {
	return func(c *Collector) { c.perAddress = false }
}

// Collector is a [prometheus.Collector] for a pool and, optionally, the
// balancer in front of it. Each scrape takes one [connpool.Stats] snapshot
// and one snapshot of the balancer's states, so the values of a scrape are
// read together. The metrics are listed in the package documentation.
//
// A Collector is safe for concurrent use. It keeps no state between scrapes:
// the pool and the balancer are the only sources of the values.
type Collector struct {
	pool       StatsSource
	balancer   StateSource // nil for none
	perAddress bool

	// The descriptions, built once by NewCollector.
	open, idle, inUse, waiting, maxTotalWaiting, shared, leases *prometheus.Desc

	dials, dialErrors, reuses, waits, waitSeconds, closes,
	retries, retryBudgetExhausted *prometheus.Desc

	inFlight, ejected, ejections *prometheus.Desc
}

// NewCollector returns a collector for pool. Register it with a
// [prometheus.Registerer]; to tell several pools apart in one registry,
// register each through [prometheus.WrapRegistererWith] with a label that
// names it. NewCollector panics if pool is nil.
func NewCollector(pool StatsSource, opts ...Option) *Collector {
	if pool == nil {
		panic("connpool/prometheus: NewCollector with a nil pool")
	}
	c := &Collector{pool: pool, perAddress: true}
	for _, o := range opts {
		o(c)
	}

	var addr []string
	if c.perAddress {
		addr = []string{"address"}
	}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("connpool_"+name, help, append(addr[:len(addr):len(addr)], labels...), nil)
	}
	c.open = desc("conns_open", "Open conns, in use plus idle; dials in flight are not counted.")
	c.idle = desc("conns_idle", "Idle conns resting in the pool.")
	c.inUse = desc("conns_in_use", "Conns checked out and not yet returned.")
	c.waiting = desc("checkouts_waiting", "Checkouts waiting at the WithMaxActive cap of their address.")
	c.maxTotalWaiting = prometheus.NewDesc("connpool_max_total_checkouts_waiting",
		"Checkouts waiting for a slot at the pool-wide WithMaxTotal cap.", nil, nil)
	c.shared = desc("shared_values", "Values that leases share, in the shared mode of clientpool.WithShared.")
	c.leases = desc("leases", "Leases on shared values, in the shared mode of clientpool.WithShared.")

	c.dials = desc("dials_total", "Successful dials.")
	c.dialErrors = desc("dial_errors_total", "Failed dials.")
	c.reuses = desc("reuses_total", "Checkouts served from an idle conn.")
	c.waits = desc("waits_total", "Checkouts that had to wait at a WithMaxActive or WithMaxTotal cap.")
	c.waitSeconds = desc("wait_seconds_total", "Total time checkouts waited at a cap, including waits that failed.")
	c.closes = desc("closes_total", "Conns the pool closed, by reason; conns closed because the pool closed are not counted.", "reason")
	c.retries = desc("retries_total", "Retries the retry budget let go, under the address whose request failed.")
	c.retryBudgetExhausted = desc("retry_budget_exhausted_total", "Retries the retry budget refused.")

	if c.balancer != nil {
		c.inFlight = desc("balancer_in_flight", "Requests the balancer picked the endpoint for that have not ended.")
		c.ejected = desc("balancer_ejected", "1 while the endpoint is ejected, 0 otherwise; without the address label, the number of endpoints ejected.")
		c.ejections = desc("balancer_ejections_total", "Ejections of the endpoint, for consecutive failures and as an outlier.")
	}
	return c
}

// Describe sends the descriptions of every metric the collector reports.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.open, c.idle, c.inUse, c.waiting, c.maxTotalWaiting, c.shared, c.leases,
		c.dials, c.dialErrors, c.reuses, c.waits, c.waitSeconds, c.closes,
		c.retries, c.retryBudgetExhausted,
	} {
		ch <- d
	}
	if c.balancer != nil {
		ch <- c.inFlight
		ch <- c.ejected
		ch <- c.ejections
	}
}

// Collect takes one snapshot of the pool, and one of the balancer if there
// is one, and sends their metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stats()
	var states []balancer.State
	if c.balancer != nil {
		states = c.balancer.States()
	}

	// Stats.Waiting adds the checkouts waiting at the WithMaxTotal cap to
	// those waiting at the addresses' WithMaxActive caps.
	var atAddresses int64
	for _, d := range s.Destinations {
		atAddresses += d.Waiting
	}
	ch <- prometheus.MustNewConstMetric(c.maxTotalWaiting, prometheus.GaugeValue, float64(s.Waiting-atAddresses))

	if !c.perAddress {
		c.collectCounts(ch, s.Total, s.Idle, s.InUse, atAddresses, s.Shared, s.Leases, &s.Counters)
		if c.balancer != nil {
			var inFlight, ejected, ejections int64
			for _, st := range states {
				inFlight += st.InFlight
				ejections += st.Ejections
				if st.Ejected {
					ejected++
				}
			}
			c.collectBalancer(ch, inFlight, ejected, ejections)
		}
		return
	}

	for i := range s.Destinations {
		d := &s.Destinations[i]
		c.collectCounts(ch, d.Total, d.Idle, d.InUse, d.Waiting, d.Shared, d.Leases, &d.Counters, d.Address)
	}
	for _, st := range states {
		var ejected int64
		if st.Ejected {
			ejected = 1
		}
		c.collectBalancer(ch, st.InFlight, ejected, st.Ejections, st.Address)
	}
}

// collectCounts sends the pool metrics of one address, or of the whole pool
// when no address is given. The reason label takes the names of
// [connpool.CloseReason], which a Trace's ConnClosed hook sees too.
func (c *Collector) collectCounts(ch chan<- prometheus.Metric, total, idle, inUse, waiting, shared, leases int64, n *connpool.Counters, address ...string) {
	gauge := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), address...)
	}
	counter := func(d *prometheus.Desc, v float64, reason ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, append(address[:len(address):len(address)], reason...)...)
	}
	gauge(c.open, total)
	gauge(c.idle, idle)
	gauge(c.inUse, inUse)
	gauge(c.waiting, waiting)
	gauge(c.shared, shared)
	gauge(c.leases, leases)

	counter(c.dials, float64(n.Dials))
	counter(c.dialErrors, float64(n.DialErrors))
	counter(c.reuses, float64(n.Reuses))
	counter(c.waits, float64(n.WaitCount))
	counter(c.waitSeconds, n.WaitDuration.Seconds())
	counter(c.retries, float64(n.Retries))
	counter(c.retryBudgetExhausted, float64(n.RetryBudgetExhausted))
	for _, reason := range connpool.CountedCloseReasons() {
		counter(c.closes, float64(n.Closed(reason)), reason.String())
	}
}

// collectBalancer sends the balancer metrics of one endpoint, or of all of
// them when no address is given.
func (c *Collector) collectBalancer(ch chan<- prometheus.Metric, inFlight, ejected, ejections int64, address ...string) {
	ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(inFlight), address...)
	ch <- prometheus.MustNewConstMetric(c.ejected, prometheus.GaugeValue, float64(ejected), address...)
	ch <- prometheus.MustNewConstMetric(c.ejections, prometheus.CounterValue, float64(ejections), address...)
}
