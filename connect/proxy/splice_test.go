package proxy

import (
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	dialed, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	other := <-accepted
	if other == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() {
		dialed.Close()
		other.Close()
	})
	return dialed.(*net.TCPConn), other.(*net.TCPConn)
}

// client <-> (a | splice | b) <-> server: a half-close from either side
// reaches the other while the other direction keeps flowing, and splice
// returns once both directions ended.
func TestSpliceHalfClose(t *testing.T) {
	client, a := tcpPair(t)
	b, server := tcpPair(t)
	done := make(chan struct{})
	go func() {
		splice(a, b, time.Minute)
		close(done)
	}()
	deadline := time.Now().Add(20 * time.Second)
	client.SetDeadline(deadline)
	server.SetDeadline(deadline)

	if _, err := client.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	if err := client.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(server)
	if err != nil || string(got) != "request" {
		t.Fatalf("server read %q, %v; want the request then EOF", got, err)
	}
	// The server answers after the client's end: the way back still flows.
	if _, err := server.Write([]byte("response")); err != nil {
		t.Fatal(err)
	}
	server.CloseWrite()
	got, err = io.ReadAll(client)
	if err != nil || string(got) != "response" {
		t.Fatalf("client read %q, %v; want the response then EOF", got, err)
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("splice did not return after both directions ended")
	}
}

// A pair on which nothing moves for the idle timeout is closed, but one
// busy direction keeps a quiet one open.
func TestSpliceIdle(t *testing.T) {
	client, a := tcpPair(t)
	b, server := tcpPair(t)
	// Generous: a paused test process must not look idle.
	const idle = time.Second
	done := make(chan struct{})
	go func() {
		splice(a, b, idle)
		close(done)
	}()
	// Only the client talks, for several idle periods: the server's
	// direction is quiet, the pair is not idle.
	buf := make([]byte, 1)
	for end := time.Now().Add(3 * idle); time.Now().Before(end); {
		client.SetDeadline(time.Now().Add(10 * time.Second))
		server.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := client.Write([]byte("x")); err != nil {
			t.Fatalf("write while busy: %v", err)
		}
		if _, err := io.ReadFull(server, buf); err != nil {
			t.Fatalf("read while busy: %v", err)
		}
		time.Sleep(idle / 10)
	}
	select {
	case <-done:
		t.Fatal("a busy pair was closed")
	default:
	}
	// Then silence: both ends are closed.
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("an idle pair was not closed")
	}
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := client.Read(buf); err == nil {
		t.Fatal("the client's end is still open")
	}
}
