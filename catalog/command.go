package catalog

import (
	"encoding/json"
	"errors"
	"fmt"
)

// CommandType is the first byte of every Raft log entry Tribune writes.
type CommandType uint8

// Command types. Values are part of the on-disk format: never reuse one.
const (
	CmdRegister   CommandType = 1
	CmdDeregister CommandType = 2
	CmdKV         CommandType = 3
	CmdTxn        CommandType = 4
	CmdSession    CommandType = 5
	CmdCoordinate CommandType = 6
	// CmdPreparedQuery carries a PreparedQueryRequest.
	CmdPreparedQuery CommandType = 7

	// Operator state uses 40-49.

	// CmdAutopilotConfig carries an AutopilotConfigRequest; the FSM
	// answers a KVResult: OK when it was stored, not OK for a failed CAS,
	// or Err.
	CmdAutopilotConfig CommandType = 40
)

// Bounds a command must respect to be proposed (ValidateCommand). They are
// far above what the HTTP API lets through (kv_max_value_size,
// txn_max_req_len, 64 operations per txn) and exist so that no peer of the
// server port can put an arbitrarily large entry into the log.
const (
	// MaxCommandSize bounds an encoded command, type byte included.
	MaxCommandSize = 32 << 20
	// MaxKeySize bounds a KV key, in a KV write or a txn operation.
	MaxKeySize = 64 << 10
	// MaxTxnOps bounds the operations of one transaction.
	MaxTxnOps = 128
	// MaxBatchItems bounds the coordinates of one update and the checks
	// of one registration.
	MaxBatchItems = 4096
)

// ErrBadCommand is wrapped by every error of DecodeCommand and
// ValidateCommand. It wraps ErrInvalidRequest, so an RPC caller sees an
// invalid-request error.
var ErrBadCommand = fmt.Errorf("%w: malformed command", ErrInvalidRequest)

// Command is a decoded log entry: its type and the one body field of that
// type.
type Command struct {
	Type          CommandType
	Register      *RegisterRequest
	Deregister    *DeregisterRequest
	KV            *KVRequest
	Txn           []TxnOp
	Session       *SessionRequest
	Coordinates   []*CoordinateEntry
	PreparedQuery *PreparedQueryRequest

	// ACL commands (types 20-29): one of these is set.
	ACLToken  *ACLToken
	ACLPolicy *ACLPolicy
	ACLRole   *ACLRole
	ACLDelete *ACLDeleteRequest
	// ACLBootstrap is the body of a CmdACLBootstrap; ACLToken points
	// into it.
	ACLBootstrap *ACLBootstrapRequest
	// ACLAuthMethod and ACLBindingRule: types 27 and 28.
	ACLAuthMethod  *ACLAuthMethodRequest
	ACLBindingRule *ACLBindingRuleRequest
	// ACLLogin: type 29, never applied (see CmdACLLogin).
	ACLLogin *ACLLoginRequest
	// Connect (types 30-39).
	CA          *CARequest
	ConfigEntry *ConfigEntryRequest
	VirtualIP   *VirtualIPRequest
	// Operator state (types 40-49).
	Autopilot *AutopilotConfigRequest
}

// Encode returns the log entry for a command: its type byte and its body,
// binary for the types that have a binary form (command_binary.go), JSON
// for the others.
func Encode(t CommandType, body any) ([]byte, error) {
	if b, ok := encodeBinary(t, body); ok {
		return b, nil
	}
	return EncodeJSON(t, body)
}

// EncodeJSON returns the log entry for a command with a JSON body, the
// format of every entry before the binary one (tests write old logs with
// it).
func EncodeJSON(t CommandType, body any) ([]byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode command %d: %w", t, err)
	}
	out := make([]byte, 0, len(b)+1)
	out = append(out, byte(t))
	return append(out, b...), nil
}

// DecodeCommand decodes a log entry: a known type byte followed by a body
// that decodes whole into that type's request, with no element the state
// store could not apply (a nil check of a registration, a txn operation with
// no or several parts set). The FSM applies exactly what it accepts, so its
// checks must only ever be relaxed, never tightened, across versions: an
// entry accepted once must be accepted when the log is replayed.
func DecodeCommand(data []byte) (*Command, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrBadCommand)
	}
	cmd := &Command{Type: CommandType(data[0])}
	body := data[1:]
	var target any
	switch cmd.Type {
	case CmdRegister:
		cmd.Register = new(RegisterRequest)
		target = cmd.Register
	case CmdDeregister:
		cmd.Deregister = new(DeregisterRequest)
		target = cmd.Deregister
	case CmdKV:
		cmd.KV = new(KVRequest)
		target = cmd.KV
	case CmdTxn:
		target = &cmd.Txn
	case CmdSession:
		cmd.Session = new(SessionRequest)
		target = cmd.Session
	case CmdCoordinate:
		target = &cmd.Coordinates
	case CmdPreparedQuery:
		cmd.PreparedQuery = new(PreparedQueryRequest)
		target = cmd.PreparedQuery
	case CmdCA:
		cmd.CA = new(CARequest)
		target = cmd.CA
	case CmdConfigEntry:
		cmd.ConfigEntry = new(ConfigEntryRequest)
		target = cmd.ConfigEntry
	case CmdAutopilotConfig:
		cmd.Autopilot = new(AutopilotConfigRequest)
		target = cmd.Autopilot
	case CmdServiceVirtualIP:
		cmd.VirtualIP = new(VirtualIPRequest)
		target = cmd.VirtualIP
	default:
		if target = cmd.decodeACLTarget(); target != nil {
			break
		}
		return nil, fmt.Errorf("%w: unknown command type %d", ErrBadCommand, data[0])
	}
	if len(body) > 0 && body[0] == binaryFormat {
		if err := cmd.decodeBinary(body[1:]); err != nil {
			return nil, fmt.Errorf("%w: type %d: %v", ErrBadCommand, cmd.Type, err)
		}
	} else if err := json.Unmarshal(body, target); err != nil {
		return nil, fmt.Errorf("%w: type %d: %v", ErrBadCommand, cmd.Type, err)
	}
	if err := cmd.checkShape(); err != nil {
		return nil, fmt.Errorf("%w: type %d: %v", ErrBadCommand, cmd.Type, err)
	}
	return cmd, nil
}

// checkShape refuses what the state store cannot apply safely.
func (c *Command) checkShape() error {
	switch c.Type {
	case CmdCA, CmdConfigEntry:
		return c.checkConnectShape()
	case CmdACLAuthMethod, CmdACLBindingRule, CmdACLLogin:
		return c.checkLoginShape()
	case CmdRegister:
		for i, chk := range c.Register.Checks {
			if chk == nil {
				return fmt.Errorf("check %d is null", i)
			}
		}
	case CmdTxn:
		for i, op := range c.Txn {
			n := 0
			for _, set := range []bool{op.KV != nil, op.Node != nil, op.Service != nil, op.Check != nil, op.Session != nil} {
				if set {
					n++
				}
			}
			if n != 1 {
				return fmt.Errorf("txn operation %d has %d parts, want 1", i, n)
			}
		}
	}
	return nil
}

// ValidateCommand decodes a command that is about to be proposed to Raft and
// checks it against the bounds above and the operations each type knows.
// Servers call it before proposing anything, so the log only holds
// well-formed commands; the FSM's own check (DecodeCommand) is the last line.
func ValidateCommand(data []byte) (*Command, error) {
	if len(data) > MaxCommandSize {
		return nil, fmt.Errorf("%w: %d bytes, max %d", ErrBadCommand, len(data), MaxCommandSize)
	}
	cmd, err := DecodeCommand(data)
	if err != nil {
		return nil, err
	}
	if err := cmd.checkLimits(); err != nil {
		return nil, fmt.Errorf("%w: type %d: %v", ErrBadCommand, cmd.Type, err)
	}
	return cmd, nil
}

var errKeyTooLong = errors.New("key too long")

func (c *Command) checkLimits() error {
	switch c.Type {
	case CmdCA, CmdConfigEntry:
		return c.checkConnectLimits()
	case CmdServiceVirtualIP:
		return c.VirtualIP.Validate()
	case CmdRegister:
		if len(c.Register.Checks) > MaxBatchItems {
			return fmt.Errorf("%d checks, max %d", len(c.Register.Checks), MaxBatchItems)
		}
	case CmdKV:
		switch c.KV.Op {
		case KVSet, KVCAS, KVLock, KVUnlock, KVDelete, KVDeleteCAS, KVDeleteTree:
		default:
			return fmt.Errorf("unknown KV operation %q", c.KV.Op)
		}
		if len(c.KV.Entry.Key) > MaxKeySize {
			return fmt.Errorf("%w (%d bytes, max %d)", errKeyTooLong, len(c.KV.Entry.Key), MaxKeySize)
		}
	case CmdTxn:
		if len(c.Txn) > MaxTxnOps {
			return fmt.Errorf("%d operations, max %d", len(c.Txn), MaxTxnOps)
		}
		for i, op := range c.Txn {
			if op.KV != nil && len(op.KV.Key) > MaxKeySize {
				return fmt.Errorf("operation %d: %w (%d bytes, max %d)", i, errKeyTooLong, len(op.KV.Key), MaxKeySize)
			}
		}
	case CmdSession:
		switch c.Session.Op {
		case SessionCreate, SessionDestroy:
		default:
			return fmt.Errorf("unknown session operation %q", c.Session.Op)
		}
	case CmdCoordinate:
		if len(c.Coordinates) > MaxBatchItems {
			return fmt.Errorf("%d coordinates, max %d", len(c.Coordinates), MaxBatchItems)
		}
	case CmdPreparedQuery:
		switch c.PreparedQuery.Op {
		case PreparedQueryCreate, PreparedQueryUpdate, PreparedQueryDelete:
		default:
			return fmt.Errorf("unknown prepared query operation %q", c.PreparedQuery.Op)
		}
	case CmdACLTokenSet, CmdACLTokenDelete, CmdACLPolicySet, CmdACLPolicyDelete, CmdACLRoleSet, CmdACLRoleDelete, CmdACLBootstrap:
		return c.checkACLLimits()
	case CmdACLAuthMethod, CmdACLBindingRule, CmdACLLogin:
		return c.checkLoginLimits()
	}
	return nil
}

// IsLockAcquire reports whether the command is a KV lock acquire, and on
// which key: the leader consults the lock delay for those before it
// proposes them.
func (c *Command) IsLockAcquire() (string, bool) {
	if c.Type != CmdKV || c.KV.Op != KVLock {
		return "", false
	}
	return c.KV.Entry.Key, true
}
