//! The policy's `fraud:` section and a route's `fraud:`, as written.

use schemars::JsonSchema;
use serde::Deserialize;

/// The policy's `fraud:` section: rules that payment routes enable by name.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FraudDocument {
    /// Where the client's country comes from for `country_mismatch` rules.
    #[serde(default)]
    pub client_country: Option<ClientCountryDocument>,
    /// Distinct velocity keys each velocity rule keeps (default 65536); beyond it the
    /// least active are evicted.
    #[serde(default)]
    pub max_keys: Option<u32>,
    /// The rules; routes list the names they use.
    pub rules: Vec<FraudRuleDocument>,
}

/// The client's country: a trusted header the CDN or front proxy sets (e.g.
/// `x-client-country`, `cf-ipcountry`), or a JWT claim. Give exactly one.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCountryDocument {
    #[serde(default)]
    pub header: Option<String>,
    /// Dotted claim path of the authenticated token.
    #[serde(default)]
    pub claim: Option<String>,
}

/// One fraud rule: a name, what it checks (exactly one of `velocity`, `amount`,
/// `country_mismatch`, `blocklist`), its score and action.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FraudRuleDocument {
    /// Unique; sent to the origin in `x-tollgate-fraud`, never to the client.
    pub name: String,
    /// Added to the request's risk score when the rule matches (the sum is capped at 100).
    #[serde(default)]
    pub score: u32,
    /// `flag` (default): mark the request for the origin; `block`: refuse it (403).
    #[serde(default)]
    pub action: FraudAction,
    #[serde(default)]
    pub velocity: Option<FraudVelocityDocument>,
    #[serde(default)]
    pub amount: Option<FraudAmountDocument>,
    #[serde(default)]
    pub country_mismatch: Option<CountryMismatchDocument>,
    #[serde(default)]
    pub blocklist: Option<BlocklistDocument>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FraudAction {
    #[default]
    Flag,
    Block,
}

/// More than `max` requests with the same key within `window` match. The key is always
/// scoped by tenant (requests without a tenant share one anonymous scope).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FraudVelocityDocument {
    /// JSON body field paths forming the key, e.g. `card.fingerprint` or `account_id`.
    /// A request missing any of them is not counted.
    pub key: Vec<String>,
    pub max: u32,
    /// `30s`, `10m`, `1h`, `1d`.
    pub window: String,
}

/// A JSON number field compared with thresholds (numbers written as strings are read
/// too). Give `gt` and/or `gte`; `currency` picks per-currency thresholds.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FraudAmountDocument {
    /// JSON body field path, e.g. `amount`.
    pub field: String,
    /// Matches when the amount is greater than this.
    #[serde(default)]
    pub gt: Option<f64>,
    /// Matches when the amount is greater than or equal to this.
    #[serde(default)]
    pub gte: Option<f64>,
    /// JSON body field holding the currency code (e.g. `currency`).
    #[serde(default)]
    pub currency_field: Option<String>,
    /// Thresholds (greater than) per currency code, case-insensitive; a currency not
    /// listed uses `gt`/`gte`.
    #[serde(default)]
    pub gt_by_currency: std::collections::BTreeMap<String, f64>,
}

/// The card's country (a JSON body field) differs from the client's country
/// (`fraud.client_country`). Either value missing: no match.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CountryMismatchDocument {
    /// JSON body field path, e.g. `card.country`.
    pub card_country: String,
}

/// Refuse or flag listed client IPs / CIDR blocks, and listed values of body fields.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlocklistDocument {
    /// Addresses or CIDR blocks, matched against the client IP as the limits see it.
    #[serde(default)]
    pub ips: Vec<String>,
    /// JSON body field path whose value is compared with `values`.
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub values: Vec<String>,
}

/// A route's `fraud:`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteFraudDocument {
    /// Names of `fraud.rules` evaluated on this route.
    pub rules: Vec<String>,
    /// Refuse (403) when the summed score of the matching rules reaches this.
    #[serde(default)]
    pub block_score: Option<u32>,
    /// Largest body read (default 65536); a longer body gets 413.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
}
