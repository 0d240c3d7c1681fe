package config

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/hashicorp/hcl/hcl/ast"
	hclparser "github.com/hashicorp/hcl/hcl/parser"
)

// duplicateKey is a key set twice in one object of a configuration file:
// the decoders keep the last value silently, so Load warns about it.
type duplicateKey struct {
	// path is the key in file spelling ("ports.http", "services[0].port").
	path string
	// line is the 1-based line of the repetition.
	line int
}

// duplicateKeys lists the keys that one object of data sets more than once,
// in the order they appear. data must already have parsed without error in
// format ("json" or "hcl"). In HCL, a repeated block (ports { } twice, or
// service { } twice) is not a duplicate: blocks merge or append by design;
// an attribute assigned twice in the same block is.
func duplicateKeys(format string, data []byte) []duplicateKey {
	switch format {
	case "json":
		return jsonDuplicateKeys(data)
	case "hcl":
		return hclDuplicateKeys(data)
	}
	return nil
}

func jsonDuplicateKeys(data []byte) []duplicateKey {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var out []duplicateKey
	// walk reads one value; it reports false when the decoder failed, which
	// only happens on input that parseJSON has refused already.
	var walk func(path string) bool
	walk = func(path string) bool {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		switch tok {
		case json.Delim('{'):
			seen := make(map[string]bool)
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return false
				}
				key, _ := kt.(string)
				p := joinPath(path, key)
				if seen[key] {
					line, _ := lineCol(data, dec.InputOffset())
					out = append(out, duplicateKey{path: p, line: line})
				}
				seen[key] = true
				if !walk(p) {
					return false
				}
			}
			_, err := dec.Token() // '}'
			return err == nil
		case json.Delim('['):
			for i := 0; dec.More(); i++ {
				if !walk(indexPath(path, i)) {
					return false
				}
			}
			_, err := dec.Token() // ']'
			return err == nil
		}
		return true
	}
	walk("")
	return out
}

func hclDuplicateKeys(data []byte) (out []duplicateKey) {
	defer func() {
		// parseHCL has recovered from the same panic already and refused
		// the file; nothing to report.
		if recover() != nil {
			out = nil
		}
	}()
	f, err := hclparser.Parse(data)
	if err != nil {
		return nil
	}
	list, ok := f.Node.(*ast.ObjectList)
	if !ok {
		return nil
	}
	hclWalkList(list, "", &out)
	return out
}

// hclWalkList reports the attributes assigned twice in list and walks the
// blocks and lists below it.
func hclWalkList(list *ast.ObjectList, path string, out *[]duplicateKey) {
	seen := make(map[string]bool)
	for _, item := range list.Items {
		p := path
		for _, k := range item.Keys {
			p = joinPath(p, hclKey(k))
		}
		if _, block := item.Val.(*ast.ObjectType); !block && len(item.Keys) == 1 {
			key := hclKey(item.Keys[0])
			if seen[key] {
				*out = append(*out, duplicateKey{path: p, line: item.Keys[0].Pos().Line})
			}
			seen[key] = true
		}
		hclWalkValue(item.Val, p, out)
	}
}

func hclWalkValue(v ast.Node, path string, out *[]duplicateKey) {
	switch t := v.(type) {
	case *ast.ObjectType:
		hclWalkList(t.List, path, out)
	case *ast.ListType:
		for i, e := range t.List {
			hclWalkValue(e, indexPath(path, i), out)
		}
	}
}

// hclKey returns a key as the decoder sees it: quotes removed.
func hclKey(k *ast.ObjectKey) string {
	if s, ok := k.Token.Value().(string); ok {
		return s
	}
	return k.Token.Text
}

// duplicateWarnings returns Load's warnings about the keys set twice in
// the source called name.
func duplicateWarnings(name, format string, data []byte) []string {
	var out []string
	for _, d := range duplicateKeys(format, data) {
		out = append(out, fmt.Sprintf("config: duplicate key %q in %s (line %d): only the last value is used", d.path, name, d.line))
	}
	return out
}
