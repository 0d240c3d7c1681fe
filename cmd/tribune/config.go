package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	"github.com/hashicorp/consul/api"
	"github.com/hashicorp/hcl"
)

// maxConfigFile bounds a config entry file read by "config write".
const maxConfigFile = 4 << 20

func configCommands() map[string]command {
	return map[string]command{
		"config":        {"Interact with Tribune's centralized configurations", groupCommand("config", "Writes, reads, lists and deletes config entries.")},
		"config write":  {"Create or update a centralized config entry", configWriteCommand(os.Stdin)},
		"config read":   {"Read a centralized config entry", runConfigRead},
		"config list":   {"List centralized config entries of a given kind", runConfigList},
		"config delete": {"Delete a centralized config entry", runConfigDelete},
	}
}

// configWriteCommand implements "config write FILE|-": an entry in HCL or
// JSON, with Consul's CamelCase or snake_case keys.
func configWriteCommand(stdin io.Reader) func(args []string, stdout, stderr io.Writer) int {
	return func(args []string, stdout, stderr io.Writer) int {
		var hf httpFlags
		fs := newFlagSet("config write", "config write [options] FILE",
			"Writes the config entry in FILE (HCL or JSON; - reads standard input).", stderr, &hf)
		cas := fs.Bool("cas", false, "Write only if the entry's current index is -modify-index (0: only if it does not exist).")
		modifyIndex := fs.Uint64("modify-index", 0, "The index -cas compares with.")
		if code, ok := parseFlags(fs, args); !ok {
			return code
		}
		if fs.NArg() != 1 {
			fmt.Fprintf(stderr, "Must provide exactly one positional argument to specify the config entry to write\n")
			return 1
		}
		var r io.Reader = stdin
		if p := fs.Arg(0); p != "-" {
			f, err := os.Open(p)
			if err != nil {
				fmt.Fprintf(stderr, "Failed to read config entry: %v\n", err)
				return 1
			}
			defer f.Close()
			r = f
		}
		data, err := io.ReadAll(io.LimitReader(r, maxConfigFile+1))
		if err == nil && len(data) > maxConfigFile {
			err = fmt.Errorf("larger than %d bytes", maxConfigFile)
		}
		if err != nil {
			fmt.Fprintf(stderr, "Failed to read config entry: %v\n", err)
			return 1
		}
		entry, err := parseConfigEntry(data)
		if err != nil {
			fmt.Fprintf(stderr, "Failed to decode config entry input: %v\n", err)
			return 1
		}
		client, err := hf.client()
		if err != nil {
			fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
			return 1
		}
		var ok bool
		if *cas {
			ok, _, err = client.ConfigEntries().CAS(entry, *modifyIndex, nil)
		} else {
			ok, _, err = client.ConfigEntries().Set(entry, nil)
		}
		if err != nil {
			fmt.Fprintf(stderr, "Error writing config entry %s/%s: %v\n", entry.GetKind(), entry.GetName(), err)
			return 1
		}
		if !ok {
			fmt.Fprintf(stderr, "Config entry not updated: %s/%s\n", entry.GetKind(), entry.GetName())
			return 1
		}
		fmt.Fprintf(stdout, "Config entry written: %s/%s\n", entry.GetKind(), entry.GetName())
		return 0
	}
}

// parseConfigEntry decodes an entry file. HCL blocks decode as lists of
// maps and keys may be snake_case; both are mapped onto the client's
// struct for the kind before the client decodes it.
func parseConfigEntry(data []byte) (api.ConfigEntry, error) {
	var raw map[string]any
	if trimmed := strings.TrimSpace(string(data)); strings.HasPrefix(trimmed, "{") {
		if err := json.Unmarshal(data, &raw); err != nil {
			return nil, fmt.Errorf("JSON: %w", err)
		}
	} else if err := hcl.Decode(&raw, string(data)); err != nil {
		return nil, fmt.Errorf("HCL: %w", err)
	}
	kind := ""
	for k, v := range raw {
		if strings.EqualFold(k, "kind") {
			kind, _ = v.(string)
		}
	}
	if kind == "" {
		return nil, fmt.Errorf("missing Kind")
	}
	proto, err := api.MakeConfigEntry(kind, "")
	if err != nil {
		return nil, err
	}
	shaped, _ := shapeLike(raw, reflect.TypeOf(proto)).(map[string]any)
	return api.DecodeConfigEntry(shaped)
}

// shapeLike renames the keys of decoded input to the field names of t (a
// key matches a field ignoring case and underscores) and unwraps the
// one-element lists HCL makes of blocks, recursively. Keys of maps that
// are data (Meta, Config...) are left alone.
func shapeLike(v any, t reflect.Type) any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := unwrapBlocks(v)
		if !ok {
			return v
		}
		out := make(map[string]any, len(m))
		for k, val := range m {
			f, found := fieldFor(t, k)
			if !found {
				out[k] = val
				continue
			}
			out[f.Name] = shapeLike(val, f.Type)
		}
		return out
	case reflect.Map:
		m, ok := unwrapBlocks(v)
		if !ok {
			return v
		}
		out := make(map[string]any, len(m))
		for k, val := range m {
			out[k] = shapeLike(val, t.Elem())
		}
		return out
	case reflect.Slice:
		list, ok := v.([]any)
		if !ok {
			if maps, isMaps := v.([]map[string]any); isMaps {
				for _, m := range maps {
					list = append(list, m)
				}
			} else {
				return v
			}
		}
		out := make([]any, len(list))
		for i, e := range list {
			out[i] = shapeLike(e, t.Elem())
		}
		return out
	}
	return v
}

// unwrapBlocks returns v as one map: HCL gives a block as a list of maps.
func unwrapBlocks(v any) (map[string]any, bool) {
	switch x := v.(type) {
	case map[string]any:
		return x, true
	case []map[string]any:
		out := map[string]any{}
		for _, m := range x {
			for k, val := range m {
				out[k] = val
			}
		}
		return out, true
	case []any:
		out := map[string]any{}
		for _, e := range x {
			m, ok := e.(map[string]any)
			if !ok {
				return nil, false
			}
			for k, val := range m {
				out[k] = val
			}
		}
		return out, true
	}
	return nil, false
}

func fieldFor(t reflect.Type, key string) (reflect.StructField, bool) {
	norm := strings.ReplaceAll(key, "_", "")
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.IsExported() && strings.EqualFold(f.Name, norm) {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func runConfigRead(args []string, stdout, stderr io.Writer) int {
	var hf httpFlags
	fs := newFlagSet("config read", "config read -kind KIND -name NAME", "Reads a config entry and prints it as JSON.", stderr, &hf)
	kind := fs.String("kind", "", "The kind of the config entry.")
	name := fs.String("name", "", "The name of the config entry.")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *kind == "" || *name == "" {
		fmt.Fprintln(stderr, "Must specify the -kind and -name parameters")
		return 1
	}
	client, err := hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
		return 1
	}
	entry, _, err := client.ConfigEntries().Get(*kind, *name, hf.queryOptions())
	if err != nil {
		fmt.Fprintf(stderr, "Error reading config entry %s/%s: %v\n", *kind, *name, err)
		return 1
	}
	b, err := json.MarshalIndent(entry, "", "    ")
	if err != nil {
		fmt.Fprintf(stderr, "Error encoding config entry: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, string(b))
	return 0
}

func runConfigList(args []string, stdout, stderr io.Writer) int {
	var hf httpFlags
	fs := newFlagSet("config list", "config list -kind KIND", "Lists the names of the config entries of a kind.", stderr, &hf)
	kind := fs.String("kind", "", "The kind of config entry to list.")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *kind == "" {
		fmt.Fprintln(stderr, "Must specify the -kind parameter")
		return 1
	}
	client, err := hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
		return 1
	}
	entries, _, err := client.ConfigEntries().List(*kind, hf.queryOptions())
	if err != nil {
		fmt.Fprintf(stderr, "Error listing config entries for kind %q: %v\n", *kind, err)
		return 1
	}
	for _, e := range entries {
		fmt.Fprintln(stdout, e.GetName())
	}
	return 0
}

func runConfigDelete(args []string, stdout, stderr io.Writer) int {
	var hf httpFlags
	fs := newFlagSet("config delete", "config delete -kind KIND -name NAME", "Deletes a config entry.", stderr, &hf)
	kind := fs.String("kind", "", "The kind of the config entry.")
	name := fs.String("name", "", "The name of the config entry.")
	cas := fs.Bool("cas", false, "Delete only if the entry's current index is -modify-index.")
	modifyIndex := fs.Uint64("modify-index", 0, "The index -cas compares with.")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *kind == "" || *name == "" {
		fmt.Fprintln(stderr, "Must specify the -kind and -name parameters")
		return 1
	}
	if *cas && *modifyIndex == 0 {
		fmt.Fprintln(stderr, "Must specify a -modify-index greater than 0 with -cas")
		return 1
	}
	client, err := hf.client()
	if err != nil {
		fmt.Fprintf(stderr, "Error connecting to agent: %v\n", err)
		return 1
	}
	if *cas {
		ok, _, err := client.ConfigEntries().DeleteCAS(*kind, *name, *modifyIndex, nil)
		if err == nil && !ok {
			fmt.Fprintf(stderr, "Config entry not deleted: %s/%s\n", *kind, *name)
			return 1
		}
		if err != nil {
			fmt.Fprintf(stderr, "Error deleting config entry %s/%s: %v\n", *kind, *name, err)
			return 1
		}
	} else if _, err := client.ConfigEntries().Delete(*kind, *name, nil); err != nil {
		fmt.Fprintf(stderr, "Error deleting config entry %s/%s: %v\n", *kind, *name, err)
		return 1
	}
	fmt.Fprintf(stdout, "Config entry deleted: %s/%s\n", *kind, *name)
	return 0
}
