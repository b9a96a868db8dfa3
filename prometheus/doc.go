// Package prometheus exports the counts of a connpool pool, and of the
// balancer in front of it, as Prometheus metrics. It is a module of its own,
// so that users of connpool who do not use Prometheus never download its
// client.
//
// A [Collector] reads the pool's [connpool.Stats] snapshot at each scrape;
// it adds no cost to Get or Close. It needs only a value with a Stats
// method, which *connpool.Pool and *clientpool.Pool[T] both have:
//
//	pool, err := connpool.New(dial, 16, 90*time.Second)
//	...
//	rr := balancer.NewRoundRobin(endpoints)
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(connpoolprom.NewCollector(pool, connpoolprom.WithBalancer(rr)))
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// where connpoolprom is this package, imported under another name than
// the client's prometheus. To tell several pools apart in one registry,
// register each through prometheus.WrapRegistererWith with a label of
// its own, such as pool="sessions".
//
// # Metrics
//
// Every metric but connpool_max_total_checkouts_waiting has an address
// label, unless the collector was made with [WithoutAddressLabel].
//
//	Name                                   Type     Extra label  Meaning
//	connpool_conns_open                    gauge                 open conns, in use plus idle (dials in flight not counted)
//	connpool_conns_idle                    gauge                 idle conns resting in the pool
//	connpool_conns_in_use                  gauge                 conns checked out and not yet returned
//	connpool_checkouts_waiting             gauge                 checkouts waiting at the address's WithMaxActive cap
//	connpool_max_total_checkouts_waiting   gauge                 checkouts waiting at the pool-wide WithMaxTotal cap (never an address label)
//	connpool_shared_values                 gauge                 values shared by leases (clientpool.WithShared; 0 otherwise)
//	connpool_leases                        gauge                 leases on shared values (clientpool.WithShared; 0 otherwise)
//	connpool_dials_total                   counter               successful dials
//	connpool_dial_errors_total             counter               failed dials
//	connpool_reuses_total                  counter               checkouts served from an idle conn
//	connpool_waits_total                   counter               checkouts that waited at a WithMaxActive or WithMaxTotal cap
//	connpool_wait_seconds_total            counter               time those checkouts waited, in seconds
//	connpool_closes_total                  counter  reason       conns the pool closed, by reason (see below)
//	connpool_retries_total                 counter               retries the retry budget let go
//	connpool_retry_budget_exhausted_total  counter               retries the retry budget refused
//
// With [WithBalancer]:
//
//	connpool_balancer_in_flight            gauge                 requests picked for the endpoint that have not ended
//	connpool_balancer_ejected              gauge                 1 while the endpoint is ejected, else 0
//	connpool_balancer_ejections_total      counter               ejections of the endpoint (consecutive failures, outlier detection)
//
// The reason label of connpool_closes_total is one of idle_timeout,
// max_lifetime, bucket_full, idle_cap_evicted, dead_at_checkout,
// dead_while_idle, validator_failed, drained, for_new and released, the
// names of [connpool.CloseReason]; each counts the matching field of
// [connpool.Counters]. Conns closed because the pool was closed are not
// counted.
//
// # Counter resets
//
// The per-address counters come from [connpool.DestinationStats]. The pool
// forgets an address that has no conns left, and if the address comes back,
// its counters start again from zero. Prometheus treats that as a counter
// reset, so rate and increase stay right, but the increments between the
// last scrape and the moment the address was forgotten are lost, and the
// series of a forgotten address ends. Sum over addresses after taking the
// rate:
//
//	sum by (reason) (rate(connpool_closes_total[5m]))
//
// With [WithoutAddressLabel], the counters are the pool-wide totals of
// [connpool.Stats], which count forgotten addresses too and never go down.
// The balancer's ejection counters restart when an Update removes an
// endpoint and a later one adds it back, and so does their sum without the
// address label.
//
// # Without the address label
//
// [WithoutAddressLabel] replaces the series of each address with one series
// for the pool: gauges and counters are sums over the addresses,
// connpool_balancer_ejected is the number of endpoints ejected, and the
// other balancer metrics are sums over the endpoints.
package prometheus
