package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/hcl"
	hclparser "github.com/hashicorp/hcl/hcl/parser"
)

// Source is configuration text that does not come from a file named on the
// command line, such as a test's inline HCL.
type Source struct {
	// Name names the source in warnings and errors.
	Name string
	// Format is "json" or "hcl".
	Format string
	// Data is the configuration text.
	Data []byte
}

// LoadOptions says where Load finds the configuration.
type LoadOptions struct {
	// Args are the command-line arguments after `agent`.
	Args []string
	// Sources are applied after the files named by Args and before the
	// other flags.
	Sources []Source
	// FlagOutput receives the flag package's usage text and messages (for
	// -h); nil discards them.
	FlagOutput io.Writer
	// Hostname returns the node name used when node_name is unset; nil
	// means os.Hostname.
	Hostname func() (string, error)
	// InterfaceAddrs lists the machine's addresses, to choose the address
	// to advertise when advertise_addr is unset and bind_addr is 0.0.0.0
	// or ::; nil means net.InterfaceAddrs.
	InterfaceAddrs func() ([]net.Addr, error)
}

// Load builds a Config the way Consul's agent does. Sources are applied in
// this order, each over the last: the defaults (DevDefault with -dev,
// Default otherwise); the files of every -config-file and -config-dir in
// command-line order (a directory's *.json and *.hcl files in lexical
// order); opts.Sources; the other command-line flags; the -hcl snippets.
// A later value replaces an earlier one, except that lists (retry_join,
// services, ...) append and maps (node_meta, ...) merge.
//
// It returns warnings that should be logged (unknown keys, keys set twice
// in one object of a file, deprecated keys, advice) and an error if the
// arguments, a file, or the resulting configuration is invalid. For -h the
// error wraps flag.ErrHelp.
func Load(opts LoadOptions) (*Config, []string, error) {
	pf, err := parseFlags(opts.Args, opts.FlagOutput)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}

	c := Default()
	if pf.dev {
		c = DevDefault()
	}
	var warnings []string
	set := make(map[string]bool)
	apply := func(name string, m map[string]interface{}) error {
		a := &applier{source: name, warnings: &warnings, set: set}
		if err := a.apply(c, m); err != nil {
			return fmt.Errorf("config: %s: %w", name, err)
		}
		return nil
	}

	for _, p := range pf.configPaths {
		files, skipped, err := expandConfigPath(p, pf.configFormat)
		if err != nil {
			return nil, nil, fmt.Errorf("config: %w", err)
		}
		for _, s := range skipped {
			warnings = append(warnings, fmt.Sprintf("config: skipping %s: extension must be .json or .hcl, or set -config-format", s))
		}
		for _, f := range files {
			data, err := os.ReadFile(f.path)
			if err != nil {
				return nil, nil, fmt.Errorf("config: %w", err)
			}
			m, err := parseSource(f.path, f.format, data)
			if err != nil {
				return nil, nil, err
			}
			warnings = append(warnings, duplicateWarnings(f.path, f.format, data)...)
			if err := apply(f.path, m); err != nil {
				return nil, nil, err
			}
			c.ConfigFiles = append(c.ConfigFiles, f.path)
		}
	}
	for _, s := range opts.Sources {
		m, err := parseSource(s.Name, s.Format, s.Data)
		if err != nil {
			return nil, nil, err
		}
		warnings = append(warnings, duplicateWarnings(s.Name, s.Format, s.Data)...)
		if err := apply(s.Name, m); err != nil {
			return nil, nil, err
		}
	}
	if err := apply("command-line flags", pf.overrides); err != nil {
		return nil, nil, err
	}
	for i, snippet := range pf.hcl {
		name := fmt.Sprintf("-hcl flag %d", i+1)
		m, err := parseSource(name, "hcl", []byte(snippet))
		if err != nil {
			return nil, nil, err
		}
		warnings = append(warnings, duplicateWarnings(name, "hcl", []byte(snippet))...)
		if err := apply(name, m); err != nil {
			return nil, nil, err
		}
	}

	hostname := opts.Hostname
	if hostname == nil {
		hostname = os.Hostname
	}
	ifaces := opts.InterfaceAddrs
	if ifaces == nil {
		ifaces = net.InterfaceAddrs
	}
	if err := finish(c, set, hostname, ifaces); err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	return c, append(warnings, c.warnings()...), nil
}

// finish fills in values that depend on other values once every source has
// been applied, and normalizes spellings.
func finish(c *Config, set map[string]bool, hostname func() (string, error), ifaces func() ([]net.Addr, error)) error {
	if c.NodeName == "" {
		h, err := hostname()
		if err != nil {
			return fmt.Errorf("node_name: not set and the host name is unavailable: %w", err)
		}
		c.NodeName = h
	}
	c.NodeID = strings.ToLower(c.NodeID)
	c.Datacenter = strings.ToLower(c.Datacenter)
	c.PrimaryDatacenter = strings.ToLower(c.PrimaryDatacenter)
	if c.PrimaryDatacenter == "" {
		c.PrimaryDatacenter = c.Datacenter
	}
	c.Domain = fqdn(c.Domain)
	if c.AltDomain != "" {
		c.AltDomain = fqdn(c.AltDomain)
	}
	if c.AdvertiseAddrLAN == "" {
		a, err := chooseAdvertiseAddr(c.BindAddr, c.DevMode, ifaces)
		if err != nil {
			return err
		}
		c.AdvertiseAddrLAN = a
	}
	if c.AdvertiseAddrWAN == "" {
		c.AdvertiseAddrWAN = c.AdvertiseAddrLAN
	}
	finishTLS(c, set)
	if !set["leave_on_terminate"] {
		c.LeaveOnTerminate = !c.Server
	}
	if !set["skip_leave_on_interrupt"] {
		c.SkipLeaveOnInterrupt = c.Server
	}
	if p := c.UI.ContentPath; p != "" {
		c.UI.ContentPath = "/" + strings.Trim(p, "/") + "/"
		if c.UI.ContentPath == "//" {
			c.UI.ContentPath = "/"
		}
	}
	return nil
}

func fqdn(s string) string {
	if s == "" || strings.HasSuffix(s, ".") {
		return s
	}
	return s + "."
}

// configFile is a file to read and the format to read it in.
type configFile struct {
	path   string
	format string
}

// expandConfigPath turns a -config-file or -config-dir value into the files
// to read. A directory yields its regular files in lexical order; files
// whose format cannot be told are returned in skipped. A file named
// directly must have a known format.
func expandConfigPath(path, format string) (files []configFile, skipped []string, err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	if !fi.IsDir() {
		f := formatOf(path, format)
		if f == "" {
			return nil, nil, fmt.Errorf("%s: extension must be .json or .hcl, or set -config-format", path)
		}
		return []configFile{{path: path, format: f}}, nil, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, nil, err
	}
	// os.ReadDir returns entries sorted by name.
	for _, e := range entries {
		p := filepath.Join(path, e.Name())
		info, err := os.Stat(p) // follow symlinks
		if err != nil {
			return nil, nil, err
		}
		if info.IsDir() {
			continue
		}
		f := formatOf(p, format)
		if f == "" {
			skipped = append(skipped, p)
			continue
		}
		files = append(files, configFile{path: p, format: f})
	}
	return files, skipped, nil
}

// formatOf returns the format to read path in: format when set, else the
// one its extension names, else "".
func formatOf(path, format string) string {
	if format != "" {
		return format
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".json":
		return "json"
	case ".hcl":
		return "hcl"
	}
	return ""
}

// parseSource decodes configuration text into a generic map.
func parseSource(name, format string, data []byte) (map[string]interface{}, error) {
	var (
		m   map[string]interface{}
		err error
	)
	switch format {
	case "json":
		m, err = parseJSON(data)
	case "hcl":
		m, err = parseHCL(data)
	default:
		return nil, fmt.Errorf("config: %s: unknown format %q (want json or hcl)", name, format)
	}
	if err != nil {
		return nil, fmt.Errorf("config: parse %s: %w", name, err)
	}
	return m, nil
}

// parseJSON decodes one JSON object, keeping numbers exact, and reports
// syntax errors by line and column. An empty file is an empty object.
func parseJSON(data []byte) (map[string]interface{}, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v interface{}
	if err := dec.Decode(&v); err != nil {
		var se *json.SyntaxError
		switch {
		case errors.As(err, &se):
			line, col := lineCol(data, se.Offset)
			return nil, fmt.Errorf("line %d, column %d: %w", line, col, err)
		case errors.Is(err, io.EOF):
			// An empty file sets nothing, as Consul reads it (tools
			// create the file first and fill it in before a reload).
			return map[string]interface{}{}, nil
		case errors.Is(err, io.ErrUnexpectedEOF):
			line, col := lineCol(data, int64(len(data)))
			return nil, fmt.Errorf("line %d, column %d: unexpected end of input", line, col)
		}
		return nil, err
	}
	// Anything but white space after the object is an error.
	rest := data[dec.InputOffset():]
	if trimmed := bytes.TrimLeft(rest, " \t\r\n"); len(trimmed) > 0 {
		at := int64(len(data)-len(trimmed)) + 1 // lineCol wants the offset after the byte
		line, col := lineCol(data, at)
		return nil, fmt.Errorf("line %d, column %d: unexpected data after the top-level object", line, col)
	}
	switch t := v.(type) {
	case map[string]interface{}:
		return t, nil
	case nil:
		return map[string]interface{}{}, nil
	}
	return nil, fmt.Errorf("line 1, column 1: expected a JSON object at the top level, got %s", typeName(v))
}

// lineCol converts a byte offset, as json.SyntaxError gives it (the offset
// after the byte read last), to a 1-based line and column.
func lineCol(data []byte, offset int64) (line, col int) {
	if offset > int64(len(data)) {
		offset = int64(len(data))
	}
	if offset < 1 {
		return 1, 1
	}
	before := data[:offset-1]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(offset-1) - bytes.LastIndexByte(before, '\n')
	return line, col
}

// parseHCL decodes HCL v1 text. HCL's parser has panicked on malformed
// input in the past; such a panic is the user's bad file, so it becomes an
// error.
func parseHCL(data []byte) (m map[string]interface{}, err error) {
	defer func() {
		if r := recover(); r != nil {
			m, err = nil, fmt.Errorf("malformed HCL (parser failed: %v)", r)
		}
	}()
	if err := hcl.Decode(&m, string(data)); err != nil {
		var pe *hclparser.PosError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("line %d, column %d: %w", pe.Pos.Line, pe.Pos.Column, pe.Err)
		}
		return nil, err
	}
	if m == nil {
		m = map[string]interface{}{}
	}
	return m, nil
}
