package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDemoRunsWithoutFailedRequests runs the whole script, backend stop and
// restart included, in a short form.
func TestDemoRunsWithoutFailedRequests(t *testing.T) {
	for _, policy := range []string{"peak-ewma", "round-robin", "maglev"} {
		t.Run(policy, func(t *testing.T) {
			code := run(4, 3*time.Second, policies[policy], policy, "")
			assert.Equal(t, 0, code, "the demo reported failed requests")
		})
	}
}

func TestDemoRejectsAnEmptyBackendList(t *testing.T) {
	_, err := startBackends(" , ")
	assert.Error(t, err)
}
