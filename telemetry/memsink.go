package telemetry

import (
	"fmt"
	"sort"
	"sync"
	"time"

	metrics "github.com/armon/go-metrics"
)

// memSink is the in-memory sink behind GET /v1/agent/metrics. It keeps what
// go-metrics' InmemSink keeps (per interval: the last value of each gauge,
// the points of each key, and the aggregate of each counter and sample,
// under the same flattened names) and answers the same JSON, but it is made
// for the request path: a metric already seen costs one map lookup under the
// interval's lock and no allocation, where InmemSink formats its name with
// fmt and a strings.Replacer (two to four allocations) on every call.
type memSink struct {
	interval     time.Duration
	maxIntervals int
	rateDenom    float64

	mu sync.RWMutex
	// intervals holds the retained intervals, the current one last.
	intervals []*memInterval
}

// memInterval is the data of one interval. Its maps are keyed by the
// flattened name with its labels (";name=value" each), as InmemSink's are.
// Counters and samples, the request path's metrics, are found under the
// read lock and updated under their own lock: thousands of requests woken
// together do not queue on one mutex.
type memInterval struct {
	start time.Time

	mu       sync.RWMutex
	gauges   map[string]*metrics.GaugeValue
	points   map[string][]float32
	counters map[string]*aggregate
	samples  map[string]*aggregate
}

// aggregate is one counter or sample of an interval.
type aggregate struct {
	mu sync.Mutex
	sv metrics.SampledValue
}

func newMemSink(interval, retain time.Duration) *memSink {
	n := int(retain / interval)
	if n < 1 {
		n = 1
	}
	return &memSink{
		interval:     interval,
		maxIntervals: n,
		rateDenom:    interval.Seconds(),
	}
}

// current returns the interval that now falls in, starting it (and pruning
// the oldest) when the previous one has ended.
func (s *memSink) current() *memInterval {
	start := time.Now().Truncate(s.interval)
	s.mu.RLock()
	if n := len(s.intervals); n > 0 && s.intervals[n-1].start.Equal(start) {
		cur := s.intervals[n-1]
		s.mu.RUnlock()
		return cur
	}
	s.mu.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.intervals); n > 0 && s.intervals[n-1].start.Equal(start) {
		return s.intervals[n-1]
	}
	cur := &memInterval{
		start:    start,
		gauges:   map[string]*metrics.GaugeValue{},
		points:   map[string][]float32{},
		counters: map[string]*aggregate{},
		samples:  map[string]*aggregate{},
	}
	s.intervals = append(s.intervals, cur)
	if over := len(s.intervals) - s.maxIntervals; over > 0 {
		s.intervals = append(s.intervals[:0], s.intervals[over:]...)
	}
	return cur
}

// appendName appends the flattened name of key (its parts joined by dots,
// spaces made underscores) to b, and returns b and the name's length; then
// each label as ";name=value", spaces made underscores likewise.
func appendName(b []byte, key []string, labels []metrics.Label) ([]byte, int) {
	for i, part := range key {
		if i > 0 {
			b = append(b, '.')
		}
		b = appendNoSpace(b, part)
	}
	n := len(b)
	for _, l := range labels {
		b = append(b, ';')
		b = appendNoSpace(b, l.Name)
		b = append(b, '=')
		b = appendNoSpace(b, l.Value)
	}
	return b, n
}

func appendNoSpace(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ' ' {
			c = '_'
		}
		b = append(b, c)
	}
	return b
}

// nameBufSize covers every name Tribune, raft and memberlist emit; a longer
// one spills to the heap and still works.
const nameBufSize = 192

// SetGauge implements metrics.MetricSink.
func (s *memSink) SetGauge(key []string, val float32) { s.SetGaugeWithLabels(key, val, nil) }

// SetGaugeWithLabels implements metrics.MetricSink.
func (s *memSink) SetGaugeWithLabels(key []string, val float32, labels []metrics.Label) {
	var stack [nameBufSize]byte
	b, n := appendName(stack[:0], key, labels)
	intv := s.current()
	intv.mu.Lock()
	defer intv.mu.Unlock()
	if g := intv.gauges[string(b)]; g != nil {
		g.Value = val
		return
	}
	intv.gauges[string(b)] = &metrics.GaugeValue{Name: string(b[:n]), Value: val, Labels: labels}
}

// EmitKey implements metrics.MetricSink.
func (s *memSink) EmitKey(key []string, val float32) {
	var stack [nameBufSize]byte
	b, _ := appendName(stack[:0], key, nil)
	intv := s.current()
	intv.mu.Lock()
	defer intv.mu.Unlock()
	intv.points[string(b)] = append(intv.points[string(b)], val)
}

// IncrCounter implements metrics.MetricSink.
func (s *memSink) IncrCounter(key []string, val float32) { s.IncrCounterWithLabels(key, val, nil) }

// IncrCounterWithLabels implements metrics.MetricSink.
func (s *memSink) IncrCounterWithLabels(key []string, val float32, labels []metrics.Label) {
	s.ingest(func(i *memInterval) map[string]*aggregate { return i.counters }, key, val, labels)
}

// AddSample implements metrics.MetricSink.
func (s *memSink) AddSample(key []string, val float32) { s.AddSampleWithLabels(key, val, nil) }

// AddSampleWithLabels implements metrics.MetricSink.
func (s *memSink) AddSampleWithLabels(key []string, val float32, labels []metrics.Label) {
	s.ingest(func(i *memInterval) map[string]*aggregate { return i.samples }, key, val, labels)
}

func (s *memSink) ingest(table func(*memInterval) map[string]*aggregate, key []string, val float32, labels []metrics.Label) {
	var stack [nameBufSize]byte
	b, n := appendName(stack[:0], key, labels)
	intv := s.current()
	intv.mu.RLock()
	a := table(intv)[string(b)]
	intv.mu.RUnlock()
	if a == nil {
		intv.mu.Lock()
		m := table(intv)
		if a = m[string(b)]; a == nil {
			a = &aggregate{sv: metrics.SampledValue{Name: string(b[:n]), AggregateSample: &metrics.AggregateSample{}, Labels: labels}}
			m[string(b)] = a
		}
		intv.mu.Unlock()
	}
	a.mu.Lock()
	a.sv.Ingest(float64(val), s.rateDenom)
	a.mu.Unlock()
}

// summary is what GET /v1/agent/metrics answers: the last complete interval,
// or the current one while it is the only one, as InmemSink.DisplayMetrics.
func (s *memSink) summary() (metrics.MetricsSummary, error) {
	s.current()
	s.mu.RLock()
	var intv *memInterval
	switch n := len(s.intervals); n {
	case 0:
		s.mu.RUnlock()
		return metrics.MetricsSummary{}, fmt.Errorf("no metric intervals have been initialized yet")
	case 1:
		intv = s.intervals[0]
	default:
		intv = s.intervals[n-2]
	}
	s.mu.RUnlock()

	intv.mu.RLock()
	defer intv.mu.RUnlock()
	out := metrics.MetricsSummary{
		Timestamp: intv.start.Round(time.Second).UTC().String(),
		Gauges:    make([]metrics.GaugeValue, 0, len(intv.gauges)),
		Points:    make([]metrics.PointValue, 0, len(intv.points)),
	}
	for name, pts := range intv.points {
		out.Points = append(out.Points, metrics.PointValue{Name: name, Points: append([]float32(nil), pts...)})
	}
	sort.Slice(out.Points, func(i, j int) bool { return out.Points[i].Name < out.Points[j].Name })
	for hash, g := range intv.gauges {
		v := *g
		v.Hash = hash
		v.DisplayLabels = displayLabels(g.Labels)
		v.Labels = nil
		out.Gauges = append(out.Gauges, v)
	}
	sort.Slice(out.Gauges, func(i, j int) bool { return out.Gauges[i].Hash < out.Gauges[j].Hash })
	out.Counters = sampledValues(intv.counters)
	out.Samples = sampledValues(intv.samples)
	return out, nil
}

func displayLabels(labels []metrics.Label) map[string]string {
	m := make(map[string]string, len(labels))
	for _, l := range labels {
		m[l.Name] = l.Value
	}
	return m
}

// sampledValues copies an interval's aggregates, sorted by their key; the
// interval's lock is held.
func sampledValues(src map[string]*aggregate) []metrics.SampledValue {
	out := make([]metrics.SampledValue, 0, len(src))
	for hash, a := range src {
		a.mu.Lock()
		sv := &a.sv
		agg := *sv.AggregateSample
		a.mu.Unlock()
		out = append(out, metrics.SampledValue{
			Name:            sv.Name,
			Hash:            hash,
			AggregateSample: &agg,
			Mean:            agg.Mean(),
			Stddev:          agg.Stddev(),
			DisplayLabels:   displayLabels(sv.Labels),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Hash < out[j].Hash })
	return out
}
