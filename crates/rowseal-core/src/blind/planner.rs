//! Choosing how many bits a blind index keeps.

/// The planner's recommendation for one index.
#[derive(Debug, Clone, PartialEq)]
pub struct BitsPlan {
    /// Recommended bits (the most that still keep at least two distinct values
    /// per index value on average).
    pub bits: u16,
    /// Distinct values expected to share each index value: at least 2 (so an
    /// index value never pins down one value) and at most √rows (so lookups
    /// stay cheap).
    pub coincidences: f64,
    /// Rows a lookup is expected to fetch and discard as false positives.
    pub false_positive_rows: f64,
    /// Problems found; empty if none.
    pub warnings: Vec<String>,
}

/// Recommends the bits of a blind index over `rows` rows holding `distinct`
/// distinct values.
///
/// The number of distinct values sharing each index value, `distinct / 2^bits`,
/// is kept between 2 and √rows (the rule used by CipherSweet's planner): fewer
/// than 2 and an index value identifies a value; more than √rows and every
/// lookup drags in many false positives. Within that range the planner takes
/// the most bits. An index over few distinct values gets a warning: it reveals
/// each value's frequency however it is truncated.
///
/// ```
/// use rowseal_core::plan_bits;
/// let plan = plan_bits(1_000_000, 1_000_000); // SSNs: all distinct
/// assert_eq!(plan.bits, 18);
/// assert!(plan.coincidences >= 2.0 && plan.coincidences <= 1000.0);
/// assert!(plan.warnings.is_empty());
/// assert!(!plan_bits(1_000_000, 2).warnings.is_empty()); // a boolean
/// ```
pub fn plan_bits(rows: u64, distinct: u64) -> BitsPlan {
    let rows = rows.max(1);
    let distinct = distinct.clamp(1, rows);
    let mut warnings = Vec::new();
    // Most bits b with distinct / 2^b >= 2, at least 1.
    let bits = if distinct >= 4 {
        (63 - (distinct / 2).leading_zeros()) as u16
    } else {
        1
    };
    let coincidences = distinct as f64 / 2f64.powi(i32::from(bits));
    let ceiling = (rows as f64).sqrt();
    if coincidences < 2.0 {
        warnings.push(format!(
            "only {distinct} distinct values: no truncation leaves two values per index value"
        ));
    }
    if coincidences > ceiling {
        warnings.push(format!(
            "{coincidences:.0} values per index value exceed sqrt(rows) = {ceiling:.0}: lookups will be slow"
        ));
    }
    if distinct < 1_000 {
        warnings.push(format!(
            "low cardinality ({distinct} distinct values): the index reveals how often each value occurs; \
             consider not indexing this field, or a compound index with a high-cardinality field"
        ));
    }
    let rows_per_value = rows as f64 / distinct as f64;
    BitsPlan {
        bits,
        coincidences,
        false_positive_rows: (coincidences - 1.0).max(0.0) * rows_per_value,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coincidences_stay_between_two_and_sqrt_rows() {
        for (rows, distinct) in [
            (100, 100),
            (10_000, 5_000),
            (1_000_000, 1_000_000),
            (1_000_000, 50_000),
            (10_000_000_000, 10_000_000_000),
        ] {
            let p = plan_bits(rows, distinct);
            assert!(p.coincidences >= 2.0, "{rows} {distinct} {p:?}");
            assert!(p.coincidences < 4.0, "most bits within range: {p:?}");
            assert!(p.coincidences <= (rows as f64).sqrt(), "{p:?}");
        }
    }

    #[test]
    fn low_cardinality_warns() {
        let p = plan_bits(1_000_000, 3);
        assert!(p.warnings.iter().any(|w| w.contains("low cardinality")));
    }
}
