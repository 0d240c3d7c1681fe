package agent

import (
	"errors"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
)

// monitorBuffer bounds the log lines a /v1/agent/monitor reader may lag
// behind by; lines beyond it are dropped (and counted) rather than slow the
// agent's logging.
const monitorBuffer = 512

// errNoMonitor is Monitor's answer when the agent's logger cannot be tapped.
var errNoMonitor = errors.New("log streaming needs the agent to log through an hclog.InterceptLogger")

// lineSink hands each formatted log line to a bounded channel without ever
// blocking the logger.
type lineSink struct {
	ch      chan []byte
	dropped atomic.Uint64
}

// Write implements io.Writer for the sink adapter: one call per log line.
func (s *lineSink) Write(p []byte) (int, error) {
	line := append([]byte(nil), p...)
	select {
	case s.ch <- line:
	default:
		s.dropped.Add(1)
	}
	return len(p), nil
}

// Monitor implements httpapi.Control: it streams the agent's log lines at
// level and above (as JSON objects when json is set) until stop is called.
func (c apiControl) Monitor(level string, json bool) (<-chan []byte, func(), error) {
	return c.a.monitor(level, json)
}

func (a *Agent) monitor(level string, json bool) (<-chan []byte, func(), error) {
	if a.intercept == nil {
		return nil, nil, errNoMonitor
	}
	lvl := hclog.LevelFromString(level)
	if lvl == hclog.NoLevel {
		lvl = hclog.Info
	}
	s := &lineSink{ch: make(chan []byte, monitorBuffer)}
	adapter := hclog.NewSinkAdapter(&hclog.LoggerOptions{Level: lvl, Output: s, JSONFormat: json})
	a.intercept.RegisterSink(adapter)
	stop := func() {
		a.intercept.DeregisterSink(adapter)
		if n := s.dropped.Load(); n > 0 {
			a.logger.Warn("monitor dropped log lines it could not deliver in time", "dropped", n)
		}
	}
	return s.ch, stop, nil
}
