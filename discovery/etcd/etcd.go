// Package etcd feeds a balancer from etcd: a [Watcher] follows the keys
// under a prefix, where each backend registers itself as
// prefix + address → {"weight": n}, and [Register] keeps this process
// registered under a lease while it runs. It is a module of its own, so
// that users of connpool who do not use etcd never download its client.
//
// The watcher follows the rules of package discovery: the first listing
// runs in the constructor, Update is called only when the set changes, an
// empty set or an error keeps the last good set (and is reported), and
// Close ends every goroutine. After its watch is compacted away or lost,
// the watcher lists the prefix again and watches from there.
package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/seed73091bf1/connpool/balancer"
	"github.com/seed73091bf1/connpool/discovery"
)

// ErrClosed is returned by a second Close.
var ErrClosed = errors.New("etcd: closed")

// Value is what a backend's key holds.
type Value struct {
	Weight int `json:"weight"`
}

// Stats are a watcher's counts since it was created.
type Stats struct {
	Resyncs   int64 // listings of the prefix after the first
	Updates   int64 // calls of Update: the set changed
	Errors    int64 // watch errors, bad values and empty sets
	Endpoints int   // endpoints in the last good set
}

// Watcher follows the backends registered under a prefix and feeds them
// to an Updater.
type Watcher struct {
	cli    *clientv3.Client
	prefix string
	pub    *discovery.Publisher // Publish is called by run only (the constructor before)
	onErr  func(error)

	cancel context.CancelFunc
	done   chan struct{}
	closed atomic.Bool

	resyncs, errs atomic.Int64

	// Owned by run (the constructor before it starts).
	kv map[string]balancer.Endpoint // key → endpoint
}

// Option configures a Watcher.
type Option func(*Watcher)

// WithErrorHandler sets a function called, on the watcher's goroutine,
// with each watch error, each value that is not valid JSON and each time
// the set became empty (the last good set is kept).
func WithErrorHandler(fn func(error)) Option { return func(w *Watcher) { w.onErr = fn } }

// NewWatcher lists the keys under prefix within ctx, passes their
// endpoints to u, and then follows changes until Close. It returns the
// error of the first listing, wrapping discovery.ErrNoEndpoints if there
// is no key.
func NewWatcher(ctx context.Context, cli *clientv3.Client, prefix string, u discovery.Updater, opts ...Option) (*Watcher, error) {
	if cli == nil || u == nil || prefix == "" {
		return nil, errors.New("etcd: NewWatcher needs a client, a prefix and an Updater")
	}
	w := &Watcher{cli: cli, prefix: prefix, pub: discovery.NewPublisher(u), done: make(chan struct{})}
	for _, o := range opts {
		o(w)
	}
	rev, err := w.list(ctx)
	if err != nil {
		return nil, err
	}
	if err := w.publish(); err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go w.run(runCtx, rev)
	return w, nil
}

// Close stops the watcher and waits for its goroutine. A second Close
// returns ErrClosed.
func (w *Watcher) Close() error {
	if !w.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	w.cancel()
	<-w.done
	return nil
}

// Stats returns the watcher's counts.
func (w *Watcher) Stats() Stats {
	return Stats{Resyncs: w.resyncs.Load(), Updates: w.pub.Updates(), Errors: w.errs.Load(), Endpoints: w.pub.Len()}
}

// list reads every key under the prefix and returns the revision read.
func (w *Watcher) list(ctx context.Context) (int64, error) {
	resp, err := w.cli.Get(ctx, w.prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("etcd: listing %s: %w", w.prefix, err)
	}
	w.kv = make(map[string]balancer.Endpoint, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		w.put(string(kv.Key), kv.Value)
	}
	return resp.Header.Revision, nil
}

// put records the endpoint of key; a value that does not parse is
// reported and the key left out.
func (w *Watcher) put(key string, value []byte) {
	addr := strings.TrimPrefix(key, w.prefix)
	var v Value
	if err := json.Unmarshal(value, &v); err != nil || addr == "" || v.Weight < 0 {
		w.report(fmt.Errorf("etcd: key %q: value %q is not {\"weight\": n ≥ 0}", key, value))
		delete(w.kv, key)
		return
	}
	w.kv[key] = balancer.Endpoint{Address: addr, Weight: v.Weight}
}

// publish passes the set on if it changed; an empty set is reported and
// not passed on.
func (w *Watcher) publish() error {
	eps := make([]balancer.Endpoint, 0, len(w.kv))
	for _, e := range w.kv {
		eps = append(eps, e)
	}
	if err := w.pub.Publish(eps); err != nil {
		err = fmt.Errorf("etcd: %w under %s", err, w.prefix)
		w.report(err)
		return err
	}
	return nil
}

func (w *Watcher) report(err error) {
	w.errs.Add(1)
	if w.onErr != nil {
		w.onErr(err)
	}
}

// run watches from the revision after rev, and lists again whenever the
// watch ends: it was compacted away, or lost with the connection.
func (w *Watcher) run(ctx context.Context, rev int64) {
	defer close(w.done)
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		w.watch(wctx, rev)
		cancel()
		for ctx.Err() == nil { // list again, with backoff while etcd is away
			var err error
			if rev, err = w.list(ctx); err == nil {
				w.resyncs.Add(1)
				_ = w.publish() // an empty set is reported; the last stays
				backoff = 50 * time.Millisecond
				break
			}
			if ctx.Err() == nil {
				w.report(err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}
}

// watch applies the events after rev until the watch ends.
func (w *Watcher) watch(ctx context.Context, rev int64) {
	for resp := range w.cli.Watch(ctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := resp.Err(); err != nil {
			if ctx.Err() == nil {
				w.report(fmt.Errorf("etcd: watching %s: %w", w.prefix, err))
			}
			return // compacted, or no leader: list again
		}
		for _, ev := range resp.Events {
			key := string(ev.Kv.Key)
			if ev.Type == clientv3.EventTypeDelete {
				delete(w.kv, key)
			} else {
				w.put(key, ev.Kv.Value)
			}
		}
		_ = w.publish()
	}
}

// Registration keeps one backend's key under a lease that is kept alive
// until Close. If the lease is lost (etcd was out of reach for longer than
// its TTL, or restarted without it), the key is put again under a new
// lease as soon as etcd answers.
type Registration struct {
	cli    *clientv3.Client
	key    string
	value  string
	secs   int64
	cancel context.CancelFunc
	done   chan struct{}
	closed atomic.Bool
	lease  atomic.Int64 // the current clientv3.LeaseID; 0 while there is none
	lost   atomic.Int64 // leases lost and replaced
}

// Register puts prefix + address → {"weight": weight} under a lease of
// ttl, and keeps it there until Close: if this process dies, the key goes
// away within ttl. The first put runs within ctx; its error is returned.
func Register(ctx context.Context, cli *clientv3.Client, prefix, address string, weight int, ttl time.Duration) (*Registration, error) {
	secs := int64(ttl / time.Second)
	if cli == nil || address == "" || weight < 0 || secs < 1 {
		return nil, errors.New("etcd: Register needs a client, an address, a weight ≥ 0 and a ttl of a second or more")
	}
	value, _ := json.Marshal(Value{Weight: weight})
	r := &Registration{cli: cli, key: prefix + address, value: string(value), secs: secs, done: make(chan struct{})}
	runCtx, cancel := context.WithCancel(context.Background())
	ka, err := r.register(ctx, runCtx)
	if err != nil {
		cancel()
		return nil, err
	}
	r.cancel = cancel
	go r.keep(runCtx, ka)
	return r, nil
}

// register grants a lease and puts the key under it within ctx, and starts
// its keep-alive, which runs until runCtx ends or the lease is lost.
func (r *Registration) register(ctx, runCtx context.Context) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	lease, err := r.cli.Grant(ctx, r.secs)
	if err != nil {
		return nil, fmt.Errorf("etcd: granting a lease: %w", err)
	}
	revoke := func() {
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, _ = r.cli.Revoke(rctx, lease.ID) // the error that led here says more
	}
	if _, err := r.cli.Put(ctx, r.key, r.value, clientv3.WithLease(lease.ID)); err != nil {
		revoke()
		return nil, fmt.Errorf("etcd: registering %s: %w", r.key, err)
	}
	ka, err := r.cli.KeepAlive(runCtx, lease.ID)
	if err != nil {
		revoke()
		return nil, fmt.Errorf("etcd: keeping the lease alive: %w", err)
	}
	r.lease.Store(int64(lease.ID))
	return ka, nil
}

// keep drains the keep-alive responses, and registers again, with backoff
// while etcd is away, each time the lease is lost, until ctx ends.
func (r *Registration) keep(ctx context.Context, ka <-chan *clientv3.LeaseKeepAliveResponse) {
	defer close(r.done)
	for {
		for range ka { // ends when the lease is lost or ctx ends
		}
		if ctx.Err() != nil {
			return
		}
		r.lost.Add(1)
		r.lease.Store(0)
		backoff := 100 * time.Millisecond
		for {
			var err error
			if ka, err = r.register(ctx, ctx); err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}
}

// LostLeases returns how many times the lease was lost and the key put
// again under a new one.
func (r *Registration) LostLeases() int64 { return r.lost.Load() }

// Close stops the keep-alive and revokes the lease, which deletes the key,
// within ctx. A second Close returns ErrClosed.
func (r *Registration) Close(ctx context.Context) error {
	if !r.closed.CompareAndSwap(false, true) {
		return ErrClosed
	}
	r.cancel()
	<-r.done
	if id := clientv3.LeaseID(r.lease.Load()); id != 0 {
		_, err := r.cli.Revoke(ctx, id)
		return err
	}
	return nil
}
