// Package discovery feeds a balancer with the endpoints a registry lists,
// so that backends that come and go are picked up without a restart. It
// resolves DNS names, A/AAAA ([NewDNS]) or SRV ([NewSRV]), at an interval
// and calls Update on a [balancer.Balancer] or a *[balancer.Pool] when the
// set changes. The etcd watcher is in the module
// github.com/seed73091bf1/connpool/discovery/etcd, so that this one needs
// the standard library alone.
//
// The rules every watcher follows:
//   - the first resolution runs in the constructor: a watcher that was
//     created has endpoints, and one that could not be returns the error;
//   - Update is called only when the set, sorted by address, changed;
//   - a lookup error or an empty answer keeps the last good set (a failing
//     registry must not empty the balancer); the error goes to the
//     callback of [WithErrorHandler] and is counted in [Stats];
//   - [Watcher.ResolveNow] asks for a resolution before the interval ends,
//     at most once per minimum interval (5 s by default, as grpc-go does);
//     [balancer.WithDialFailed] can call it when a dial fails, so that a
//     backend that moved is found before the next interval;
//   - [Watcher.Close] stops the watcher's goroutine and waits for it.
package discovery

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/seed73091bf1/connpool/balancer"
)

// Updater receives the endpoints a watcher found. Every
// [balancer.Balancer] and *[balancer.Pool] is one.
type Updater interface {
	Update(endpoints []balancer.Endpoint)
}

// ErrNoEndpoints is wrapped by the error of a resolution that succeeded
// but found no endpoint; the last good set is kept.
var ErrNoEndpoints = errors.New("discovery: no endpoints")

// ErrClosed is returned by a second [Watcher.Close].
var ErrClosed = errors.New("discovery: watcher closed")

// Defaults of the options.
const (
	DefaultInterval           = 30 * time.Second
	DefaultMinResolveInterval = 5 * time.Second
	DefaultTimeout            = 10 * time.Second
)

// jitter is the share of the interval by which each wait varies, either
// way, so that clients started together do not query together.
const jitter = 0.1

// Stats are a watcher's counts since it was created.
type Stats struct {
	Resolutions int64 // resolutions run, failed or not
	Updates     int64 // calls of Update: the set changed
	Errors      int64 // resolutions that failed or found no endpoint
	Endpoints   int   // endpoints in the last good set
}

// Watcher resolves a name at an interval and feeds the endpoints it finds
// to an [Updater]. Create it with [NewDNS] or [NewSRV]; it is safe for
// concurrent use.
type Watcher struct {
	resolve func(ctx context.Context, r Resolver) ([]balancer.Endpoint, error)
	pub     *Publisher // Publish is called by run only (the constructor before)
	o       options

	now    chan struct{} // ResolveNow's requests; buffered 1
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns
	closed atomic.Bool

	resolutions, errs atomic.Int64

	// lastRun is when the last resolution started; owned by run once
	// started (the constructor before).
	lastRun time.Time
}

// newWatcher runs the first resolution and starts the watcher's goroutine.
func newWatcher(ctx context.Context, u Updater, resolve func(context.Context, Resolver) ([]balancer.Endpoint, error), opts []Option) (*Watcher, error) {
	if u == nil {
		return nil, errors.New("discovery: the Updater is nil")
	}
	o := defaults()
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.check(); err != nil {
		return nil, err
	}
	w := &Watcher{resolve: resolve, pub: NewPublisher(u), o: o, now: make(chan struct{}, 1), done: make(chan struct{})}
	if err := w.resolveOnce(ctx); err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go w.run(runCtx)
	return w, nil
}

// ResolveNow asks for a resolution before the interval ends. It does not
// wait for it. Requests within the minimum interval after a resolution
// wait until it has passed, and those made meanwhile count as one.
func (w *Watcher) ResolveNow() {
	select {
	case w.now <- struct{}{}:
	default: // one is pending already
	}
}

// Close stops the watcher and waits for its goroutine; the Updater gets no
// call after Close returns. A second Close returns [ErrClosed].
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
	return Stats{
		Resolutions: w.resolutions.Load(),
		Updates:     w.pub.Updates(),
		Errors:      w.errs.Load(),
		Endpoints:   w.pub.Len(),
	}
}

// run resolves at the interval, and sooner when ResolveNow asks, until ctx
// ends.
func (w *Watcher) run(ctx context.Context) {
	defer close(w.done)
	due := time.Now().Add(w.o.wait(rand.Float64()))
	timer := time.NewTimer(time.Until(due))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.now:
			if soon := w.lastRun.Add(w.o.minInterval); soon.Before(due) {
				due = soon
				timer.Reset(time.Until(due))
			}
			continue
		case <-timer.C:
		}
		_ = w.resolveOnce(ctx) // counted and reported; the last set stays
		due = time.Now().Add(w.o.wait(rand.Float64()))
		timer.Reset(time.Until(due))
	}
}

// resolveOnce runs one resolution and updates if the set changed. On
// failure it counts and reports the error, keeps the last set, and returns
// the error.
func (w *Watcher) resolveOnce(ctx context.Context) error {
	w.lastRun = time.Now()
	w.resolutions.Add(1)
	rctx, cancel := context.WithTimeout(ctx, w.o.timeout)
	eps, err := w.resolve(rctx, w.o.resolver)
	cancel()
	if err == nil {
		err = w.pub.Publish(eps)
	}
	if err != nil {
		if ctx.Err() != nil {
			return err // closing: not the registry's fault
		}
		w.errs.Add(1)
		if w.o.onError != nil {
			w.o.onError(err)
		}
		return err
	}
	return nil
}

// options are a watcher's settings.
type options struct {
	resolver    Resolver
	interval    time.Duration
	minInterval time.Duration
	timeout     time.Duration
	onError     func(error)
}

func defaults() options {
	return options{
		resolver:    netResolver{},
		interval:    DefaultInterval,
		minInterval: DefaultMinResolveInterval,
		timeout:     DefaultTimeout,
	}
}

var errBadOption = errors.New("discovery: invalid option")

func (o *options) check() error {
	switch {
	case o.resolver == nil:
		return errors.Join(errBadOption, errors.New("WithResolver(nil)"))
	case o.interval <= 0:
		return errors.Join(errBadOption, errors.New("WithInterval needs a positive interval"))
	case o.minInterval < 0:
		return errors.Join(errBadOption, errors.New("WithMinResolveInterval is negative"))
	case o.timeout <= 0:
		return errors.Join(errBadOption, errors.New("WithTimeout needs a positive timeout"))
	}
	return nil
}

// wait returns the interval varied by up to ±10%, by r in [0, 1).
func (o *options) wait(r float64) time.Duration {
	return time.Duration(float64(o.interval) * (1 - jitter + 2*jitter*r))
}

// Option configures a watcher.
type Option func(*options)

// WithResolver sets how names are looked up; the default is
// net.DefaultResolver. A *net.Resolver is a Resolver: tests point one at a
// server on loopback with its Dial field.
func WithResolver(r Resolver) Option { return func(o *options) { o.resolver = r } }

// WithInterval sets the time between resolutions, varied by up to ±10%
// each time. Default: 30 s.
func WithInterval(d time.Duration) Option { return func(o *options) { o.interval = d } }

// WithMinResolveInterval sets the least time between a resolution and one
// that ResolveNow asks for. Default: 5 s.
func WithMinResolveInterval(d time.Duration) Option {
	return func(o *options) { o.minInterval = d }
}

// WithTimeout bounds each resolution. Default: 10 s.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithErrorHandler sets a function called, on the watcher's goroutine,
// with the error of each resolution that failed or found no endpoint. It
// must not block for long: the next resolution waits for it.
func WithErrorHandler(fn func(error)) Option { return func(o *options) { o.onError = fn } }
