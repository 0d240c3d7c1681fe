package checks

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// userAgent is sent when the definition sets no User-Agent: Consul's value,
// so services that recognise their health checker keep doing so.
const userAgent = "Consul Health Check"

type httpProber struct {
	client  *http.Client
	method  string
	url     string
	header  http.Header
	body    string
	timeout time.Duration
	maxBody int
}

func newHTTPProber(def Definition, baseTLS *tls.Config) (*httpProber, error) {
	// Building one request up front rejects a method net/http would refuse.
	if _, err := http.NewRequest(def.Method, def.HTTP, nil); err != nil {
		return nil, fmt.Errorf("HTTP %s %s: %w", def.Method, def.HTTP, err)
	}
	transport := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{}).DialContext,
		TLSClientConfig:     checkTLSConfig(baseTLS, def.TLSSkipVerify, def.TLSServerName),
		TLSHandshakeTimeout: def.Timeout,
		// Every probe opens a fresh connection: it tests that the service
		// still accepts them, and a stopped Check leaves no idle
		// connection (or its goroutines) behind.
		DisableKeepAlives: true,
	}
	client := &http.Client{Transport: transport}
	if def.DisableRedirects {
		client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	// Header.Add canonicalises names, so "host" or "x-foo" from a JSON
	// definition behave like "Host" and "X-Foo".
	header := http.Header{}
	for name, values := range def.Header {
		for _, v := range values {
			header.Add(name, v)
		}
	}
	return &httpProber{
		client:  client,
		method:  def.Method,
		url:     def.HTTP,
		header:  header,
		body:    def.Body,
		timeout: def.Timeout,
		maxBody: def.OutputMaxSize,
	}, nil
}

func (p *httpProber) probe(ctx context.Context) (string, string) {
	prefix := fmt.Sprintf("HTTP %s %s", p.method, p.url)
	var body io.Reader
	if p.body != "" {
		body = strings.NewReader(p.body)
	}
	req, err := http.NewRequestWithContext(ctx, p.method, p.url, body)
	if err != nil {
		return StatusCritical, fmt.Sprintf("%s: %v", prefix, err)
	}
	req.Header = p.header.Clone()
	if host := req.Header.Get("Host"); host != "" {
		req.Host = host
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", userAgent)
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "text/plain, text/*, */*")
	}

	resp, err := p.client.Do(req)
	if err != nil {
		// The *url.Error repeats the method and URL the prefix already has.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return StatusCritical, failure(ctx, prefix, err, p.timeout)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, int64(p.maxBody)))
	if err != nil {
		return StatusCritical, failure(ctx, fmt.Sprintf("%s: %s reading body", prefix, resp.Status), err, p.timeout)
	}
	output := fmt.Sprintf("%s: %s Output: %s", prefix, resp.Status, out)
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode <= 299:
		return StatusPassing, output
	case resp.StatusCode == http.StatusTooManyRequests:
		return StatusWarning, output
	default:
		return StatusCritical, output
	}
}
