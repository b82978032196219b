package mapping

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// ErrCurrency reports an unknown or malformed ISO 4217 currency code.
var ErrCurrency = errors.New("mapping: unknown currency")

// ErrAmount reports an amount that cannot be represented exactly in micros.
var ErrAmount = errors.New("mapping: amount not representable")

// ErrPrecision reports an amount with more decimals than its currency has
// (5.001 USD, 5.5 JPY). It is the one precision rule of every amount written
// as a decimal (Shopify money, custom events, MicrosFromDecimal): trailing
// zeros do not count ("403.00" JPY is 403), a non-zero digit past the
// currency's minor unit is refused, never rounded. Stripe's minor units
// cannot break it; Apple's milliunits and Google's micros are the store's
// own fixed-point computations (Play reports converted prices below a cent)
// and are kept exact as sent.
var ErrPrecision = fmt.Errorf("%w: more decimals than the currency has", ErrAmount)

// checkPrecision applies ErrPrecision's rule to r.
func checkPrecision(r Revenue) (Revenue, error) {
	e, err := Exponent(r.Currency)
	if err != nil {
		return Revenue{}, err
	}
	if r.AmountMicros%pow10[6-e] != 0 {
		return Revenue{}, fmt.Errorf("%w: %s has %d", ErrPrecision, r.Currency, e)
	}
	return r, nil
}

// exponents lists currencies whose minor unit is not 1/100 (ISO 4217 table A.1).
// Every other known code has two decimals.
var exponents = map[string]int{
	// zero-decimal
	"BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
	"PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
	// three-decimal
	"BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
	// four-decimal
	"CLF": 4, "UYW": 4,
}

// known is the set of active ISO 4217 codes (two-decimal unless in exponents).
var known = func() map[string]bool {
	m := map[string]bool{}
	for _, c := range strings.Fields(`AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB
	BOV BRL BSD BTN BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD
	EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD
	JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR
	MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF
	SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS
	UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG ZWL`) {
		m[c] = true
	}
	return m
}()

// Exponent returns the number of decimals of the currency's minor unit
// (0 for JPY, 2 for USD, 3 for KWD). The code is matched case-insensitively.
func Exponent(currency string) (int, error) {
	c := strings.ToUpper(currency)
	if !known[c] {
		return 0, fmt.Errorf("%w: %q", ErrCurrency, currency)
	}
	if e, ok := exponents[c]; ok {
		return e, nil
	}
	return 2, nil
}

// NormalizeCurrency upper-cases and validates an ISO 4217 code.
func NormalizeCurrency(currency string) (string, error) {
	if _, err := Exponent(currency); err != nil {
		return "", err
	}
	return strings.ToUpper(currency), nil
}

var pow10 = [...]int64{1, 10, 100, 1000, 10000, 100000, 1000000}

// MicrosFromMinor converts an amount in the currency's smallest unit (Stripe's
// convention: cents for USD, yen for JPY, fils for KWD) to micros.
func MicrosFromMinor(amount int64, currency string) (Revenue, error) {
	e, err := Exponent(currency)
	if err != nil {
		return Revenue{}, err
	}
	return scaled(amount, pow10[6-e], currency)
}

// MicrosFromMilli converts Apple's milliunits (1/1000 of the major unit,
// whatever the currency) to micros.
func MicrosFromMilli(milli int64, currency string) (Revenue, error) {
	if _, err := Exponent(currency); err != nil {
		return Revenue{}, err
	}
	return scaled(milli, 1000, currency)
}

// MicrosFromUnitsNanos converts Google's Money (whole units and nanos) to
// micros. Nanos finer than a micro are rejected rather than rounded.
func MicrosFromUnitsNanos(units int64, nanos int32, currency string) (Revenue, error) {
	if _, err := Exponent(currency); err != nil {
		return Revenue{}, err
	}
	if nanos%1000 != 0 {
		return Revenue{}, fmt.Errorf("%w: %d nanos is finer than a micro", ErrAmount, nanos)
	}
	if units > math.MaxInt64/1_000_000 || units < math.MinInt64/1_000_000 {
		return Revenue{}, fmt.Errorf("%w: %d units overflows", ErrAmount, units)
	}
	return Revenue{AmountMicros: units*1_000_000 + int64(nanos/1000), Currency: strings.ToUpper(currency)}, nil
}

// MicrosFromDecimal parses a decimal string such as "403.00" or "-1.5" (Shopify's
// money format) exactly, without going through float64. More decimals than
// the currency has are ErrPrecision.
func MicrosFromDecimal(s, currency string) (Revenue, error) {
	if _, err := Exponent(currency); err != nil {
		return Revenue{}, err
	}
	m, err := ParseMicros(s)
	if err != nil {
		return Revenue{}, err
	}
	return checkPrecision(Revenue{AmountMicros: m, Currency: strings.ToUpper(currency)})
}

// ParseMicros parses a plain decimal number (no exponent) into micros. More
// than six decimals, an empty string or overflow are errors.
func ParseMicros(s string) (int64, error) {
	s = strings.TrimSpace(s)
	neg := false
	if strings.HasPrefix(s, "-") {
		neg, s = true, s[1:]
	} else if strings.HasPrefix(s, "+") {
		s = s[1:]
	}
	whole, frac, _ := strings.Cut(s, ".")
	if whole == "" && frac == "" || len(frac) > 6 || len(whole) > 12 {
		return 0, fmt.Errorf("%w: %q", ErrAmount, s)
	}
	var v int64
	for _, r := range whole + frac + strings.Repeat("0", 6-len(frac)) {
		if r < '0' || r > '9' {
			return 0, fmt.Errorf("%w: %q", ErrAmount, s)
		}
		v = v*10 + int64(r-'0')
	}
	if neg {
		v = -v
	}
	return v, nil
}

func scaled(amount, factor int64, currency string) (Revenue, error) {
	if amount > math.MaxInt64/factor || amount < math.MinInt64/factor {
		return Revenue{}, fmt.Errorf("%w: %d overflows", ErrAmount, amount)
	}
	return Revenue{AmountMicros: amount * factor, Currency: strings.ToUpper(currency)}, nil
}

// Major returns the amount in major units as a float64, for destinations whose
// API takes a JSON number (AppsFlyer, Meta, GA4, ...). Only use it at the edge:
// stored values stay in micros.
func (r Revenue) Major() float64 { return float64(r.AmountMicros) / 1e6 }

// Decimal formats the amount in major units with the currency's own number of
// decimals ("9.99", "1200", "1.250"), exactly.
func (r Revenue) Decimal() string {
	e, err := Exponent(r.Currency)
	if err != nil {
		e = 6
	}
	// The magnitude is unsigned so that math.MinInt64 (whose negation
	// overflows int64) still formats exactly.
	m := uint64(r.AmountMicros)
	sign := ""
	if r.AmountMicros < 0 {
		sign, m = "-", -m
	}
	whole, frac := m/1_000_000, m%1_000_000
	if e == 0 && frac == 0 {
		return fmt.Sprintf("%s%d", sign, whole)
	}
	fs := fmt.Sprintf("%06d", frac)
	if frac%uint64(pow10[6-e]) == 0 {
		fs = fs[:e]
	} else {
		fs = strings.TrimRight(fs, "0")
	}
	if fs == "" {
		return fmt.Sprintf("%s%d", sign, whole)
	}
	return fmt.Sprintf("%s%d.%s", sign, whole, fs)
}

// Negate returns the revenue with the opposite sign (refunds).
func (r Revenue) Negate() Revenue {
	return Revenue{AmountMicros: -r.AmountMicros, Currency: r.Currency}
}
