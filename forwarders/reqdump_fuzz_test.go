package forwarders

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// maskTree is the decode-mask-encode form maskJSON replaced: the string
// value of a member whose name says credential is masked, at any depth.
func maskTree(v any) {
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			if _, isStr := c.(string); isStr && secretName(k) {
				x[k] = masked
				continue
			}
			maskTree(c)
		}
	case []any:
		for _, c := range x {
			maskTree(c)
		}
	}
}

func decodeNumbers(t *testing.T, doc []byte) any {
	t.Helper()
	var v any
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %q: %v", doc, err)
	}
	return v
}

// FuzzMaskJSON checks the one-pass masker against the decoded tree: for
// any valid JSON document its output is valid JSON that decodes to the
// masked tree, and with no name counted as a credential the document
// comes out byte for byte.
func FuzzMaskJSON(f *testing.F) {
	for _, s := range []string{`{"api_key":"k","a":[{"token":"t","n":1}],"key":{"x":"y"}}`, `"s"`, `[1,"a",{"Secret" : "x"}]`,
		`{"to\u006ben":"x","k\"ey":"y","keys":["a","b"],"auth":null}`, "{\n \"password\"\t:\t\"p\" }", `{"a":"b\\"c","token":"d\\e"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		if !json.Valid(doc) {
			return
		}
		got := maskJSON(doc)
		if !json.Valid(got) {
			t.Fatalf("maskJSON(%q) = %q: not JSON", doc, got)
		}
		want := decodeNumbers(t, doc)
		maskTree(want)
		if g := decodeNumbers(t, got); !reflect.DeepEqual(g, want) {
			t.Fatalf("maskJSON(%q) = %q, want the tree %#v", doc, got, want)
		}
		if same := maskMembers(doc, func(string) bool { return false }); !bytes.Equal(same, doc) {
			t.Fatalf("maskMembers(%q) with no credential names = %q", doc, same)
		}
	})
}
