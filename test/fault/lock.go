package fault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/tribune-mesh/tribune/clock"
)

// ErrSessionsUnsupported is returned when /v1/session/create answers 404.
var ErrSessionsUnsupported = errors.New("/v1/session/create is not served (404)")

// Hold is one lock acquisition, as its holder saw it.
type Hold struct {
	Client  int    `json:"client"`
	Agent   string `json:"agent"`
	Session string `json:"session"`
	// LockIndex is the lock key's LockIndex read right after acquiring.
	LockIndex uint64 `json:"lock_index"`
	// Acquired is when api.Lock.Lock returned the lock.
	Acquired int64 `json:"acquired"`
	// Released is when the holder stopped appending.
	Released int64 `json:"released"`
	// Lost: the holder was told (lock monitor) that it lost the lock.
	Lost bool `json:"lost,omitempty"`
}

// Append is one fenced append to the lock log: a transaction that checks
// the lock key is held by Session and writes a new key.
type Append struct {
	Client    int    `json:"client"`
	Session   string `json:"session"`
	LockIndex uint64 `json:"lock_index"`
	Key       string `json:"key"`
	Call      int64  `json:"call"`
	Return    int64  `json:"return"`
	Result    Result `json:"result"`
	Error     string `json:"error,omitempty"`
}

// logEntry is the value of one log key.
type logEntry struct {
	Client    int    `json:"client"`
	Session   string `json:"session"`
	LockIndex uint64 `json:"lock_index"`
}

// LockWorkload runs lock holders: each takes api.Lock on one key with a
// session of its own and, while it believes it holds the lock, appends to a
// log (one KV key per append) through check-session transactions, the
// session being the fencing token and LockIndex its order.
type LockWorkload struct {
	Prefix  string
	Clock   *Clock
	Holds   Log[Hold]
	Appends Log[Append]

	unsupported atomic.Bool
	seq         atomic.Int64
}

// LockKey is the key the holders lock.
func (w *LockWorkload) LockKey() string { return w.Prefix + "/lock" }

// LogPrefix is the prefix of the log's keys.
func (w *LockWorkload) LogPrefix() string { return w.Prefix + "/log/" }

// Unsupported reports whether the agents do not serve sessions (404).
func (w *LockWorkload) Unsupported() bool { return w.unsupported.Load() }

// Run runs one holder per agent until ctx ends, and waits for them.
func (w *LockWorkload) Run(ctx context.Context, agents []*Agent, seed uint64) {
	var wg sync.WaitGroup
	for i, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.holder(ctx, i, a, rand.New(rand.NewPCG(seed, uint64(100+i))))
		}()
	}
	wg.Wait()
}

func (w *LockWorkload) holder(ctx context.Context, client int, a *Agent, rng *rand.Rand) {
	cl := APIClient(a, opTimeout)
	for ctx.Err() == nil {
		err := w.holdOnce(ctx, cl, client, a, rng)
		if errors.Is(err, ErrSessionsUnsupported) {
			w.unsupported.Store(true)
			return
		}
		clock.Sleep(ctx, time.Duration(50+rng.IntN(200))*time.Millisecond)
	}
}

// holdOnce creates a session, tries once to take the lock with it, and
// appends a few entries while it holds it.
func (w *LockWorkload) holdOnce(ctx context.Context, cl *api.Client, client int, a *Agent, rng *rand.Rand) error {
	sess, err := createSession(ctx, cl)
	if err != nil {
		return err
	}
	// The session lives while it is renewed; closing renewDone destroys
	// it (RenewPeriodic's contract), and wg waits for the renewer.
	renewDone := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = cl.Session().RenewPeriodic("10s", sess, nil, renewDone)
	}()
	defer func() {
		close(renewDone)
		wg.Wait()
	}()
	lock, err := cl.LockOpts(&api.LockOptions{Key: w.LockKey(), Session: sess, LockTryOnce: true, LockWaitTime: 2 * time.Second})
	if err != nil {
		return fmt.Errorf("lock options: %w", err)
	}
	lost, err := lock.Lock(ctx.Done())
	if err != nil || lost == nil {
		return err
	}
	h := Hold{Client: client, Agent: a.Name, Session: sess, Acquired: w.Clock.Now()}
	defer func() {
		h.Released = w.Clock.Now()
		w.Holds.Add(h)
		_ = lock.Unlock()
	}()
	qctx, cancel := context.WithTimeout(ctx, opTimeout)
	p, _, err := cl.KV().Get(w.LockKey(), (&api.QueryOptions{RequireConsistent: true}).WithContext(qctx))
	cancel()
	if err != nil || p == nil || p.Session != sess {
		h.Lost = true
		return err
	}
	h.LockIndex = p.LockIndex
	for n := 1 + rng.IntN(5); n > 0 && ctx.Err() == nil; n-- {
		select {
		case <-lost:
			h.Lost = true
			return nil
		default:
		}
		w.appendOnce(ctx, cl, client, sess, h.LockIndex)
		clock.Sleep(ctx, time.Duration(rng.IntN(50))*time.Millisecond)
	}
	return nil
}

// createSession makes a session with a 10s TTL (Consul's minimum) and a
// short lock delay, so that a lost lock is soon taken again.
func createSession(ctx context.Context, cl *api.Client) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	id, _, err := cl.Session().Create(&api.SessionEntry{TTL: "10s", LockDelay: time.Second, Behavior: api.SessionBehaviorRelease},
		(&api.WriteOptions{}).WithContext(ctx))
	var se api.StatusError
	if errors.As(err, &se) && se.Code == http.StatusNotFound {
		return "", ErrSessionsUnsupported
	}
	if err != nil {
		return "", fmt.Errorf("create session: %w", err)
	}
	return id, nil
}

func (w *LockWorkload) appendOnce(ctx context.Context, cl *api.Client, client int, sess string, lockIndex uint64) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	key := fmt.Sprintf("%s%08d", w.LogPrefix(), w.seq.Add(1))
	val, _ := json.Marshal(logEntry{Client: client, Session: sess, LockIndex: lockIndex})
	ap := Append{Client: client, Session: sess, LockIndex: lockIndex, Key: key, Call: w.Clock.Now()}
	ok, resp, _, err := cl.KV().Txn(api.KVTxnOps{
		{Verb: api.KVCheckSession, Key: w.LockKey(), Session: sess},
		{Verb: api.KVSet, Key: key, Value: val},
	}, (&api.QueryOptions{}).WithContext(ctx))
	ap.Return = w.Clock.Now()
	switch {
	case err != nil:
		ap.Result, ap.Error = classify(err), err.Error()
	case ok:
		ap.Result = OK
	default:
		// The fence refused it: the transaction was rolled back.
		ap.Result = Fail
		if resp != nil && len(resp.Errors) > 0 {
			ap.Error = resp.Errors[0].What
		}
	}
	w.Appends.Add(ap)
}
