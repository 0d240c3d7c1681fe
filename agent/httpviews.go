package agent

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tribune-mesh/tribune/agent/httpapi"
	"github.com/tribune-mesh/tribune/agent/viewcache"
	"github.com/tribune-mesh/tribune/catalog"
)

// lazyViews is the view cache behind the HTTP API's ?cached reads and its
// shared blocking queries, started on the first such read so that an agent
// nobody asks for them runs no view goroutines. It implements httpapi.ViewCache.
type lazyViews struct {
	reader viewcache.Reader
	logger hclog.Logger

	mu     sync.Mutex
	cache  *viewcache.Cache
	closed bool
}

// get returns the cache, starting it; nil after close.
func (l *lazyViews) get(start bool) *viewcache.Cache {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cache == nil && start && !l.closed {
		// The API parks blocking queries of up to 10 minutes on its
		// views (httpapi/blocking.go).
		l.cache = viewcache.New(l.reader, viewcache.Config{Logger: l.logger, MaxQueryTime: httpapi.MaxSharedWait})
	}
	return l.cache
}

// Get implements httpapi.ViewCache.
func (l *lazyViews) Get(ctx context.Context, req *catalog.ReadRequest) (*catalog.ReadResponse, error) {
	c := l.get(true)
	if c == nil {
		return nil, viewcache.ErrClosed
	}
	return c.Get(ctx, req)
}

// Notify follows the view of req (viewcache.Cache.Notify), starting the
// cache.
func (l *lazyViews) Notify(req *catalog.ReadRequest, fn func(*catalog.ReadResponse)) (*catalog.ReadResponse, func(), error) {
	c := l.get(true)
	if c == nil {
		return nil, nil, viewcache.ErrClosed
	}
	return c.Notify(req, fn)
}

// Shared implements httpapi.ViewCache.
func (l *lazyViews) Shared(ctx context.Context, req *catalog.ReadRequest) (*catalog.ReadResponse, *viewcache.Memo, error) {
	c := l.get(true)
	if c == nil {
		return nil, nil, viewcache.ErrClosed
	}
	return c.Shared(ctx, req)
}

// Park implements httpapi.ViewCache.
func (l *lazyViews) Park(req *catalog.ReadRequest, fn viewcache.ParkFunc) {
	c := l.get(true)
	if c == nil {
		fn(nil, nil, viewcache.ErrClosed)
		return
	}
	c.Park(req, fn)
}

// Has implements httpapi.ViewCache.
func (l *lazyViews) Has(req *catalog.ReadRequest) bool {
	c := l.get(false)
	return c != nil && c.Has(req)
}

// Age implements httpapi.ViewCache.
func (l *lazyViews) Age(req *catalog.ReadRequest) (time.Duration, bool) {
	c := l.get(false)
	if c == nil {
		return 0, false
	}
	return c.Age(req)
}

// close stops the cache's views, if it was started, and refuses new reads.
func (l *lazyViews) close() {
	l.mu.Lock()
	c := l.cache
	l.cache, l.closed = nil, true
	l.mu.Unlock()
	if c != nil {
		c.Close()
	}
}
