package server

import (
	"time"

	metrics "github.com/armon/go-metrics"

	"github.com/tribune-mesh/tribune/catalog"
)

// Metrics are emitted through go-metrics' process-wide sink (the one
// hashicorp/raft emits raft.* to), under Consul's names so that existing
// dashboards and alerts keep working. Emitting never blocks: the sinks keep
// samples in memory and the agent's /v1/agent/metrics reads them.

// applyMetric names the timer of a committed write by its command type, as
// Consul names its endpoints' timers; "" for the types it does not time.
func applyMetric(t catalog.CommandType) []string {
	switch t {
	case catalog.CmdKV:
		return []string{"kvs", "apply"}
	case catalog.CmdTxn:
		return []string{"txn", "apply"}
	case catalog.CmdRegister:
		return []string{"catalog", "register"}
	case catalog.CmdDeregister:
		return []string{"catalog", "deregister"}
	}
	return nil
}

// measureApply records a write committed by this server (the leader) from
// start.
func measureApply(buf []byte, start time.Time) {
	if len(buf) == 0 {
		return
	}
	if name := applyMetric(catalog.CommandType(buf[0])); name != nil {
		metrics.MeasureSince(name, start)
	}
}

// countRPC counts one request this server received (rpc.request), a
// blocking one also as rpc.query, and a failed one as rpc.request_error.
func countRPC(blocking bool, err error) {
	metrics.IncrCounter([]string{"rpc", "request"}, 1)
	if blocking {
		metrics.IncrCounter([]string{"rpc", "query"}, 1)
	}
	if err != nil {
		metrics.IncrCounter([]string{"rpc", "request_error"}, 1)
	}
}

// emitAutopilot sets the autopilot.healthy (1 or 0) and
// autopilot.failure_tolerance gauges from the leader's view.
func (s *Server) emitAutopilot() {
	h, err := s.autopilotHealth()
	if err != nil {
		return
	}
	healthy := float32(0)
	if h.Healthy {
		healthy = 1
	}
	metrics.SetGauge([]string{"autopilot", "healthy"}, healthy)
	metrics.SetGauge([]string{"autopilot", "failure_tolerance"}, float32(h.FailureTolerance))
}

// responseErr is err, or the error the FSM answered a write with.
func responseErr(res any, err error) error {
	if err != nil {
		return err
	}
	switch r := res.(type) {
	case error:
		return r
	case catalog.KVResult:
		return r.Err
	}
	return nil
}
