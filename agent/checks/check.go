package checks

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tribune-mesh/tribune/clock"
)

// Check statuses, spelled as Consul spells them.
const (
	StatusPassing  = "passing"
	StatusWarning  = "warning"
	StatusCritical = "critical"
)

// Check types, as Consul names them in a check's Type field.
const (
	TypeHTTP   = "http"
	TypeTCP    = "tcp"
	TypeUDP    = "udp"
	TypeGRPC   = "grpc"
	TypeH2PING = "h2ping"
	TypeScript = "script"
	TypeAlias  = "alias"
)

// Defaults and limits, from Consul's documentation.
const (
	// MinInterval is the smallest Interval accepted unless
	// Options.MinInterval lowers it. Consul clamps shorter intervals to it
	// with a warning; New refuses them so the caller decides.
	MinInterval = time.Second
	// DefaultTimeout bounds one probe of a network check whose Timeout is 0.
	DefaultTimeout = 10 * time.Second
	// DefaultScriptTimeout bounds one run of a script check whose Timeout
	// is 0.
	DefaultScriptTimeout = 30 * time.Second
	// DefaultOutputMaxSize is the output limit in bytes when neither the
	// Definition nor the Options set one (Consul's check_output_max_size).
	DefaultOutputMaxSize = 4096
	// DefaultHTTPMethod is the method of an HTTP check without Method.
	DefaultHTTPMethod = "GET"
	// AliasRetryWait is how long an alias check waits before it watches
	// again after its AliasSource failed.
	AliasRetryWait = time.Second
)

var (
	// ErrInvalidDefinition is wrapped by every error New returns for a
	// Definition that cannot run (missing or conflicting fields, bad
	// addresses, out-of-range numbers).
	ErrInvalidDefinition = errors.New("invalid check definition")
	// ErrScriptChecksDisabled is returned by New for a script check when
	// Options.EnableScriptChecks is off.
	ErrScriptChecksDisabled = errors.New("script checks are disabled; set enable_script_checks or enable_local_script_checks to run them")
)

// Notifier receives the results of Checks; the agent's local state
// implements it and turns each call into a catalog update.
//
// UpdateCheck is called from the Check's own goroutine (for alias checks,
// possibly from the AliasSource's), one call at a time per Check; calls for
// different Checks may be concurrent. It is called only when the status or
// the output differs from the previous call for that Check, so the first
// result (once its threshold is met) is always delivered. It must return
// promptly, because the Check's next probe waits for it, and it must not
// call Stop on the Check that is calling it: Stop waits for that call.
type Notifier interface {
	// UpdateCheck reports that checkID is now status (StatusPassing,
	// StatusWarning or StatusCritical) with the given output, already
	// truncated to the Check's OutputMaxSize.
	UpdateCheck(checkID, status, output string)
}

// AliasSource watches the health of what an alias check mirrors. The agent
// implements it: from its local state for a service registered on this
// agent, with blocking queries to the servers otherwise.
type AliasSource interface {
	// Watch calls fn with the aggregated status (StatusPassing,
	// StatusWarning or StatusCritical) of the checks of service serviceID
	// on node, or of the node itself when serviceID is empty, and calls it
	// again whenever that status may have changed. node is empty for a
	// service registered on this agent. Calls to fn are sequential, and fn
	// is not called after Watch returns.
	//
	// Watch blocks until ctx is done and then returns ctx.Err(). It returns
	// any other error as soon as it can no longer watch; the check then
	// reports critical with that error and calls Watch again after
	// AliasRetryWait.
	Watch(ctx context.Context, node, serviceID string, fn func(status string)) error
}

// Definition describes one check. Exactly one type must be set: HTTP, TCP,
// UDP, GRPC, H2PING, ScriptArgs, or AliasNode/AliasService. It mirrors the
// fields of Consul's check definition that a runner needs; names, notes,
// service bindings and TTL checks belong to the agent.
type Definition struct {
	// CheckID names the check in every Notifier call. Required.
	CheckID string

	// HTTP is the URL (http or https) of an HTTP check. A 2xx response is
	// passing, 429 Too Many Requests is warning, anything else critical.
	HTTP string
	// Method is the HTTP check's request method; empty means GET.
	Method string
	// Header holds extra request headers of an HTTP check. A "Host" entry
	// sets the request's Host.
	Header map[string][]string
	// Body is the request body of an HTTP check.
	Body string
	// DisableRedirects makes an HTTP check judge a 3xx response itself
	// (critical) instead of following it.
	DisableRedirects bool

	// TLSSkipVerify turns off certificate verification for HTTPS, gRPC
	// with GRPCUseTLS, and H2PING with H2PingUseTLS.
	TLSSkipVerify bool
	// TLSServerName overrides the SNI and verified name of those TLS
	// checks; empty means the host of the address.
	TLSServerName string

	// TCP is the "host:port" of a TCP check: passing when a connection is
	// accepted, critical otherwise.
	TCP string

	// UDP is the "host:port" of a UDP check. It sends one datagram: an ICMP
	// refusal (read error "connection refused") is critical, while a reply
	// or silence until Timeout is passing, since UDP has no handshake.
	UDP string

	// GRPC is the "host:port" or "host:port/service" of a gRPC check, which
	// calls grpc.health.v1.Health/Check for that service (the whole server
	// when no service is given): SERVING is passing, anything else critical.
	GRPC string
	// GRPCUseTLS makes a gRPC check use TLS.
	GRPCUseTLS bool

	// H2PING is the "host:port" of an H2PING check, which opens an HTTP/2
	// connection and sends a PING frame: an acknowledged ping is passing.
	H2PING string
	// H2PingUseTLS makes an H2PING check use TLS with ALPN "h2"; false means
	// cleartext HTTP/2 with prior knowledge (h2c). Consul defaults
	// h2ping_use_tls to true when the key is absent, so a caller decoding a
	// Consul definition must set this to true in that case.
	H2PingUseTLS bool

	// ScriptArgs is the command of a script check, executed directly (no
	// shell): exit code 0 is passing, 1 warning, anything else critical.
	// The output is the combined stdout and stderr. On timeout the command
	// and its process group are killed.
	ScriptArgs []string

	// AliasNode and AliasService make an alias check mirroring the health of
	// a node, or of a service (on AliasNode, or on this agent when AliasNode
	// is empty). Alias checks need Options.AliasSource and ignore Interval,
	// Timeout and the thresholds.
	AliasNode    string
	AliasService string

	// Interval is the time between the end of one probe and the start of
	// the next. Required for every type but alias; at least MinInterval.
	Interval time.Duration
	// Timeout bounds one probe; a probe still running then is cancelled (a
	// script is killed) and reported critical. 0 means DefaultTimeout, or
	// DefaultScriptTimeout for script checks.
	Timeout time.Duration

	// SuccessBeforePassing is the number of consecutive passing results
	// needed before the check reports passing; 0 or 1 means at once.
	SuccessBeforePassing int
	// FailuresBeforeWarning is the number of consecutive failing results
	// needed before the check reports warning; 0 means the same as
	// FailuresBeforeCritical. It may not exceed FailuresBeforeCritical.
	FailuresBeforeWarning int
	// FailuresBeforeCritical is the number of consecutive failing results
	// needed before the check reports the failing status itself; 0 or 1
	// means at once.
	FailuresBeforeCritical int

	// OutputMaxSize caps the output of each result, in bytes; 0 means
	// Options.OutputMaxSize.
	OutputMaxSize int
}

// Type returns the check type the Definition sets (TypeHTTP, TypeTCP, ...),
// or "" when it sets none or more than one.
func (d Definition) Type() string {
	if ts := d.types(); len(ts) == 1 {
		return ts[0]
	}
	return ""
}

func (d Definition) types() []string {
	var ts []string
	if d.HTTP != "" {
		ts = append(ts, TypeHTTP)
	}
	if d.TCP != "" {
		ts = append(ts, TypeTCP)
	}
	if d.UDP != "" {
		ts = append(ts, TypeUDP)
	}
	if d.GRPC != "" {
		ts = append(ts, TypeGRPC)
	}
	if d.H2PING != "" {
		ts = append(ts, TypeH2PING)
	}
	if len(d.ScriptArgs) > 0 {
		ts = append(ts, TypeScript)
	}
	if d.AliasNode != "" || d.AliasService != "" {
		ts = append(ts, TypeAlias)
	}
	return ts
}

// Options are the agent-wide settings and dependencies of the Checks it
// creates. The zero value is usable: every field documents its default.
type Options struct {
	// EnableScriptChecks permits checks with ScriptArgs (Consul's
	// enable_script_checks, or enable_local_script_checks for checks from
	// local configuration files). Off by default: a script check runs an
	// arbitrary command as the agent's user.
	EnableScriptChecks bool
	// MinInterval is the smallest Interval New accepts; 0 means MinInterval.
	// Tests lower it.
	MinInterval time.Duration
	// OutputMaxSize is the output limit of checks whose Definition sets
	// none (check_output_max_size); 0 means DefaultOutputMaxSize.
	OutputMaxSize int
	// Stagger returns how long a check waits before its first probe, given
	// its Interval. Nil means a uniformly random delay in [0, Interval), so
	// an agent starting with many checks does not probe them all at once.
	// Results outside [0, Interval) are clamped into it.
	Stagger func(interval time.Duration) time.Duration
	// Clock schedules the probes: the first-run stagger, the wait between
	// probes and the alias watch retry; nil means the real clock. The
	// deadline of a single probe is not taken from it: that bounds real
	// network and process I/O, so it always uses real time.
	Clock clock.Clock
	// TLSConfig is the base TLS configuration of HTTPS checks, gRPC checks
	// with GRPCUseTLS and H2PING checks with H2PingUseTLS (the agent's
	// certificates under enable_agent_tls_for_checks); nil means the system
	// roots and no client certificate. Each check uses a clone with its own
	// TLSSkipVerify and TLSServerName applied.
	TLSConfig *tls.Config
	// AliasSource serves alias checks; New refuses alias checks without it.
	AliasSource AliasSource
	// Logger receives debug lines about thresholds and alias watch
	// failures; nil discards them.
	Logger hclog.Logger
}

func (o Options) withDefaults() Options {
	if o.MinInterval <= 0 {
		o.MinInterval = MinInterval
	}
	if o.OutputMaxSize <= 0 {
		o.OutputMaxSize = DefaultOutputMaxSize
	}
	if o.Stagger == nil {
		o.Stagger = randomStagger
	}
	if o.Clock == nil {
		o.Clock = clock.New()
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	return o
}

func randomStagger(interval time.Duration) time.Duration {
	return time.Duration(rand.Int64N(int64(interval)))
}

// prober runs one probe of a check. The context carries the probe's
// deadline (the check's Timeout) and is cancelled when the Check stops.
type prober interface {
	probe(ctx context.Context) (status, output string)
}

// Check runs one health check: after Start, a goroutine probes the target
// every Interval and reports changes to the Notifier until Stop.
type Check struct {
	def     Definition // validated, defaults applied
	kind    string
	notify  Notifier
	prober  prober // nil for alias checks
	alias   AliasSource
	clock   clock.Clock
	stagger func(time.Duration) time.Duration
	logger  hclog.Logger

	// stateMu serialises results (from the run goroutine, or from an
	// AliasSource's goroutine) and lets Stop wait out one in flight.
	stateMu    sync.Mutex
	closed     bool // set by Stop; no result is reported after it
	successes  int  // consecutive passing results
	failures   int  // consecutive failing results
	reported   bool
	lastStatus string
	lastOutput string

	mu      sync.Mutex
	started bool
	stopped bool
	cancel  context.CancelFunc
	done    chan struct{} // closed when the run goroutine returns
}

// New validates def, applies its defaults and returns a Check that is not
// yet running. Every error wraps ErrInvalidDefinition, except the refusal
// of a script check, which wraps ErrScriptChecksDisabled.
func New(def Definition, notify Notifier, opts Options) (*Check, error) {
	opts = opts.withDefaults()
	if notify == nil {
		return nil, fmt.Errorf("check %q: %w: nil Notifier", def.CheckID, ErrInvalidDefinition)
	}
	def, kind, err := normalize(def, opts)
	if err != nil {
		return nil, fmt.Errorf("check %q: %w", def.CheckID, err)
	}
	c := &Check{
		def:     def,
		kind:    kind,
		notify:  notify,
		alias:   opts.AliasSource,
		clock:   opts.Clock,
		stagger: opts.Stagger,
		logger:  opts.Logger.Named("checks").With("check", def.CheckID),
	}
	switch kind {
	case TypeHTTP:
		c.prober, err = newHTTPProber(def, opts.TLSConfig)
	case TypeTCP:
		c.prober = &tcpProber{addr: def.TCP, timeout: def.Timeout}
	case TypeUDP:
		c.prober = &udpProber{addr: def.UDP, timeout: def.Timeout}
	case TypeGRPC:
		c.prober = newGRPCProber(def, opts.TLSConfig)
	case TypeH2PING:
		c.prober = newH2PingProber(def, opts.TLSConfig)
	case TypeScript:
		c.prober = &scriptProber{args: def.ScriptArgs, timeout: def.Timeout, maxOutput: def.OutputMaxSize}
	}
	if err != nil {
		return nil, fmt.Errorf("check %q: %w: %w", def.CheckID, ErrInvalidDefinition, err)
	}
	return c, nil
}

// normalize validates def and returns a copy with defaults applied (and
// its own copies of the caller's slices and maps) and its type.
func normalize(def Definition, opts Options) (Definition, string, error) {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidDefinition, fmt.Sprintf(format, args...))
	}
	if def.CheckID == "" {
		return def, "", invalid("CheckID is required")
	}
	ts := def.types()
	switch len(ts) {
	case 0:
		return def, "", invalid("no check type set (one of HTTP, TCP, UDP, GRPC, H2PING, ScriptArgs, AliasNode/AliasService)")
	case 1:
	default:
		return def, "", invalid("more than one check type set: %s", strings.Join(ts, ", "))
	}
	kind := ts[0]
	def.Header = maps.Clone(def.Header)
	for k, v := range def.Header {
		def.Header[k] = slices.Clone(v)
	}
	def.ScriptArgs = slices.Clone(def.ScriptArgs)

	if kind == TypeScript && !opts.EnableScriptChecks {
		return def, "", ErrScriptChecksDisabled
	}
	if kind == TypeAlias && opts.AliasSource == nil {
		return def, "", invalid("alias check needs an AliasSource")
	}

	if def.SuccessBeforePassing < 0 || def.FailuresBeforeWarning < 0 || def.FailuresBeforeCritical < 0 {
		return def, "", invalid("SuccessBeforePassing, FailuresBeforeWarning and FailuresBeforeCritical must not be negative")
	}
	if def.FailuresBeforeWarning == 0 {
		def.FailuresBeforeWarning = def.FailuresBeforeCritical
	}
	if def.FailuresBeforeWarning > def.FailuresBeforeCritical {
		return def, "", invalid("FailuresBeforeWarning (%d) exceeds FailuresBeforeCritical (%d)", def.FailuresBeforeWarning, def.FailuresBeforeCritical)
	}
	switch {
	case def.OutputMaxSize < 0:
		return def, "", invalid("OutputMaxSize %d must not be negative", def.OutputMaxSize)
	case def.OutputMaxSize == 0:
		def.OutputMaxSize = opts.OutputMaxSize
	}
	switch {
	case def.Timeout < 0:
		return def, "", invalid("Timeout %s must not be negative", def.Timeout)
	case def.Timeout == 0 && kind == TypeScript:
		def.Timeout = DefaultScriptTimeout
	case def.Timeout == 0:
		def.Timeout = DefaultTimeout
	}
	if kind != TypeAlias {
		if def.Interval <= 0 {
			return def, "", invalid("Interval is required for %s checks", kind)
		}
		if def.Interval < opts.MinInterval {
			return def, "", invalid("Interval %s is below the minimum %s", def.Interval, opts.MinInterval)
		}
	}

	switch kind {
	case TypeHTTP:
		u, err := url.Parse(def.HTTP)
		if err != nil {
			return def, "", invalid("HTTP: %v", err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return def, "", invalid("HTTP %q is not an absolute http or https URL", def.HTTP)
		}
		if def.Method == "" {
			def.Method = DefaultHTTPMethod
		}
	case TypeTCP:
		if err := checkHostPort(def.TCP); err != nil {
			return def, "", invalid("TCP: %v", err)
		}
	case TypeUDP:
		if err := checkHostPort(def.UDP); err != nil {
			return def, "", invalid("UDP: %v", err)
		}
	case TypeGRPC:
		addr, _, _ := strings.Cut(def.GRPC, "/")
		if err := checkHostPort(addr); err != nil {
			return def, "", invalid("GRPC: %v", err)
		}
	case TypeH2PING:
		if err := checkHostPort(def.H2PING); err != nil {
			return def, "", invalid("H2PING: %v", err)
		}
	case TypeScript:
		if def.ScriptArgs[0] == "" {
			return def, "", invalid("ScriptArgs[0] (the command) is empty")
		}
	}
	return def, kind, nil
}

func checkHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if port == "" {
		return fmt.Errorf("address %q: missing port", addr)
	}
	return nil
}

// Definition returns the Check's definition with defaults applied.
func (c *Check) Definition() Definition {
	d := c.def
	d.Header = maps.Clone(d.Header)
	for k, v := range d.Header {
		d.Header[k] = slices.Clone(v)
	}
	d.ScriptArgs = slices.Clone(d.ScriptArgs)
	return d
}

// Start starts the Check's goroutine and returns at once. The first probe
// runs after the stagger delay, the next ones Interval after each probe
// ends. Calling Start again, or after Stop, does nothing.
func (c *Check) Start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started || c.stopped {
		return
	}
	c.started = true
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.done = make(chan struct{})
	go func() {
		defer close(c.done)
		c.run(ctx)
	}()
}

// Stop cancels a probe in flight (killing a running script), waits for the
// Check's goroutine to return and for any Notifier call in progress to
// finish. After Stop returns the Notifier hears nothing more from this
// Check. Stop is idempotent, safe to call concurrently and before Start.
func (c *Check) Stop() {
	c.mu.Lock()
	c.stopped = true
	if c.cancel != nil {
		c.cancel()
	}
	done := c.done
	c.mu.Unlock()
	if done != nil {
		<-done
	}
	// A result from an AliasSource's goroutine may still be in flight:
	// taking the lock waits it out, and later ones see closed.
	c.stateMu.Lock()
	c.closed = true
	c.stateMu.Unlock()
}

func (c *Check) run(ctx context.Context) {
	if c.kind == TypeAlias {
		c.runAlias(ctx)
		return
	}
	wait := min(max(c.stagger(c.def.Interval), 0), c.def.Interval-1)
	for c.sleep(ctx, wait) {
		c.probeOnce(ctx)
		wait = c.def.Interval
	}
}

// sleep waits d on the Check's clock and reports false if the Check was
// stopped first.
func (c *Check) sleep(ctx context.Context, d time.Duration) bool {
	t := c.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}

func (c *Check) probeOnce(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, c.def.Timeout)
	status, output := c.prober.probe(pctx)
	cancel()
	c.record(ctx, status, output)
}

// record applies the success/failure thresholds to one probe result, as
// Consul documents them: a status only changes after enough consecutive
// results agree, and until then nothing is reported.
func (c *Check) record(ctx context.Context, status, output string) {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	if c.closed || ctx.Err() != nil {
		// Stopped mid-probe: the result says nothing about the target.
		return
	}
	if status == StatusPassing {
		c.failures = 0
		c.successes++
		if c.successes < c.def.SuccessBeforePassing {
			c.logger.Debug("passing result below threshold", "successes", c.successes, "needed", c.def.SuccessBeforePassing)
			return
		}
	} else {
		c.successes = 0
		c.failures++
		switch {
		case c.failures >= c.def.FailuresBeforeCritical:
			// Report the probe's own status (warning or critical).
		case c.failures >= c.def.FailuresBeforeWarning:
			status = StatusWarning
		default:
			c.logger.Debug("failing result below threshold", "failures", c.failures, "needed", c.def.FailuresBeforeWarning)
			return
		}
	}
	c.publishLocked(status, output)
}

// publish reports a result without thresholds (alias checks).
func (c *Check) publish(ctx context.Context, status, output string) {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	if c.closed || ctx.Err() != nil {
		return
	}
	c.publishLocked(status, output)
}

func (c *Check) publishLocked(status, output string) {
	output = truncate(output, c.def.OutputMaxSize)
	if c.reported && status == c.lastStatus && output == c.lastOutput {
		return
	}
	c.reported = true
	c.lastStatus, c.lastOutput = status, output
	c.notify.UpdateCheck(c.def.CheckID, status, output)
}
