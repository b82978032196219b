package forwarders

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"sort"
	"strings"

	"github.com/postback/postback/mapping"
)

// ErrNoFXRate reports an event whose currency has no entry in the
// destination's fx_rates while the destination converts to USD. It is a
// configuration problem, not the event's: the destination is paused until the
// rate is added, then the event is sent.
var ErrNoFXRate = errors.New("forwarders: no fx_rates entry for currency")

// Revenue modes of RevenueSettings.Revenue.
const (
	RevenueGross    = "gross"    // the price the customer paid (default)
	RevenueProceeds = "proceeds" // the price minus the store's commission
)

// Currency modes of RevenueSettings.Currency.
const (
	CurrencyAsStored = "as_stored" // the currency the customer paid in (default)
	CurrencyUSD      = "USD"       // converted with fx_rates
)

// RevenueSettings is the money part of a destination's configuration. Embed
// it inline in a destination's settings struct (`yaml:",inline"`) so that the
// keys sit directly in the destination block:
//
//	revenue: proceeds            # gross (default) | proceeds
//	commission: {apple: 15}      # percent per source; defaults apple 30, google 15, others 0
//	currency: USD                # as_stored (default) | USD
//	fx_rates: {EUR: "1.08"}      # USD per one unit of the currency, exact decimals
type RevenueSettings struct {
	Revenue    string            `yaml:"revenue"`
	Commission map[string]string `yaml:"commission"`
	Currency   string            `yaml:"currency"`
	FXRates    map[string]string `yaml:"fx_rates"`
}

// Money converts an event's stored revenue (gross, in the currency paid) into
// what one destination wants. Arithmetic is exact (rationals) with a single
// rounding to micros, half away from zero, so refunds mirror their purchase.
// The zero Money passes revenue through unchanged.
type Money struct {
	proceeds   bool
	commission map[string]*big.Rat // source -> share kept by the store (0.15)
	toUSD      bool
	rates      map[string]*big.Rat // currency -> USD per unit
}

// defaultCommission is the store's share used for proceeds when the
// destination does not set one: the App Store's standard 30% (15% applies to
// the Small Business Program and to subscriptions after their first year: set
// commission.apple: 15 then), Google Play's 15% on subscriptions, and none for
// web payments, whose fees are not a store commission.
func defaultCommission(source string) *big.Rat {
	switch source {
	case mapping.SourceApple:
		return big.NewRat(30, 100)
	case mapping.SourceGoogle:
		return big.NewRat(15, 100)
	default:
		return new(big.Rat)
	}
}

// commissionSources lists the sources a commission can be set for.
func commissionSources() []string {
	return []string{mapping.SourceApple, mapping.SourceGoogle, mapping.SourceStripe, mapping.SourceShopify, mapping.SourceCustom}
}

// Compile validates the settings (without I/O) and returns the converter.
// Errors wrap ErrConfig and name the key, under the destination s.
func (rs RevenueSettings) Compile(s Settings) (Money, error) {
	var m Money
	switch strings.ToLower(strings.TrimSpace(rs.Revenue)) {
	case "", RevenueGross:
		if len(rs.Commission) > 0 {
			return Money{}, configError(s, "commission", "is only used with revenue: proceeds")
		}
	case RevenueProceeds:
		m.proceeds = true
		m.commission = map[string]*big.Rat{}
		for _, src := range commissionSources() {
			m.commission[src] = defaultCommission(src)
		}
		for k, v := range rs.Commission {
			src := strings.ToLower(k)
			if _, ok := m.commission[src]; !ok {
				return Money{}, configError(s, "commission."+k, "unknown source (one of "+strings.Join(commissionSources(), ", ")+")")
			}
			p, err := parsePercent(v)
			if err != nil {
				return Money{}, configError(s, "commission."+k, err.Error())
			}
			m.commission[src] = p
		}
	default:
		return Money{}, configError(s, "revenue", fmt.Sprintf("%q is not one of gross, proceeds", rs.Revenue))
	}
	switch strings.TrimSpace(rs.Currency) {
	case "", CurrencyAsStored:
		if len(rs.FXRates) > 0 {
			return Money{}, configError(s, "fx_rates", "is only used with currency: USD")
		}
	case CurrencyUSD, "usd":
		m.toUSD = true
		m.rates = map[string]*big.Rat{"USD": big.NewRat(1, 1)}
		for k, v := range rs.FXRates {
			code, err := mapping.NormalizeCurrency(k)
			if err != nil {
				return Money{}, configError(s, "fx_rates."+k, "not an ISO 4217 currency code")
			}
			r, ok := new(big.Rat).SetString(strings.TrimSpace(v))
			if !ok || r.Sign() <= 0 || strings.ContainsAny(v, "/eE") {
				return Money{}, configError(s, "fx_rates."+k, fmt.Sprintf("%q is not a positive decimal (USD per one %s)", v, code))
			}
			if code == "USD" && r.Cmp(big.NewRat(1, 1)) != 0 {
				return Money{}, configError(s, "fx_rates."+k, "the USD rate is always 1")
			}
			m.rates[code] = r
		}
	default:
		return Money{}, configError(s, "currency", fmt.Sprintf("%q is not one of as_stored, USD", rs.Currency))
	}
	return m, nil
}

// parsePercent reads a percentage in [0, 100) as an exact fraction.
func parsePercent(v string) (*big.Rat, error) {
	r, ok := new(big.Rat).SetString(strings.TrimSpace(v))
	if !ok || strings.ContainsAny(v, "/eE") {
		return nil, fmt.Errorf("%q is not a decimal percentage such as 15 or 17.5", v)
	}
	if r.Sign() < 0 || r.Cmp(big.NewRat(100, 1)) >= 0 {
		return nil, fmt.Errorf("%s%% is outside 0..<100", v)
	}
	return r.Quo(r, big.NewRat(100, 1)), nil
}

// Currencies lists the currencies the converter can produce USD for, sorted;
// empty when it does not convert.
func (m Money) Currencies() []string {
	out := make([]string, 0, len(m.rates))
	for c := range m.rates {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// ConvertsToUSD reports whether the converter reports every amount in USD.
func (m Money) ConvertsToUSD() bool { return m.toUSD }

// Convert returns the event's revenue as the destination wants it: gross or
// proceeds (by the event's source), as stored or in USD. It returns nil when
// the event carries no revenue, and an error wrapping ErrNoFXRate when the
// currency has no rate, or mapping.ErrAmount when the result overflows.
func (m Money) Convert(e *mapping.Event) (*mapping.Revenue, error) {
	if e.Revenue == nil {
		return nil, nil
	}
	in := *e.Revenue
	cur := strings.ToUpper(in.Currency)
	if !m.proceeds && !m.toUSD {
		return &mapping.Revenue{AmountMicros: in.AmountMicros, Currency: cur}, nil
	}
	x := new(big.Rat).SetInt64(in.AmountMicros)
	if m.proceeds {
		c, ok := m.commission[e.Source]
		if !ok {
			c = new(big.Rat)
		}
		keep := new(big.Rat).Sub(big.NewRat(1, 1), c)
		x.Mul(x, keep)
	}
	if m.toUSD {
		rate, ok := m.rates[cur]
		if !ok {
			return nil, fmt.Errorf("%w %s", ErrNoFXRate, cur)
		}
		x.Mul(x, rate)
		cur = "USD"
	}
	micros, ok := roundRat(x)
	if !ok {
		return nil, fmt.Errorf("%w: converted revenue overflows", mapping.ErrAmount)
	}
	return &mapping.Revenue{AmountMicros: micros, Currency: cur}, nil
}

// roundRat rounds to the nearest integer, halves away from zero.
func roundRat(x *big.Rat) (int64, bool) {
	num := new(big.Int).Abs(x.Num())
	den := x.Denom()
	q, r := new(big.Int).QuoRem(num, den, new(big.Int))
	if r.Lsh(r, 1).Cmp(den) >= 0 {
		q.Add(q, big.NewInt(1))
	}
	if !q.IsInt64() || q.Int64() == math.MinInt64 {
		return 0, false
	}
	v := q.Int64()
	if x.Sign() < 0 {
		v = -v
	}
	return v, true
}

// MinRevenueMicros is the smallest amount worth reporting as revenue: APIs
// that reject zero or sub-unit amounts (Adjust's minimum is 0.001) get no
// revenue fields at all below it.
const MinRevenueMicros = 1000

// Positive reports whether r is revenue a destination that rejects zero and
// negative amounts can take.
func Positive(r *mapping.Revenue) bool { return r != nil && r.AmountMicros >= MinRevenueMicros }
