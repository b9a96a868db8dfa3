package otel

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/semconv/v1.43.0/dbconv"

	"github.com/seed73091bf1/connpool"
	"github.com/seed73091bf1/connpool/balancer"
)

// ScopeName is the name of the instrumentation scope, the Meter, that
// [Register] reports under.
const ScopeName = "github.com/seed73091bf1/connpool/otel"

// DefaultPoolName is the value of the db.client.connection.pool.name
// attribute unless [WithPoolName] sets another.
const DefaultPoolName = "connpool"

// CloseReasonKey is the attribute of connpool.closes that says why the pool
// closed a conn: one of the names of [connpool.CloseReason] but
// ClosePoolClosed.
const CloseReasonKey = attribute.Key("connpool.close.reason")

// StatsSource is a pool [Register] reads: *connpool.Pool and
// *clientpool.Pool[T] are both one.
type StatsSource interface {
	Stats() connpool.Stats
}

// StateSource is a balancer [Register] reads: every balancer of package
// balancer is one.
type StateSource interface {
	States() []balancer.State
}

// Option configures [Register].
type Option func(*config)

type config struct {
	balancer   StateSource // nil for none
	perAddress bool
	poolName   string
}

// WithBalancer adds the connpool.balancer.* instruments, read from b in
// the same callback as the pool. Without it, or with a nil b, no balancer
// instrument is registered.
func WithBalancer(b StateSource) Option {
	return func(c *config) { c.balancer = b }
}

// WithoutAddressAttribute reports pool-wide totals instead of one data
// point per address, for pools that reach very many addresses, where a
// stream per address would cost the metrics backend more than it is worth.
// The counters then come from the pool-wide totals of [connpool.Stats],
// which keep counting across addresses the pool forgets, and the balancer
// instruments are sums over the endpoints. By default every data point of
// an address carries the server.address and server.port attributes.
func WithoutAddressAttribute() Option {
	return func(c *config) { c.perAddress = false }
}

// WithPoolName sets the value of the db.client.connection.pool.name
// attribute that every data point carries, which tells pools apart that
// report to the same MeterProvider. The default is [DefaultPoolName]; an
// empty name means the default.
func WithPoolName(name string) Option {
	return func(c *config) {
		if name == "" {
			name = DefaultPoolName
		}
		c.poolName = name
	}
}

// Register registers observable instruments for pool, and for its balancer
// with [WithBalancer], on a Meter of mp named [ScopeName], with one callback
// that takes one [connpool.Stats] snapshot, and one snapshot of the
// balancer's states, per collection. It adds no cost to Get or Close. The
// instruments are listed in the package documentation.
//
// A nil mp means the global MeterProvider, otel.GetMeterProvider. Register
// returns an error if pool is nil or an instrument cannot be created, and
// then registers nothing. Call Unregister on the returned Registration to
// stop reporting, when the pool is closed or no longer of interest; until
// then the Meter keeps the pool and the balancer reachable.
func Register(mp metric.MeterProvider, pool StatsSource, opts ...Option) (metric.Registration, error) {
	if pool == nil {
		return nil, errors.New("connpool/otel: Register with a nil pool")
	}
	c := config{perAddress: true, poolName: DefaultPoolName}
	for _, o := range opts {
		o(&c)
	}
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(ScopeName, metric.WithSchemaURL(semconv.SchemaURL))
	r, err := newReporter(m, pool, c)
	if err != nil {
		return nil, err
	}
	return m.RegisterCallback(r.observe, r.observables()...)
}

// reporter holds the instruments of one registration and observes them.
type reporter struct {
	pool       StatsSource
	balancer   StateSource // nil for none
	perAddress bool
	pool1      attribute.KeyValue // db.client.connection.pool.name
	poolOnly   attribute.Set      // pool1 alone

	count, pending, shared, leases                             metric.Int64ObservableUpDownCounter
	dials, dialErrors, reuses, waits, closes, retries, refused metric.Int64ObservableCounter
	waitTime                                                   metric.Float64ObservableCounter

	inFlight, ejected metric.Int64ObservableUpDownCounter // with a balancer
	ejections         metric.Int64ObservableCounter
}

func newReporter(m metric.Meter, pool StatsSource, c config) (*reporter, error) {
	r := &reporter{
		pool:       pool,
		balancer:   c.balancer,
		perAddress: c.perAddress,
		pool1:      semconv.DBClientConnectionPoolNameKey.String(c.poolName),
	}
	r.poolOnly = attribute.NewSet(r.pool1)

	var errs []error
	upDown := func(name, unit, desc string) metric.Int64ObservableUpDownCounter {
		i, err := m.Int64ObservableUpDownCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return i
	}
	counter := func(name, unit, desc string) metric.Int64ObservableCounter {
		i, err := m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return i
	}

	count, err := dbconv.NewClientConnectionCountObservable(m)
	errs = append(errs, err)
	r.count = count.Inst()
	pending, err := dbconv.NewClientConnectionPendingRequestsObservable(m)
	errs = append(errs, err)
	r.pending = pending.Inst()
	r.shared = upDown("connpool.shared.count", "{connection}",
		"Values that leases share, in the shared mode of clientpool.WithShared; they count as used.")
	r.leases = upDown("connpool.lease.count", "{lease}",
		"Leases on shared values, in the shared mode of clientpool.WithShared.")

	r.dials = counter("connpool.dials", "{connection}", "Successful dials.")
	r.dialErrors = counter("connpool.dial.errors", "{error}", "Failed dials.")
	r.reuses = counter("connpool.reuses", "{connection}", "Checkouts served from an idle conn.")
	r.waits = counter("connpool.waits", "{request}", "Checkouts that had to wait at a WithMaxActive or WithMaxTotal cap.")
	r.waitTime, err = m.Float64ObservableCounter("connpool.wait.time", metric.WithUnit("s"),
		metric.WithDescription("Total time checkouts waited at a cap, including waits that failed."))
	errs = append(errs, err)
	r.closes = counter("connpool.closes", "{connection}",
		"Conns the pool closed, by reason; conns closed because the pool closed are not counted.")
	r.retries = counter("connpool.retries", "{request}", "Retries the retry budget let go, under the address whose request failed.")
	r.refused = counter("connpool.retry_budget.exhausted", "{request}", "Retries the retry budget refused.")

	if r.balancer != nil {
		r.inFlight = upDown("connpool.balancer.in_flight", "{request}",
			"Requests the balancer picked the endpoint for that have not ended.")
		r.ejected = upDown("connpool.balancer.ejected", "{endpoint}",
			"1 while the endpoint is ejected, 0 otherwise; the sum is the number of endpoints ejected.")
		r.ejections = counter("connpool.balancer.ejections", "{ejection}",
			"Ejections of the endpoint, for consecutive failures and as an outlier.")
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return r, nil
}

// observables returns every instrument the callback observes.
func (r *reporter) observables() []metric.Observable {
	o := []metric.Observable{
		r.count, r.pending, r.shared, r.leases,
		r.dials, r.dialErrors, r.reuses, r.waits, r.waitTime, r.closes, r.retries, r.refused,
	}
	if r.balancer != nil {
		o = append(o, r.inFlight, r.ejected, r.ejections)
	}
	return o
}

// observe is the callback: it takes one snapshot of the pool, and one of
// the balancer if there is one, and observes every instrument from them.
func (r *reporter) observe(_ context.Context, o metric.Observer) error {
	s := r.pool.Stats()
	var states []balancer.State
	if r.balancer != nil {
		states = r.balancer.States()
	}

	if !r.perAddress {
		r.observeCounts(o, []attribute.KeyValue{r.pool1}, s.Idle, s.InUse, s.Waiting, s.Shared, s.Leases, &s.Counters)
		if r.balancer != nil {
			var inFlight, ejected, ejections int64
			for _, st := range states {
				inFlight += st.InFlight
				ejections += st.Ejections
				if st.Ejected {
					ejected++
				}
			}
			r.observeBalancer(o, r.poolOnly, inFlight, ejected, ejections)
		}
		return nil
	}

	// Stats.Waiting adds the checkouts waiting at the WithMaxTotal cap to
	// those waiting at the addresses' WithMaxActive caps; the former belong
	// to no address.
	var atAddresses int64
	for i := range s.Destinations {
		d := &s.Destinations[i]
		atAddresses += d.Waiting
		r.observeCounts(o, r.attrs(d.Address), d.Idle, d.InUse, d.Waiting, d.Shared, d.Leases, &d.Counters)
	}
	o.ObserveInt64(r.pending, s.Waiting-atAddresses, metric.WithAttributeSet(r.poolOnly))
	for _, st := range states {
		var ejected int64
		if st.Ejected {
			ejected = 1
		}
		r.observeBalancer(o, attribute.NewSet(r.attrs(st.Address)...), st.InFlight, ejected, st.Ejections)
	}
	return nil
}

// attrs returns the attributes of the data points of address.
func (r *reporter) attrs(address string) []attribute.KeyValue {
	return append([]attribute.KeyValue{r.pool1}, serverAttributes(address)...)
}

// observeCounts observes the pool instruments for one address, or for the
// whole pool, whose attributes are base.
func (r *reporter) observeCounts(o metric.Observer, base []attribute.KeyValue, idle, inUse, waiting, shared, leases int64, n *connpool.Counters) {
	with := func(extra attribute.KeyValue) metric.ObserveOption {
		return metric.WithAttributeSet(attribute.NewSet(append(base[:len(base):len(base)], extra)...))
	}
	set := metric.WithAttributeSet(attribute.NewSet(base...))

	o.ObserveInt64(r.count, idle, with(semconv.DBClientConnectionStateIdle))
	o.ObserveInt64(r.count, inUse, with(semconv.DBClientConnectionStateUsed))
	o.ObserveInt64(r.pending, waiting, set)
	o.ObserveInt64(r.shared, shared, set)
	o.ObserveInt64(r.leases, leases, set)

	o.ObserveInt64(r.dials, n.Dials, set)
	o.ObserveInt64(r.dialErrors, n.DialErrors, set)
	o.ObserveInt64(r.reuses, n.Reuses, set)
	o.ObserveInt64(r.waits, n.WaitCount, set)
	o.ObserveFloat64(r.waitTime, n.WaitDuration.Seconds(), set)
	o.ObserveInt64(r.retries, n.Retries, set)
	o.ObserveInt64(r.refused, n.RetryBudgetExhausted, set)
	for _, reason := range connpool.CountedCloseReasons() {
		o.ObserveInt64(r.closes, n.Closed(reason), with(CloseReasonKey.String(reason.String())))
	}
}

// observeBalancer observes the balancer instruments for one endpoint, or
// for all of them, with the attributes set.
func (r *reporter) observeBalancer(o metric.Observer, set attribute.Set, inFlight, ejected, ejections int64) {
	opt := metric.WithAttributeSet(set)
	o.ObserveInt64(r.inFlight, inFlight, opt)
	o.ObserveInt64(r.ejected, ejected, opt)
	o.ObserveInt64(r.ejections, ejections, opt)
}
