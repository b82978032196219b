package webhooks

import (
	"encoding"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/postback/postback/mapping"
)

// The App Store payloads (notification, transaction, renewal info) are
// decoded once per notification, and encoding/json spends as long on them
// as on their base64 and hashing together. jsonPlan decodes the form Apple
// sends (objects with exactly spelled keys, plain strings, integers,
// booleans, string arrays) in one pass and declines everything else:
// escapes other than \u0000, null, fractions and exponents, a key spelled in
// another case, anything encoding/json would refuse. A declined payload is
// decoded by encoding/json from scratch, so the result is always what
// encoding/json returns (FuzzAppleJSON checks this).

// jsonKind is how a field is decoded.
type jsonKind uint8

const (
	jkUnsupported jsonKind = iota
	jkString
	jkBool
	jkInt     // signed integers, and mapping.AppleMillis in integer form
	jkPtr     // a pointer to a string, bool or int (elem)
	jkStrings // []string
	jkStruct  // a pointer to a struct (plan)
)

type jsonField struct {
	index int
	kind  jsonKind
	elem  jsonKind
	plan  *jsonPlan
}

// jsonPlan is the decoding plan of one struct type; nil when the type has
// something the plan cannot reproduce exactly (embedded fields, two fields
// under one name), and then every payload goes to encoding/json.
type jsonPlan struct {
	fields map[string]jsonField
	// byLen holds the fields again by the length of their names, for
	// lookup: a few string compares cost less than hashing the key.
	byLen [][]namedJSONField
	// folded holds every field name in lower case: a key that matches none
	// exactly but one of these in another case is left to encoding/json,
	// which matches keys case-insensitively.
	folded map[string]bool
	maxLen int
}

type namedJSONField struct {
	name string
	jsonField
}

var (
	appleNotificationPlan = newJSONPlan(reflect.TypeFor[mapping.AppleNotification]())
	appleTransactionPlan  = newJSONPlan(reflect.TypeFor[mapping.AppleTransaction]())
	appleRenewalPlan      = newJSONPlan(reflect.TypeFor[mapping.AppleRenewalInfo]())
)

var (
	jsonUnmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	appleMillisType     = reflect.TypeFor[mapping.AppleMillis]()
)

// newJSONPlan builds the plan of struct type t.
func newJSONPlan(t reflect.Type) *jsonPlan {
	p := &jsonPlan{fields: map[string]jsonField{}, folded: map[string]bool{}}
	for i := range t.NumField() {
		sf := t.Field(i)
		if sf.Anonymous {
			return nil
		}
		if !sf.IsExported() {
			continue
		}
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = sf.Name
		}
		f := jsonField{index: i, kind: jkUnsupported}
		if opts == "" || opts == "omitempty" {
			f = planField(i, sf.Type)
		}
		lower := strings.ToLower(name)
		if _, dup := p.fields[name]; dup || p.folded[lower] {
			return nil
		}
		p.fields[name] = f
		p.folded[lower] = true
		p.maxLen = max(p.maxLen, len(name))
	}
	p.byLen = make([][]namedJSONField, p.maxLen+1)
	for name, f := range p.fields {
		p.byLen[len(name)] = append(p.byLen[len(name)], namedJSONField{name, f})
	}
	return p
}

// lookup finds the field named exactly key.
func (p *jsonPlan) lookup(key string) (jsonField, bool) {
	if len(key) < len(p.byLen) {
		for _, f := range p.byLen[len(key)] {
			if f.name == key {
				return f.jsonField, true
			}
		}
	}
	return jsonField{}, false
}

func planField(i int, t reflect.Type) jsonField {
	f := jsonField{index: i}
	switch {
	case t == appleMillisType:
		f.kind = jkInt
	case customDecoding(t):
	case t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct:
		if f.plan = newJSONPlan(t.Elem()); f.plan != nil {
			f.kind = jkStruct
		}
	case t.Kind() == reflect.Pointer:
		if e := scalarKind(t.Elem()); e != jkUnsupported && !customDecoding(t.Elem()) {
			f.kind, f.elem = jkPtr, e
		}
	case t == reflect.TypeFor[[]string]():
		f.kind = jkStrings
	default:
		f.kind = scalarKind(t)
	}
	return f
}

// customDecoding reports whether encoding/json would call a method of t.
func customDecoding(t reflect.Type) bool {
	pt := reflect.PointerTo(t)
	return t.Implements(jsonUnmarshalerType) || pt.Implements(jsonUnmarshalerType) ||
		t.Implements(textUnmarshalerType) || pt.Implements(textUnmarshalerType)
}

func scalarKind(t reflect.Type) jsonKind {
	switch t.Kind() {
	case reflect.String:
		return jkString
	case reflect.Bool:
		return jkBool
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return jkInt
	}
	return jkUnsupported
}

// decodeJSON decodes b into dst with plan, or with encoding/json when the
// plan declines it. The plan reads a copy of b made once, as a string: the
// decoded strings are slices of it, not one allocation each.
func decodeJSON[T any](plan *jsonPlan, b []byte, dst *T) error {
	if plan.decodeString(string(b), reflect.ValueOf(dst).Elem()) {
		return nil
	}
	var zero T
	*dst = zero
	return json.Unmarshal(b, dst)
}

// decodeJSONString is decodeJSON of a document already held as a string.
func decodeJSONString[T any](plan *jsonPlan, s string, dst *T) error {
	if plan.decodeString(s, reflect.ValueOf(dst).Elem()) {
		return nil
	}
	var zero T
	*dst = zero
	return json.Unmarshal([]byte(s), dst)
}

// decode decodes b into the struct v, or reports false, leaving v in any
// state, when b is not in the form the plan reproduces exactly.
func (p *jsonPlan) decode(b []byte, v reflect.Value) bool {
	return p.decodeString(string(b), v)
}

// decodeString is decode of a string; the strings decoded into v may be
// slices of s.
func (p *jsonPlan) decodeString(s string, v reflect.Value) bool {
	if p == nil {
		return false
	}
	r := jsonReader{b: s}
	r.space()
	if !r.object(p, v, 0) {
		return false
	}
	r.space()
	return r.i == len(r.b)
}

// maxJSONDepth bounds the nesting the plan follows; deeper goes to
// encoding/json.
const maxJSONDepth = 32

type jsonReader struct {
	b string
	i int
}

func (r *jsonReader) space() {
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

func (r *jsonReader) eat(c byte) bool {
	if r.i < len(r.b) && r.b[r.i] == c {
		r.i++
		return true
	}
	return false
}

// object decodes an object into the struct v.
func (r *jsonReader) object(p *jsonPlan, v reflect.Value, depth int) bool {
	if depth > maxJSONDepth || !r.eat('{') {
		return false
	}
	r.space()
	if r.eat('}') {
		return true
	}
	for {
		key, ok := r.key()
		if !ok {
			return false
		}
		r.space()
		if !r.eat(':') {
			return false
		}
		r.space()
		if f, known := p.lookup(key); known {
			if !r.field(f, v.Field(f.index), depth+1) {
				return false
			}
		} else if p.foldsTo(key) || !r.skip(depth+1) {
			return false
		}
		r.space()
		if r.eat(',') {
			r.space()
			continue
		}
		return r.eat('}')
	}
}

// foldsTo reports whether key is a field name in another case.
func (p *jsonPlan) foldsTo(key string) bool {
	if len(key) > p.maxLen {
		return false
	}
	var buf [64]byte
	lower := buf[:0]
	if len(key) > len(buf) {
		lower = make([]byte, 0, len(key))
	}
	for _, c := range []byte(key) {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower = append(lower, c)
	}
	return p.folded[string(lower)]
}

// key reads an object key: printable ASCII without escapes (encoding/json
// folds some non-ASCII letters onto ASCII ones when matching names).
func (r *jsonReader) key() (string, bool) {
	if !r.eat('"') {
		return "", false
	}
	start := r.i
	for r.i < len(r.b) && jsonText[r.b[r.i]] == jsonPlain {
		r.i++
	}
	if r.i < len(r.b) && r.b[r.i] == '"' {
		r.i++
		return r.b[start : r.i-1], true
	}
	return "", false
}

// Byte classes inside a JSON string: jsonStop ends a plain run (a quote, a
// backslash, a control character), jsonHigh is a byte from 0x80 (part of
// UTF-8, to be validated).
const (
	jsonStop = iota
	jsonPlain
	jsonHigh
)

var jsonText = func() (t [256]uint8) {
	for c := range t {
		switch {
		case c == '"' || c == '\\' || c < 0x20:
			t[c] = jsonStop
		case c >= 0x80:
			t[c] = jsonHigh
		default:
			t[c] = jsonPlain
		}
	}
	return t
}()

// str reads a string value. The only escape taken is \u0000 (the
// placeholder decodeAroundNested writes); invalid UTF-8, which
// encoding/json would rewrite, is declined. A string without escapes is a
// slice of the document.
func (r *jsonReader) str() (string, bool) {
	if !r.eat('"') {
		return "", false
	}
	start := r.i
	var buf [16]byte
	esc, escaped := buf[:0], false
	var class uint8
	for r.i < len(r.b) {
		c := r.b[r.i]
		if k := jsonText[c]; k != jsonStop {
			class |= k
			r.i++
			continue
		}
		switch {
		case c == '"':
			s := r.b[start:r.i]
			r.i++
			if escaped {
				esc = append(esc, s...)
				if len(esc) <= len(jsonNULs) && string(esc) == jsonNULs[:len(esc)] {
					s = jsonNULs[:len(esc)] // a placeholder: no allocation
				} else {
					s = string(esc)
				}
			}
			if class&jsonHigh != 0 && !utf8.ValidString(s) {
				return "", false
			}
			return s, true
		case c == '\\':
			if r.i+6 > len(r.b) || r.b[r.i:r.i+6] != `\u0000` {
				return "", false
			}
			esc = append(append(esc, r.b[start:r.i]...), 0)
			escaped = true
			r.i += 6
			start = r.i
			continue
		case c < 0x20:
			return "", false
		}
		r.i++
	}
	return "", false
}

// jsonNULs holds the values of the placeholders decodeAroundNested writes.
const jsonNULs = "\x00\x00\x00"

// integer reads an integer without fraction or exponent.
func (r *jsonReader) integer() (int64, bool) {
	start := r.i
	neg := r.eat('-')
	digits := r.i
	var n uint64
	for r.i < len(r.b) && '0' <= r.b[r.i] && r.b[r.i] <= '9' {
		n = n*10 + uint64(r.b[r.i]-'0')
		r.i++
	}
	switch {
	case r.i == digits, r.b[digits] == '0' && r.i > digits+1:
		return 0, false
	case r.i < len(r.b) && (r.b[r.i] == '.' || r.b[r.i] == 'e' || r.b[r.i] == 'E'):
		return 0, false
	case r.i-digits > 18: // n may have wrapped: let strconv check the range
		v, err := strconv.ParseInt(r.b[start:r.i], 10, 64)
		return v, err == nil
	case neg:
		return -int64(n), true
	}
	return int64(n), true
}

func (r *jsonReader) literal(word string) bool {
	if r.i+len(word) <= len(r.b) && r.b[r.i:r.i+len(word)] == word {
		r.i += len(word)
		return true
	}
	return false
}

// field decodes a value into v as f says.
func (r *jsonReader) field(f jsonField, v reflect.Value, depth int) bool {
	switch f.kind {
	case jkString:
		s, ok := r.str()
		if ok {
			v.SetString(s)
		}
		return ok
	case jkBool:
		switch {
		case r.literal("true"):
			v.SetBool(true)
		case r.literal("false"):
			v.SetBool(false)
		default:
			return false
		}
		return true
	case jkInt:
		n, ok := r.integer()
		if !ok || v.OverflowInt(n) {
			return false
		}
		v.SetInt(n)
		return true
	case jkPtr:
		if r.i >= len(r.b) || r.b[r.i] == 'n' { // null: left to encoding/json
			return false
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return r.field(jsonField{kind: f.elem}, v.Elem(), depth)
	case jkStrings:
		if !r.eat('[') {
			return false
		}
		list := []string{}
		r.space()
		if !r.eat(']') {
			for {
				s, ok := r.str()
				if !ok {
					return false
				}
				list = append(list, s)
				r.space()
				if r.eat(']') {
					break
				}
				if !r.eat(',') {
					return false
				}
				r.space()
			}
		}
		v.Set(reflect.ValueOf(list))
		return true
	case jkStruct:
		if r.i >= len(r.b) || r.b[r.i] != '{' {
			return false
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return r.object(f.plan, v.Elem(), depth)
	}
	return false
}

// skip passes over a value of a key no field has, checking it is JSON
// that encoding/json accepts.
func (r *jsonReader) skip(depth int) bool {
	if depth > maxJSONDepth || r.i >= len(r.b) {
		return false
	}
	switch c := r.b[r.i]; {
	case c == '"':
		return r.skipString()
	case c == '{', c == '[':
		end := byte('}')
		if c == '[' {
			end = ']'
		}
		r.i++
		r.space()
		if r.eat(end) {
			return true
		}
		for {
			if c == '{' {
				if !r.skipString() {
					return false
				}
				r.space()
				if !r.eat(':') {
					return false
				}
				r.space()
			}
			if !r.skip(depth + 1) {
				return false
			}
			r.space()
			if r.eat(end) {
				return true
			}
			if !r.eat(',') {
				return false
			}
			r.space()
		}
	case c == '-' || '0' <= c && c <= '9':
		return r.skipNumber()
	default:
		return r.literal("true") || r.literal("false") || r.literal("null")
	}
}

// skipString passes over a string, checking its escapes.
func (r *jsonReader) skipString() bool {
	if !r.eat('"') {
		return false
	}
	for r.i < len(r.b) {
		c := r.b[r.i]
		switch {
		case c == '"':
			r.i++
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if r.i+1 >= len(r.b) {
				return false
			}
			switch r.b[r.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				r.i += 2
				continue
			case 'u':
				if r.i+6 > len(r.b) {
					return false
				}
				for _, h := range r.b[r.i+2 : r.i+6] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return false
					}
				}
				r.i += 6
				continue
			}
			return false
		}
		r.i++
	}
	return false
}

// skipNumber passes over a number in JSON's grammar.
func (r *jsonReader) skipNumber() bool {
	digits := func() int {
		start := r.i
		for r.i < len(r.b) && '0' <= r.b[r.i] && r.b[r.i] <= '9' {
			r.i++
		}
		return r.i - start
	}
	r.eat('-')
	start := r.i
	n := digits()
	if n == 0 || n > 1 && r.b[start] == '0' {
		return false
	}
	if r.eat('.') && digits() == 0 {
		return false
	}
	if r.eat('e') || r.eat('E') {
		if !r.eat('+') {
			r.eat('-')
		}
		if digits() == 0 {
			return false
		}
	}
	return true
}
