package catalog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// The binary format of the hot commands (KV writes, transactions of KV and
// session operations, session writes). A log entry is
//
//	type byte | binaryFormat | body
//
// where the body is the request's fields in a fixed order: unsigned
// integers as uvarints, signed ones as varints, strings as a uvarint length
// and the bytes, byte slices and lists as a uvarint of their length plus
// one (0 is nil, so nil and empty survive as they are). It is written and
// read by hand, without reflection. Strings decode as they would from JSON:
// each byte of invalid UTF-8 becomes U+FFFD, as encoding/json writes it, so
// that the store holds the same key whichever format its entry had, and
// snapshots (JSON) restore what was applied.
//
// Entries written before it (and every other command type) have a JSON
// body, which never starts with binaryFormat: DecodeCommand reads both, so a
// log written by an older version replays as it was.
//
// A field added to one of these structs must be added here too, at the end
// of its struct's encoding: TestBinaryCodecKnowsEveryField fails until then.
const binaryFormat byte = 0xB1

// Txn operation tags of the binary format.
const (
	binTxnKV      = 1
	binTxnSession = 2
)

// encodeBinary returns the binary entry of a command, or false when the
// command has no binary form (the caller then writes JSON).
func encodeBinary(t CommandType, body any) ([]byte, bool) {
	var w binWriter
	size := 64
	if req, ok := body.(*KVRequest); ok {
		size += len(req.Entry.Key) + len(req.Entry.Value) + len(req.Entry.Session)
	}
	w.b = make([]byte, 0, size)
	w.b = append(w.b, byte(t), binaryFormat)
	switch t {
	case CmdKV:
		req := bodyOf[KVRequest](body)
		if req == nil {
			return nil, false
		}
		w.str(string(req.Op))
		w.kvEntry(&req.Entry)
	case CmdSession:
		req := bodyOf[SessionRequest](body)
		if req == nil {
			return nil, false
		}
		w.str(string(req.Op))
		w.session(&req.Session)
	case CmdTxn:
		var ops []TxnOp
		switch v := body.(type) {
		case []TxnOp:
			ops = v
		case *[]TxnOp:
			if v == nil {
				return nil, false
			}
			ops = *v
		default:
			return nil, false
		}
		w.count(len(ops), ops == nil)
		for i := range ops {
			op := &ops[i]
			if op.Node != nil || op.Service != nil || op.Check != nil || (op.KV == nil) == (op.Session == nil) {
				// Catalog operations (and malformed ones) keep JSON.
				return nil, false
			}
			if op.KV != nil {
				w.b = append(w.b, binTxnKV)
				w.str(string(op.KV.Verb))
				w.str(op.KV.Key)
				w.bytes(op.KV.Value)
				w.uint(op.KV.Flags)
				w.uint(op.KV.Index)
				w.str(op.KV.Session)
				continue
			}
			w.b = append(w.b, binTxnSession)
			w.str(op.Session.Verb)
			w.session(&op.Session.Session)
		}
	default:
		return nil, false
	}
	return w.b, true
}

// bodyOf returns body as a *T when it is a T or a non-nil *T.
func bodyOf[T any](body any) *T {
	switch v := body.(type) {
	case *T:
		return v
	case T:
		return &v
	}
	return nil
}

// decodeBinary fills cmd (whose Type is set) from a binary body, the
// binaryFormat byte excluded.
func (cmd *Command) decodeBinary(body []byte) error {
	r := binReader{b: body}
	switch cmd.Type {
	case CmdKV:
		if cmd.KV == nil {
			cmd.KV = new(KVRequest)
		}
		cmd.KV.Op = KVOp(r.op())
		r.kvEntry(&cmd.KV.Entry)
	case CmdSession:
		if cmd.Session == nil {
			cmd.Session = new(SessionRequest)
		}
		cmd.Session.Op = SessionOp(r.op())
		r.session(&cmd.Session.Session)
	case CmdTxn:
		n, isNil := r.count()
		if !isNil {
			cmd.Txn = make([]TxnOp, n)
		}
		for i := 0; i < n && r.err == nil; i++ {
			switch tag := r.byte(); tag {
			case binTxnKV:
				cmd.Txn[i].KV = &TxnKVOp{Verb: KVOp(r.op()), Key: r.str(), Value: r.bytes(), Flags: r.uint(), Index: r.uint(), Session: r.str()}
			case binTxnSession:
				op := &TxnSessionOp{Verb: r.op()}
				r.session(&op.Session)
				cmd.Txn[i].Session = op
			default:
				r.fail(fmt.Errorf("txn operation %d: unknown tag %d", i, tag))
			}
		}
	default:
		return fmt.Errorf("no binary form for type %d", cmd.Type)
	}
	if r.err == nil && len(r.b) > 0 {
		r.fail(fmt.Errorf("%d bytes after the body", len(r.b)))
	}
	return r.err
}

type binWriter struct{ b []byte }

func (w *binWriter) uint(v uint64) { w.b = binary.AppendUvarint(w.b, v) }
func (w *binWriter) int(v int64)   { w.b = binary.AppendVarint(w.b, v) }

func (w *binWriter) str(s string) {
	w.uint(uint64(len(s)))
	w.b = append(w.b, s...)
}

func (w *binWriter) bytes(v []byte) {
	w.count(len(v), v == nil)
	w.b = append(w.b, v...)
}

// count writes a length that keeps nil apart from empty.
func (w *binWriter) count(n int, isNil bool) {
	if isNil {
		w.uint(0)
		return
	}
	w.uint(uint64(n) + 1)
}

func (w *binWriter) kvEntry(e *KVEntry) {
	w.uint(e.LockIndex)
	w.str(e.Key)
	w.uint(e.Flags)
	w.bytes(e.Value)
	w.str(e.Session)
	w.uint(e.CreateIndex)
	w.uint(e.ModifyIndex)
}

func (w *binWriter) session(s *Session) {
	w.str(s.ID)
	w.str(s.Name)
	w.str(s.Node)
	w.int(int64(s.LockDelay))
	w.str(s.Behavior)
	w.str(s.TTL)
	w.count(len(s.NodeChecks), s.NodeChecks == nil)
	for _, c := range s.NodeChecks {
		w.str(c)
	}
	w.count(len(s.ServiceChecks), s.ServiceChecks == nil)
	for _, c := range s.ServiceChecks {
		w.str(c.ID)
		w.str(c.Namespace)
	}
	w.uint(s.CreateIndex)
	w.uint(s.ModifyIndex)
}

// binReader reads a binary body. The first error sticks: every later read
// returns a zero value, and err says what was wrong.
type binReader struct {
	b   []byte
	err error
}

var errBinaryTruncated = errors.New("truncated binary body")

func (r *binReader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.b = nil
}

func (r *binReader) byte() byte {
	if len(r.b) == 0 {
		r.fail(errBinaryTruncated)
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *binReader) uint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(errBinaryTruncated)
		return 0
	}
	r.b = r.b[n:]
	return v
}

// int reads a varint: binary.AppendVarint's zig-zag form of a uvarint.
func (r *binReader) int() int64 {
	u := r.uint()
	v := int64(u >> 1)
	if u&1 != 0 {
		v = ^v
	}
	return v
}

// take returns the next n bytes, aliasing the body.
func (r *binReader) take(n uint64) []byte {
	if n > uint64(len(r.b)) {
		r.fail(errBinaryTruncated)
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *binReader) str() string { return decodedString(r.take(r.uint())) }

// decodedString is b as a string read from JSON.
func decodedString(b []byte) string {
	if !utf8.Valid(b) {
		return jsonString(b)
	}
	return string(b)
}

// jsonString is what a string holding b reads back as from JSON:
// encoding/json writes each byte of invalid UTF-8 as U+FFFD.
func jsonString(b []byte) string {
	out := make([]byte, 0, len(b)+8)
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size == 1 {
			out = utf8.AppendRune(out, utf8.RuneError)
		} else {
			out = append(out, b[:size]...)
		}
		b = b[size:]
	}
	return string(out)
}

// op reads a string that is usually one of the operation names: those are
// returned without an allocation.
func (r *binReader) op() string {
	b := r.take(r.uint())
	switch string(b) {
	case "set":
		return "set"
	case "cas":
		return "cas"
	case "lock":
		return "lock"
	case "unlock":
		return "unlock"
	case "delete":
		return "delete"
	case "delete-cas":
		return "delete-cas"
	case "delete-tree":
		return "delete-tree"
	case "get":
		return "get"
	case "get-tree":
		return "get-tree"
	case "check-index":
		return "check-index"
	case "check-session":
		return "check-session"
	case "check-not-exists":
		return "check-not-exists"
	case "create":
		return "create"
	case "destroy":
		return "destroy"
	}
	return decodedString(b)
}

// count reads a length written by binWriter.count. A length longer than the
// bytes left is refused: every element takes at least one byte, so a
// hostile count cannot make the reader allocate more than the entry's size.
func (r *binReader) count() (n int, isNil bool) {
	v := r.uint()
	if r.err != nil || v == 0 {
		return 0, true
	}
	if v-1 > uint64(len(r.b)) {
		r.fail(fmt.Errorf("length %d beyond the body", v-1))
		return 0, true
	}
	return int(v - 1), false
}

func (r *binReader) bytes() []byte {
	n, isNil := r.count()
	if isNil {
		return nil
	}
	// A copy: the store keeps values, the log keeps its entry.
	return append(make([]byte, 0, n), r.take(uint64(n))...)
}

func (r *binReader) kvEntry(e *KVEntry) {
	e.LockIndex = r.uint()
	e.Key = r.str()
	e.Flags = r.uint()
	e.Value = r.bytes()
	e.Session = r.str()
	e.CreateIndex = r.uint()
	e.ModifyIndex = r.uint()
}

func (r *binReader) session(s *Session) {
	s.ID = r.str()
	s.Name = r.str()
	s.Node = r.str()
	s.LockDelay = time.Duration(r.int())
	s.Behavior = r.str()
	s.TTL = r.str()
	if n, isNil := r.count(); !isNil {
		s.NodeChecks = make([]string, n)
		for i := range s.NodeChecks {
			s.NodeChecks[i] = r.str()
		}
	}
	if n, isNil := r.count(); !isNil {
		s.ServiceChecks = make([]ServiceCheck, n)
		for i := range s.ServiceChecks {
			s.ServiceChecks[i] = ServiceCheck{ID: r.str(), Namespace: r.str()}
		}
	}
	s.CreateIndex = r.uint()
	s.ModifyIndex = r.uint()
}
