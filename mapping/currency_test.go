package mapping

import (
	"errors"
	"math"
	"testing"
)

func TestExponent(t *testing.T) {
	tests := []struct {
		code    string
		want    int
		wantErr error
	}{
		{"USD", 2, nil},
		{"usd", 2, nil},
		{"EUR", 2, nil},
		{"JPY", 0, nil},
		{"KRW", 0, nil},
		{"KWD", 3, nil},
		{"BHD", 3, nil},
		{"CLF", 4, nil},
		{"XXX", 0, ErrCurrency},
		{"", 0, ErrCurrency},
		{"US", 0, ErrCurrency},
		{"USDX", 0, ErrCurrency},
		{"U$D", 0, ErrCurrency},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			got, err := Exponent(tt.code)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Exponent(%q) error = %v, want %v", tt.code, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("Exponent(%q) = %d, want %d", tt.code, got, tt.want)
			}
		})
	}
}

// TestExponentsAreKnown guards the two tables against drifting apart: a code
// with a non-2 exponent that is missing from the known list would silently
// be rejected as unknown.
func TestExponentsAreKnown(t *testing.T) {
	for code, want := range exponents {
		got, err := Exponent(code)
		if err != nil || got != want {
			t.Errorf("Exponent(%q) = %d, %v; want %d (add it to the known list)", code, got, err, want)
		}
	}
}

func TestNormalizeCurrency(t *testing.T) {
	if got, err := NormalizeCurrency("eur"); err != nil || got != "EUR" {
		t.Errorf(`NormalizeCurrency("eur") = %q, %v; want "EUR"`, got, err)
	}
	if _, err := NormalizeCurrency("euro"); !errors.Is(err, ErrCurrency) {
		t.Errorf(`NormalizeCurrency("euro") error = %v, want ErrCurrency`, err)
	}
}

// revenueCase is one conversion expectation shared by the Micros* tables.
type revenueCase struct {
	name    string
	want    Revenue
	wantErr error
}

func checkRevenue(t *testing.T, tc revenueCase, got Revenue, err error) {
	t.Helper()
	if !errors.Is(err, tc.wantErr) {
		t.Fatalf("error = %v, want %v", err, tc.wantErr)
	}
	if tc.wantErr != nil {
		if got != (Revenue{}) {
			t.Errorf("got %+v with an error, want the zero Revenue", got)
		}
		return
	}
	if got != tc.want {
		t.Errorf("got %+v, want %+v", got, tc.want)
	}
}

func TestMicrosFromMinor(t *testing.T) {
	tests := []struct {
		revenueCase
		amount   int64
		currency string
	}{
		{revenueCase{"USD cents", Revenue{9_990_000, "USD"}, nil}, 999, "USD"},
		{revenueCase{"lower-case code is normalized", Revenue{9_990_000, "USD"}, nil}, 999, "usd"},
		{revenueCase{"JPY has no minor unit", Revenue{1_200_000_000, "JPY"}, nil}, 1200, "JPY"},
		{revenueCase{"KRW has no minor unit", Revenue{5_900_000_000, "KRW"}, nil}, 5900, "krw"},
		{revenueCase{"KWD fils are thousandths", Revenue{1_250_000, "KWD"}, nil}, 1250, "KWD"},
		{revenueCase{"BHD fils are thousandths", Revenue{999_000, "BHD"}, nil}, 999, "BHD"},
		{revenueCase{"CLF has four decimals", Revenue{1_234_500, "CLF"}, nil}, 12345, "CLF"},
		{revenueCase{"zero", Revenue{0, "USD"}, nil}, 0, "USD"},
		{revenueCase{"refund is negative", Revenue{-4_990_000, "EUR"}, nil}, -499, "EUR"},
		{revenueCase{"unknown currency", Revenue{}, ErrCurrency}, 100, "XYZ"},
		{revenueCase{"empty currency", Revenue{}, ErrCurrency}, 100, ""},
		{revenueCase{"largest USD that fits", Revenue{math.MaxInt64 / 10_000 * 10_000, "USD"}, nil}, math.MaxInt64 / 10_000, "USD"},
		{revenueCase{"USD overflow", Revenue{}, ErrAmount}, math.MaxInt64/10_000 + 1, "USD"},
		{revenueCase{"JPY overflow", Revenue{}, ErrAmount}, math.MaxInt64/1_000_000 + 1, "JPY"},
		{revenueCase{"negative overflow", Revenue{}, ErrAmount}, math.MinInt64/10_000 - 1, "USD"},
		{revenueCase{"max int64", Revenue{}, ErrAmount}, math.MaxInt64, "KWD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := MicrosFromMinor(tt.amount, tt.currency)
			checkRevenue(t, tt.revenueCase, got, err)
		})
	}
}

func TestMicrosFromMilli(t *testing.T) {
	tests := []struct {
		revenueCase
		milli    int64
		currency string
	}{
		{revenueCase{"Apple AUD price", Revenue{1_990_000, "AUD"}, nil}, 1990, "AUD"},
		{revenueCase{"milliunits ignore the currency exponent (JPY)", Revenue{1_200_000_000, "JPY"}, nil}, 1_200_000, "JPY"},
		{revenueCase{"KWD", Revenue{1_250_000, "KWD"}, nil}, 1250, "kwd"},
		{revenueCase{"negative", Revenue{-990_000, "USD"}, nil}, -990, "USD"},
		{revenueCase{"unknown currency", Revenue{}, ErrCurrency}, 1990, "ZZZ"},
		{revenueCase{"overflow", Revenue{}, ErrAmount}, math.MaxInt64/1000 + 1, "USD"},
		{revenueCase{"negative overflow", Revenue{}, ErrAmount}, math.MinInt64/1000 - 1, "USD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := MicrosFromMilli(tt.milli, tt.currency)
			checkRevenue(t, tt.revenueCase, got, err)
		})
	}
}

func TestMicrosFromUnitsNanos(t *testing.T) {
	tests := []struct {
		revenueCase
		units    int64
		nanos    int32
		currency string
	}{
		{revenueCase{"units and nanos", Revenue{9_990_000, "USD"}, nil}, 9, 990_000_000, "USD"},
		{revenueCase{"whole units", Revenue{1_200_000_000, "JPY"}, nil}, 1200, 0, "jpy"},
		{revenueCase{"nanos only", Revenue{990_000, "EUR"}, nil}, 0, 990_000_000, "EUR"},
		{revenueCase{"exactly one micro", Revenue{1, "USD"}, nil}, 0, 1000, "USD"},
		{revenueCase{"negative units and nanos", Revenue{-1_500_000, "USD"}, nil}, -1, -500_000_000, "USD"},
		{revenueCase{"sub-micro nanos rejected", Revenue{}, ErrAmount}, 0, 500, "USD"},
		{revenueCase{"sub-micro remainder rejected", Revenue{}, ErrAmount}, 9, 990_000_001, "USD"},
		{revenueCase{"unknown currency", Revenue{}, ErrCurrency}, 1, 0, "QQQ"},
		{revenueCase{"units overflow", Revenue{}, ErrAmount}, math.MaxInt64/1_000_000 + 1, 0, "USD"},
		{revenueCase{"negative units overflow", Revenue{}, ErrAmount}, math.MinInt64/1_000_000 - 1, 0, "USD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := MicrosFromUnitsNanos(tt.units, tt.nanos, tt.currency)
			checkRevenue(t, tt.revenueCase, got, err)
		})
	}
}

func TestParseMicros(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"403.00", 403_000_000, false},
		{"9.99", 9_990_000, false},
		{"-1.5", -1_500_000, false},
		{"+2", 2_000_000, false},
		{"0", 0, false},
		{"-0", 0, false},
		{".5", 500_000, false},
		{"5.", 5_000_000, false},
		{"0.000001", 1, false},
		{"1.234567", 1_234_567, false},
		{" 12.5 ", 12_500_000, false},
		{"999999999999.999999", 999_999_999_999_999_999, false},
		{"-999999999999.999999", -999_999_999_999_999_999, false},
		{"1.0000001", 0, true},     // over-precise: more than six decimals
		{"0.0000005", 0, true},     // would round to zero
		{"1000000000000", 0, true}, // 13 whole digits could overflow
		{"", 0, true},
		{" ", 0, true},
		{"-", 0, true},
		{"+", 0, true},
		{".", 0, true},
		{"--1", 0, true},
		{"+-1", 0, true},
		{"abc", 0, true},
		{"1e3", 0, true},
		{"1,50", 0, true},
		{"1.2.3", 0, true},
		{"0x10", 0, true},
		{"١٢", 0, true}, // non-ASCII digits
		{"NaN", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseMicros(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrAmount) {
					t.Fatalf("ParseMicros(%q) = %d, %v; want ErrAmount", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParseMicros(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestMicrosFromDecimal(t *testing.T) {
	tests := []struct {
		revenueCase
		in       string
		currency string
	}{
		{revenueCase{"Shopify price", Revenue{403_000_000, "USD"}, nil}, "403.00", "usd"},
		{revenueCase{"JPY", Revenue{1_200_000_000, "JPY"}, nil}, "1200", "JPY"},
		{revenueCase{"KWD three decimals", Revenue{1_250_000, "KWD"}, nil}, "1.250", "KWD"},
		{revenueCase{"negative", Revenue{-19_990_000, "EUR"}, nil}, "-19.99", "EUR"},
		{revenueCase{"over-precise", Revenue{}, ErrAmount}, "1.0000001", "USD"},
		{revenueCase{"junk", Revenue{}, ErrAmount}, "twelve", "USD"},
		{revenueCase{"unknown currency", Revenue{}, ErrCurrency}, "1.00", "DOGE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := MicrosFromDecimal(tt.in, tt.currency)
			checkRevenue(t, tt.revenueCase, got, err)
		})
	}
}

func TestRevenueDecimal(t *testing.T) {
	tests := []struct {
		name string
		r    Revenue
		want string
	}{
		{"USD", Revenue{9_990_000, "USD"}, "9.99"},
		{"USD whole keeps two decimals", Revenue{9_000_000, "USD"}, "9.00"},
		{"USD zero", Revenue{0, "USD"}, "0.00"},
		{"USD cent", Revenue{10_000, "USD"}, "0.01"},
		{"USD refund", Revenue{-9_990_000, "USD"}, "-9.99"},
		{"USD finer than a cent is kept", Revenue{9_995_000, "USD"}, "9.995"},
		{"USD one micro", Revenue{1, "USD"}, "0.000001"},
		{"lower-case code", Revenue{9_990_000, "usd"}, "9.99"},
		{"JPY", Revenue{1_200_000_000, "JPY"}, "1200"},
		{"JPY zero", Revenue{0, "JPY"}, "0"},
		{"JPY refund", Revenue{-1_200_000_000, "JPY"}, "-1200"},
		{"JPY fraction is kept", Revenue{1_500_000, "JPY"}, "1.5"},
		{"KWD", Revenue{1_250_000, "KWD"}, "1.250"},
		{"KWD whole", Revenue{2_000_000, "KWD"}, "2.000"},
		{"CLF", Revenue{1_234_500, "CLF"}, "1.2345"},
		{"unknown currency shows all six decimals", Revenue{1_500_000, "XXX"}, "1.500000"},
		{"largest", Revenue{math.MaxInt64, "USD"}, "9223372036854.775807"},
		{"smallest", Revenue{math.MinInt64, "USD"}, "-9223372036854.775808"},
		{"smallest JPY", Revenue{math.MinInt64, "JPY"}, "-9223372036854.775808"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.Decimal(); got != tt.want {
				t.Errorf("%+v.Decimal() = %q, want %q", tt.r, got, tt.want)
			}
		})
	}
}

// TestDecimalRoundTrip checks that Decimal's output parses back to the same
// micros for every class of currency.
func TestDecimalRoundTrip(t *testing.T) {
	for _, r := range []Revenue{
		{9_990_000, "USD"}, {-9_990_000, "USD"}, {1_200_000_000, "JPY"}, {1_250_000, "KWD"},
		{1_234_500, "CLF"}, {999_999_999_999_990_000, "EUR"},
	} {
		got, err := MicrosFromDecimal(r.Decimal(), r.Currency)
		if err != nil || got != r {
			t.Errorf("MicrosFromDecimal(%q) = %+v, %v; want %+v", r.Decimal(), got, err, r)
		}
	}
	// Amounts finer than the currency (Google's converted prices) print
	// exactly and parse back as micros, but are not a valid decimal amount.
	for _, r := range []Revenue{{1, "USD"}, {999_999_999_999_999_999, "EUR"}} {
		if m, err := ParseMicros(r.Decimal()); err != nil || m != r.AmountMicros {
			t.Errorf("ParseMicros(%q) = %d, %v; want %d", r.Decimal(), m, err, r.AmountMicros)
		}
		if _, err := MicrosFromDecimal(r.Decimal(), r.Currency); !errors.Is(err, ErrPrecision) {
			t.Errorf("MicrosFromDecimal(%q) error = %v, want ErrPrecision", r.Decimal(), err)
		}
	}
}

// Issue 15, item 10: one precision rule for every decimal amount.
func TestMicrosFromDecimalPrecision(t *testing.T) {
	for _, tt := range []struct {
		amount, currency string
		ok               bool
	}{
		{"5.001", "USD", false}, {"5.5", "JPY", false}, {"5.0001", "KWD", false}, {"-0.001", "EUR", false},
		{"5.00", "JPY", true}, {"403.00", "JPY", true}, {"5.010", "USD", true}, {"5.001", "KWD", true},
		{"5.0001", "CLF", true}, {"5", "USD", true}, {"9.99", "usd", true},
	} {
		_, err := MicrosFromDecimal(tt.amount, tt.currency)
		if (err == nil) != tt.ok || !tt.ok && !errors.Is(err, ErrPrecision) {
			t.Errorf("MicrosFromDecimal(%q, %s) error = %v, want ok=%v", tt.amount, tt.currency, err, tt.ok)
		}
	}
}

func TestRevenueMajorAndNegate(t *testing.T) {
	r := Revenue{AmountMicros: 9_990_000, Currency: "USD"}
	if got := r.Major(); got != 9.99 {
		t.Errorf("Major() = %v, want 9.99", got)
	}
	if got := r.Negate(); got != (Revenue{-9_990_000, "USD"}) {
		t.Errorf("Negate() = %+v, want -9990000 USD", got)
	}
	if got := r.Negate().Negate(); got != r {
		t.Errorf("Negate().Negate() = %+v, want %+v", got, r)
	}
}
