package connect

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tribune-mesh/tribune/catalog"
)

const td = "11111111-2222-3333-4444-555555555555.consul"

var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func TestSpiffeIDRoundTrip(t *testing.T) {
	for _, id := range []ID{
		ServiceID(td, "dc1", "web"),
		{Kind: KindAgent, TrustDomain: td, Datacenter: "dc2", Node: "node-1"},
		{Kind: KindServer, TrustDomain: td, Datacenter: "dc1"},
		{Kind: KindSigning, TrustDomain: td},
	} {
		got, err := ParseID(id.String())
		if err != nil || got != id {
			t.Errorf("ParseID(%s) = %+v, %v; want %+v", id, got, err, id)
		}
	}
	if s := ServiceID(td, "dc1", "web").String(); s != "spiffe://"+td+"/ns/default/dc/dc1/svc/web" {
		t.Errorf("service URI %s", s)
	}
	for _, bad := range []string{"http://x/ns/default/dc/dc1/svc/web", "spiffe:///ns/a/dc/b/svc/c",
		"spiffe://td/ns/default/dc/dc1/svc/", "spiffe://td/ns/default/dc/dc1", "spiffe://td/other",
		"spiffe://td/ns/default/dc/dc1/svc/web?x=1", "%zz", "spiffe://td/agent/client/dc/dc1/id/"} {
		if _, err := ParseID(bad); !errors.Is(err, ErrBadSpiffeID) {
			t.Errorf("ParseID(%q) = %v, want ErrBadSpiffeID", bad, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).WithDefaults().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	d := (Config{}).WithDefaults()
	if d.LeafCertTTL != 72*time.Hour || d.PrivateKeyType != "ec" || d.PrivateKeyBits != 256 {
		t.Fatalf("defaults %+v", d)
	}
	for _, c := range []Config{
		{PrivateKeyType: "dsa"},
		{PrivateKeyType: "ec", PrivateKeyBits: 1024},
		{PrivateKeyType: "rsa", PrivateKeyBits: 1024},
		{LeafCertTTL: time.Second},
		{LeafCertTTL: 2 * 365 * 24 * time.Hour},
		{RootCertTTL: time.Hour},
		{LeafCertTTL: 72 * time.Hour, IntermediateCertTTL: 100 * time.Hour},
	} {
		if err := c.WithDefaults().Validate(); err == nil {
			t.Errorf("Validate(%+v) accepted", c)
		}
	}
}

func newRoot(t *testing.T, now time.Time) *catalog.CARoot {
	t.Helper()
	r, err := NewRoot(Config{}, td, now)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func leafFor(t *testing.T, root *catalog.CARoot, svc string, ttl time.Duration, now time.Time) (*Leaf, string) {
	t.Helper()
	id := ServiceID(td, "dc1", svc)
	csr, key, err := NewLeafCSR(id, "ec", 256)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := SignLeaf(root, csr, id, ttl, now)
	if err != nil {
		t.Fatal(err)
	}
	return leaf, key
}

func TestSignLeafAndVerify(t *testing.T) {
	root := newRoot(t, t0)
	if root.ID == "" || !strings.Contains(root.SigningKeyID, ":") || !root.Active {
		t.Fatalf("root fields: %+v", root.Public())
	}
	if root.Public().PrivateKey != "" || root.PrivateKey == "" {
		t.Fatal("Public() must drop the private key and only it")
	}
	leaf, _ := leafFor(t, root, "web", 72*time.Hour, t0)
	if got := leaf.ValidBefore.Sub(t0); got != 72*time.Hour {
		t.Fatalf("leaf lifetime %v", got)
	}
	id, err := VerifyLeaf(leaf.CertPEM, []*catalog.CARoot{root}, t0.Add(time.Hour))
	if err != nil || id.Service != "web" {
		t.Fatalf("VerifyLeaf: %+v %v", id, err)
	}
	if _, err := VerifyLeaf(leaf.CertPEM, []*catalog.CARoot{root}, t0.Add(73*time.Hour)); err == nil {
		t.Fatal("expired leaf verified")
	}
	other := newRoot(t, t0)
	if _, err := VerifyLeaf(leaf.CertPEM, []*catalog.CARoot{other}, t0.Add(time.Hour)); err == nil {
		t.Fatal("leaf verified against another CA")
	}
}

func TestSignLeafRefusesOtherIdentity(t *testing.T) {
	root := newRoot(t, t0)
	csr, _, err := NewLeafCSR(ServiceID(td, "dc1", "db"), "ec", 256)
	if err != nil {
		t.Fatal(err)
	}
	// A caller allowed "web" sends a CSR for "db".
	if _, err := SignLeaf(root, csr, ServiceID(td, "dc1", "web"), time.Hour, t0); !errors.Is(err, ErrCSRMismatch) {
		t.Fatalf("CSR for another service: %v, want ErrCSRMismatch", err)
	}
	if _, err := SignLeaf(root, "junk", ServiceID(td, "dc1", "web"), time.Hour, t0); err == nil {
		t.Fatal("junk CSR signed")
	}
	// A CSR whose signature does not match its key.
	b, _ := pem.Decode([]byte(csr))
	b.Bytes[len(b.Bytes)-3] ^= 0xff
	tampered := string(pem.EncodeToMemory(b))
	if _, err := SignLeaf(root, tampered, ServiceID(td, "dc1", "db"), time.Hour, t0); err == nil {
		t.Fatal("tampered CSR signed")
	}
}

func TestLeafNeverOutlivesRoot(t *testing.T) {
	root := newRoot(t, t0)
	notAfter := root.NotAfter
	leaf, _ := leafFor(t, root, "web", 72*time.Hour, notAfter.Add(-time.Hour))
	if leaf.ValidBefore.After(notAfter) {
		t.Fatalf("leaf valid until %v, past the root's %v", leaf.ValidBefore, notAfter)
	}
}

// TestRotationCrossSigned: after a rotation, a leaf signed by the new root
// verifies for a proxy that still trusts only the old root (through the
// cross-signed intermediate), and old leaves still verify with both roots
// in the bundle.
func TestRotationCrossSigned(t *testing.T) {
	oldRoot := newRoot(t, t0)
	oldLeaf, _ := leafFor(t, oldRoot, "web", 72*time.Hour, t0)
	newRoot := newRoot(t, t0.Add(time.Hour))
	cross, err := CrossSign(newRoot, oldRoot, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	newRoot.IntermediateCerts = []string{cross}
	newLeaf, _ := leafFor(t, newRoot, "db", 72*time.Hour, t0.Add(time.Hour))
	at := t0.Add(2 * time.Hour)

	// A proxy with only the old root: verifies the new leaf through the
	// intermediate. The test hands it the intermediates as a proxy receives
	// them with the new leaf's chain.
	onlyOld := *oldRoot
	onlyOld.IntermediateCerts = []string{cross}
	if _, err := VerifyLeaf(newLeaf.CertPEM, []*catalog.CARoot{&onlyOld}, at); err != nil {
		t.Fatalf("new leaf against old root + cross-signed: %v", err)
	}
	// Without the intermediate it must fail (the cross-signature is what
	// makes it work).
	if _, err := VerifyLeaf(newLeaf.CertPEM, []*catalog.CARoot{oldRoot}, at); err == nil {
		t.Fatal("new leaf verified against the old root alone")
	}
	// Both roots in the bundle: both leaves verify.
	for _, l := range []*Leaf{oldLeaf, newLeaf} {
		if _, err := VerifyLeaf(l.CertPEM, []*catalog.CARoot{oldRoot, newRoot}, at); err != nil {
			t.Fatalf("leaf against both roots: %v", err)
		}
	}
}

// TestMutualTLSWithLeaves: two leaves of the same root complete a real mTLS
// handshake over loopback, each side checking the other's chain.
func TestMutualTLSWithLeaves(t *testing.T) {
	root := newRoot(t, t0)
	now := time.Now()
	webLeaf, webKey := leafFor(t, root, "web", time.Hour, now)
	dbLeaf, dbKey := leafFor(t, root, "db", time.Hour, now)
	pool := x509.NewCertPool()
	rc, _ := ParseCert(root.RootCert)
	pool.AddCert(rc)
	pair := func(c, k string) tls.Certificate {
		p, err := tls.X509KeyPair([]byte(c), []byte(k))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	verifyPeer := func(want string) func(tls.ConnectionState) error {
		return func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no peer certificate")
			}
			if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				return err
			}
			id, err := ParseID(cs.PeerCertificates[0].URIs[0].String())
			if err != nil || id.Service != want {
				return errors.New("peer is not " + want)
			}
			return nil
		}
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{pair(dbLeaf.CertPEM, dbKey)}, ClientAuth: tls.RequireAnyClientCert,
		VerifyConnection: verifyPeer("web"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		done <- c.(*tls.Conn).Handshake()
	}()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), &tls.Config{
		Certificates: []tls.Certificate{pair(webLeaf.CertPEM, webKey)}, InsecureSkipVerify: true,
		VerifyConnection: verifyPeer("db"),
	})
	if err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
}

func TestRenewAt(t *testing.T) {
	nb, na := t0, t0.Add(72*time.Hour)
	if got := RenewAt(nb, na, 0); !got.Equal(t0.Add(36 * time.Hour)) {
		t.Errorf("r=0: %v", got)
	}
	if got := RenewAt(nb, na, 0.999999); got.Before(t0.Add(53*time.Hour)) || got.After(t0.Add(54*time.Hour)) {
		t.Errorf("r≈1: %v, want just under 54h", got.Sub(t0))
	}
	if got := RenewAt(nb, na, 7); !got.Equal(t0.Add(36 * time.Hour)) {
		t.Errorf("r out of range not clamped: %v", got)
	}
}

func TestRSARoot(t *testing.T) {
	r, err := NewRoot(Config{PrivateKeyType: "rsa", PrivateKeyBits: 2048}, td, t0)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := leafFor(t, r, "web", time.Hour, t0)
	if _, err := VerifyLeaf(leaf.CertPEM, []*catalog.CARoot{r}, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
}

func ixn(src, dst, action string) *catalog.Intention {
	return &catalog.Intention{SourceName: src, DestinationName: dst, Action: action, SourceType: "consul"}
}

func TestAuthorizePrecedence(t *testing.T) {
	ixns := []*catalog.Intention{
		ixn("*", "*", "deny"),
		ixn("*", "db", "allow"),
		ixn("web", "db", "deny"),
		ixn("api", "*", "allow"),
	}
	cases := []struct {
		src, dst     string
		defaultAllow bool
		want         bool
		match        string
	}{
		{"web", "db", true, false, "web=>db"},   // exact/exact 9 beats */db 8
		{"api", "db", false, true, "*=>db"},     // */db 8 beats api/* 6
		{"api", "cache", false, true, "api=>*"}, // api/* 6 beats */* 5
		{"other", "cache", true, false, "*=>*"}, // */* deny beats default allow
	}
	for _, c := range cases {
		d := Authorize(ixns, c.src, c.dst, c.defaultAllow)
		if d.Allowed != c.want || d.Match == nil || d.Match.SourceName+"=>"+d.Match.DestinationName != c.match {
			t.Errorf("%s->%s: %+v, want allowed=%v by %s", c.src, c.dst, d, c.want, c.match)
		}
	}
	if d := Authorize(nil, "a", "b", false); d.Allowed || d.Match != nil {
		t.Errorf("no intentions, default deny: %+v", d)
	}
	if d := Authorize(nil, "a", "b", true); !d.Allowed {
		t.Errorf("no intentions, default allow: %+v", d)
	}
	l7 := &catalog.Intention{SourceName: "web", DestinationName: "db", Permissions: []any{map[string]any{"Action": "allow"}}}
	if d := Authorize([]*catalog.Intention{l7}, "web", "db", true); d.Allowed {
		t.Error("an L7 intention allowed an L4 connection")
	}
}

func TestValidateIntention(t *testing.T) {
	if err := ValidateIntention(ixn("web", "db", "allow")); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []*catalog.Intention{
		nil, ixn("", "db", "allow"), ixn("web", "d*", "allow"), ixn("web", "db", "maybe"),
		ixn(strings.Repeat("x", 300), "db", "allow"),
		{SourceName: "a", DestinationName: "b", Action: "allow", Permissions: []any{1}},
		{SourceName: "a", DestinationName: "b", Action: "allow", SourceType: "external"},
	} {
		if err := ValidateIntention(bad); err == nil {
			t.Errorf("ValidateIntention(%+v) accepted", bad)
		}
	}
	list := []*catalog.Intention{ixn("*", "*", "deny"), ixn("web", "db", "allow"), ixn("*", "db", "deny")}
	SortByPrecedence(list)
	if list[0].SourceName != "web" || list[2].DestinationName != "*" {
		t.Errorf("sort order: %v %v %v", list[0], list[1], list[2])
	}
}

func FuzzParseID(f *testing.F) {
	f.Add("spiffe://" + td + "/ns/default/dc/dc1/svc/web")
	f.Add("spiffe://" + td + "/agent/client/dc/dc1/id/n1")
	f.Add("spiffe://" + td)
	f.Add("spiffe://x/%zz")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err != nil {
			return
		}
		again, err := ParseID(id.String())
		if err != nil || again != id {
			t.Fatalf("%q parsed to %+v, which does not round-trip: %+v %v", s, id, again, err)
		}
	})
}
