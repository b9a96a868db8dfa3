package main

import (
	"regexp"
	"strings"
	"sync"
)

// maxErrorKinds bounds the kinds of error an errorLog tells apart, so that
// errors whose text varies in ways errorKind does not strip cannot flood the
// output or the memory.
const maxErrorKinds = 20

// otherErrors is the kind of the errors past maxErrorKinds.
const otherErrors = "(other errors)"

// ipPort matches an IPv4 or bracketed IPv6 address with a port, such as the
// local end of a connection in "read tcp 127.0.0.1:51234->127.0.0.1:7".
const ipPort = `\d{1,3}(\.\d{1,3}){3}:\d+|\[[^\]]+\]:\d+`

// errorLog counts failed requests by kind, so that a storm of identical
// errors is one line, not thousands. It is safe for concurrent use.
type errorLog struct {
	addrs *regexp.Regexp // matches addresses, which kind leaves out

	mu    sync.Mutex // protects the fields below
	kinds map[string]*errorCount
	order []*errorCount // in order of first occurrence
}

// errorCount is one kind of error and how often it happened.
type errorCount struct {
	kind string
	n    int64
}

// newErrorLog returns an errorLog that leaves the backends' addresses out
// of the kinds of error.
func newErrorLog(backends []string) *errorLog {
	alternatives := []string{ipPort}
	for _, a := range backends {
		alternatives = append(alternatives, regexp.QuoteMeta(a))
	}
	addrs := regexp.MustCompile(`(` + strings.Join(alternatives, "|") + `)\b`)
	return &errorLog{addrs: addrs, kinds: map[string]*errorCount{}}
}

// Add counts err and reports whether it is the first of its kind.
func (l *errorLog) Add(err error) (first bool) {
	kind := l.kind(err)
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.kinds[kind]
	if c == nil && len(l.order) == maxErrorKinds {
		c = l.kinds[otherErrors]
	}
	if c == nil {
		if len(l.order) == maxErrorKinds-1 {
			kind = otherErrors
		}
		c = &errorCount{kind: kind}
		l.kinds[kind] = c
		l.order = append(l.order, c)
		first = true
	}
	c.n++
	return first
}

// kind returns err's text with every address and port replaced by ADDR,
// so that one failure seen on several backends, or on several local
// ports, is one kind.
func (l *errorLog) kind(err error) string {
	return l.addrs.ReplaceAllLiteralString(err.Error(), "ADDR")
}

// Counts returns each kind of error seen and how often, in order of first
// occurrence.
func (l *errorLog) Counts() []errorCount {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]errorCount, len(l.order))
	for i, c := range l.order {
		out[i] = *c
	}
	return out
}
