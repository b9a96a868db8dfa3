// Package otel reports the counts of a connpool pool, and of the balancer
// in front of it, as OpenTelemetry metrics. It is a module of its own, so
// that users of connpool who do not use OpenTelemetry never download its
// API.
//
// [Register] creates observable (asynchronous) instruments and one callback
// that takes one [connpool.Stats] snapshot, and one snapshot of the
// balancer's states, per collection, so the values of a collection are read
// together and Get and Close pay nothing. It needs only a value with a Stats
// method, which *connpool.Pool and *clientpool.Pool[T] both have:
//
//	pool, err := connpool.New(dial, 16, 90*time.Second)
//	...
//	rr := balancer.NewRoundRobin(endpoints)
//	reg, err := connpoolotel.Register(meterProvider, pool,
//		connpoolotel.WithPoolName("cache"), connpoolotel.WithBalancer(rr))
//	...
//	defer reg.Unregister()
//
// where connpoolotel is this package, imported under another name than
// go.opentelemetry.io/otel.
//
// # Instruments
//
// Names follow the OpenTelemetry semantic conventions for database client
// connection pools (semconv 1.43.0, whose schema URL the Meter carries)
// where they define one that the snapshot can fill; the rest are in the
// connpool namespace. Every data point has the attribute
// db.client.connection.pool.name ([WithPoolName]; [DefaultPoolName] by
// default), and the data points of an address have server.address and
// server.port, unless [WithoutAddressAttribute] is given.
//
//	Name                                  Kind           Unit          Extra attribute             Source
//	db.client.connection.count            UpDownCounter  {connection}  db.client.connection.state  Idle (idle), InUse (used)
//	db.client.connection.pending_requests UpDownCounter  {request}                                 Waiting (see below)
//	connpool.shared.count                 UpDownCounter  {connection}                              Shared (clientpool.WithShared; 0 otherwise)
//	connpool.lease.count                  UpDownCounter  {lease}                                   Leases (clientpool.WithShared; 0 otherwise)
//	connpool.dials                        Counter        {connection}                              Dials
//	connpool.dial.errors                  Counter        {error}                                   DialErrors
//	connpool.reuses                       Counter        {connection}                              Reuses
//	connpool.waits                        Counter        {request}                                 WaitCount
//	connpool.wait.time                    Counter (f64)  s                                         WaitDuration
//	connpool.closes                       Counter        {connection}  connpool.close.reason       Closed*, Released
//	connpool.retries                      Counter        {request}                                 Retries
//	connpool.retry_budget.exhausted       Counter        {request}                                 RetryBudgetExhausted
//
// With [WithBalancer], from each [balancer.State]:
//
//	connpool.balancer.in_flight           UpDownCounter  {request}                                 InFlight
//	connpool.balancer.ejected             UpDownCounter  {endpoint}                                1 if Ejected, else 0
//	connpool.balancer.ejections           Counter        {ejection}                                Ejections
//
// Every kind is observable: Int64ObservableUpDownCounter,
// Int64ObservableCounter, and a Float64ObservableCounter for
// connpool.wait.time. The counts of things that go up and down are
// UpDownCounters rather than Gauges, as semconv has it for
// db.client.connection.count, because their sum over addresses means
// something; connpool.balancer.ejected sums to the number of endpoints
// ejected.
//
// connpool.close.reason is one of idle_timeout, max_lifetime, bucket_full,
// idle_cap_evicted, dead_at_checkout, dead_while_idle, validator_failed,
// drained, for_new and released, the names of [connpool.CloseReason]; each
// counts the matching field of [connpool.Counters]. Conns closed because the
// pool was closed are not counted.
//
// db.client.connection.pending_requests has a data point per address for
// the checkouts waiting at the address's WithMaxActive cap, and one with no
// server attributes for those waiting at the pool-wide WithMaxTotal cap, so
// that the sum over all data points is Stats.Waiting.
//
// # Why these names
//
//   - db.client.connection.count and db.client.connection.pending_requests
//     are the semconv instruments, with their semconv descriptions, units
//     and attributes. connpool is not a database client, but these
//     instruments describe any client connection pool, and dashboards and
//     backends that know them work unchanged.
//   - semconv's db.client.connection.wait_time is a histogram of each
//     checkout's wait, which running totals cannot rebuild. The pool keeps
//     a count and a total instead, reported as connpool.waits and
//     connpool.wait.time (named after semconv's cumulative process.cpu.time)
//     so that no backend mistakes them for the histogram; their ratio is
//     the mean wait. db.client.connection.create_time and use_time are
//     histograms too and are not reported; db.client.connection.max,
//     idle.max, idle.min and timeouts are not in the snapshot.
//   - semconv has no names for dials, reuses, closes, retries or the
//     balancer, so they live under connpool.*, in the style of semconv's
//     own names: .count for UpDownCounters of things present, as in
//     db.client.connection.count, plural nouns for counters of events, UCUM
//     units with {annotations}, seconds for time.
//   - db.client.connection.pool.name is required by semconv. A connpool
//     pool has no name and reaches many servers, so the semconv fallback of
//     server.address:server.port does not apply; the name is
//     [DefaultPoolName] unless [WithPoolName] gives one. Give each pool its
//     own name when several report to the same MeterProvider.
//   - server.address and server.port are split as semconv defines them:
//     host without brackets, and port as an integer, so that backends join
//     them with the attributes of other instrumentations. An address that
//     does not split back into itself with net.JoinHostPort (a Unix socket
//     path, a named port such as "host:http") is kept whole in
//     server.address, without server.port, so two addresses never share a
//     stream.
//
// # Counter resets
//
// The per-address counters come from [connpool.DestinationStats]. The pool
// forgets an address that has no conns left, and if the address comes
// back, its counters start again from zero, so the cumulative sums of that
// address can go down. Backends that read cumulative sums, such as
// Prometheus, treat a decrease as a reset. With delta temporality, the SDK
// reports a negative delta once if the address was forgotten and came back
// between two collections, and the whole new value if it was absent from a
// collection. Either way, the increments between the previous collection
// and the moment the pool forgot the address are lost.
//
// With [WithoutAddressAttribute], the counters are the pool-wide totals of
// [connpool.Stats], which count forgotten addresses too and never go down.
// The balancer's ejection counters restart when an Update removes an
// endpoint and a later one adds it back, and so does their sum.
package otel
