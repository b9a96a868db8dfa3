package main

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestErrorLogGroupsErrorsByKind(t *testing.T) {
	l := newErrorLog([]string{"db.internal:7", "127.0.0.1:4000"})
	assert.True(t, l.Add(errors.New("127.0.0.1:4000: dial tcp 127.0.0.1:4000: connect: connection refused")))
	assert.False(t, l.Add(errors.New("db.internal:7: dial tcp 10.1.2.3:7: connect: connection refused")),
		"the same error on another backend")
	assert.True(t, l.Add(errors.New("127.0.0.1:4000: read tcp 127.0.0.1:51234->127.0.0.1:4000: read: connection reset by peer")))
	assert.False(t, l.Add(errors.New("127.0.0.1:4000: read tcp 127.0.0.1:40001->127.0.0.1:4000: read: connection reset by peer")),
		"the same error from another local port")
	assert.False(t, l.Add(errors.New("[::1]:4000: read tcp [::1]:40001->[::1]:4000: read: connection reset by peer")))

	counts := l.Counts()
	if assert.Len(t, counts, 2) {
		assert.Equal(t, "ADDR: dial tcp ADDR: connect: connection refused", counts[0].kind)
		assert.EqualValues(t, 2, counts[0].n)
		assert.Equal(t, "ADDR: read tcp ADDR->ADDR: read: connection reset by peer", counts[1].kind)
		assert.EqualValues(t, 3, counts[1].n)
	}
}

func TestErrorLogBoundsTheKinds(t *testing.T) {
	l := newErrorLog(nil)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 1000 {
				l.Add(fmt.Errorf("error number %d", g*1000+i))
			}
		})
	}
	wg.Wait()
	counts := l.Counts()
	assert.Len(t, counts, maxErrorKinds)
	assert.Equal(t, otherErrors, counts[maxErrorKinds-1].kind)
	var n int64
	for _, c := range counts {
		n += c.n
	}
	assert.EqualValues(t, 4000, n)
}
