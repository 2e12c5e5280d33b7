//! GCRA (the token bucket as a single timestamp), in integer arithmetic that is exact.
//!
//! Time is scaled by the rate: one millisecond is `rate` ticks, so one token's emission
//! interval is exactly `period_ms` ticks whatever the rate — no rounding, ever. A bucket
//! is one number, the theoretical arrival time (TAT); it fits one shared-data CAS.

use std::num::NonZeroU64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Tokens per period.
    pub rate: NonZeroU64,
    pub period_ms: NonZeroU64,
    /// Bucket size: how many requests may arrive at once.
    pub burst: NonZeroU64,
}

impl Quota {
    /// The same period with `rate` requests; the burst keeps its share of the rate. A
    /// rate of 0 keeps this quota (overrides are checked to be ≥ 1 where they are set).
    pub fn with_rate(self, rate: u64) -> Quota {
        let Some(rate) = NonZeroU64::new(rate) else {
            return self;
        };
        let burst = (u128::from(self.burst.get()) * u128::from(rate.get())
            / u128::from(self.rate.get()))
        .clamp(1, u128::from(u64::MAX)) as u64;
        Quota {
            rate,
            period_ms: self.period_ms,
            burst: NonZeroU64::new(burst).unwrap_or(NonZeroU64::MIN),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow {
        new_tat: u128,
        remaining: u64,
        /// Until the bucket is full again.
        reset_ms: u64,
    },
    Deny {
        retry_after_ms: u64,
        reset_ms: u64,
    },
}

impl Quota {
    fn ticks(&self, ms: u64) -> u128 {
        u128::from(ms) * u128::from(self.rate.get())
    }

    fn ms_ceil(&self, ticks: u128) -> u64 {
        let rate = u128::from(self.rate.get());
        u64::try_from(ticks.div_ceil(rate)).unwrap_or(u64::MAX)
    }

    /// Decides one request of `cost` tokens at `now_ms` against a bucket whose TAT is
    /// `tat` (0 for a new bucket).
    pub fn check(&self, tat: u128, now_ms: u64, cost: u64) -> Verdict {
        let now = self.ticks(now_ms);
        let interval = u128::from(self.period_ms.get());
        let capacity = interval * u128::from(self.burst.get());
        let base = tat.max(now);
        let new_tat = base + interval * u128::from(cost);
        let reset_ms = self.ms_ceil(base - now);
        if new_tat - now > capacity {
            return Verdict::Deny {
                retry_after_ms: self.ms_ceil(new_tat - now - capacity),
                reset_ms,
            };
        }
        let remaining = u64::try_from((capacity - (new_tat - now)) / interval).unwrap_or(0);
        Verdict::Allow {
            new_tat,
            remaining,
            reset_ms: self.ms_ceil(new_tat - now),
        }
    }

    /// A bucket whose TAT is at or before `now` is full: its state carries no information.
    pub fn is_idle(&self, tat: u128, now_ms: u64) -> bool {
        tat <= self.ticks(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(rate: u64, period_ms: u64, burst: u64) -> Quota {
        Quota {
            rate: NonZeroU64::new(rate).unwrap(),
            period_ms: NonZeroU64::new(period_ms).unwrap(),
            burst: NonZeroU64::new(burst).unwrap(),
        }
    }

    /// Runs `n` requests at `now`, returns how many were allowed.
    fn allowed(q: &Quota, tat: &mut u128, now: u64, n: u64) -> u64 {
        (0..n)
            .filter(|_| match q.check(*tat, now, 1) {
                Verdict::Allow { new_tat, .. } => {
                    *tat = new_tat;
                    true
                }
                Verdict::Deny { .. } => false,
            })
            .count() as u64
    }

    #[test]
    fn free_plan_gets_exactly_60_then_refills_one_per_second() {
        let q = quota(60, 60_000, 60);
        let mut tat = 0;
        let t0 = 1_767_225_600_000;
        assert_eq!(allowed(&q, &mut tat, t0, 61), 60);
        match q.check(tat, t0, 1) {
            Verdict::Deny { retry_after_ms, .. } => assert_eq!(retry_after_ms, 1000),
            v => panic!("{v:?}"),
        }
        assert_eq!(allowed(&q, &mut tat, t0 + 999, 1), 0);
        assert_eq!(allowed(&q, &mut tat, t0 + 1000, 2), 1);
        assert_eq!(allowed(&q, &mut tat, t0 + 60_000, 100), 59);
    }

    #[test]
    fn odd_rates_are_exact() {
        // 7 per minute: the interval is 8571.43 ms. Under constant demand the total after
        // 10 minutes is exactly burst + 70: no drift from rounding.
        let q = quota(7, 60_000, 7);
        let mut tat = 0;
        let mut total = 0;
        for second in 0..=600 {
            total += allowed(&q, &mut tat, second * 1000, 3);
        }
        assert_eq!(total, 77);
    }

    #[test]
    fn burst_is_the_bucket_size() {
        let q = quota(10, 1000, 3);
        let mut tat = 0;
        assert_eq!(allowed(&q, &mut tat, 5000, 10), 3);
        assert_eq!(allowed(&q, &mut tat, 5100, 10), 1);
    }

    #[test]
    fn cost_counts_several_tokens() {
        let q = quota(10, 1000, 10);
        assert!(matches!(
            q.check(0, 0, 10),
            Verdict::Allow { remaining: 0, .. }
        ));
        assert!(matches!(q.check(0, 0, 11), Verdict::Deny { .. }));
    }

    #[test]
    fn property_never_more_than_burst_plus_rate_times_elapsed() {
        // Pseudo-random arrivals; the admitted count can never beat the token budget.
        let mut seed = 0x1234_5678_u64;
        for case in 0..200 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let rate = 1 + seed % 500;
            let period = 1 + (seed >> 16) % 120_000;
            let burst = 1 + (seed >> 32) % 200;
            let q = quota(rate, period, burst);
            let mut tat = 0;
            let mut now = 1_000_000u64;
            let start = now;
            let mut admitted: u128 = 0;
            for _ in 0..500 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                now += (seed >> 40) % (period / 10 + 1);
                admitted += u128::from(allowed(&q, &mut tat, now, 1 + (seed >> 20) % 3));
            }
            let budget =
                u128::from(burst) + u128::from(now - start) * u128::from(rate) / u128::from(period);
            assert!(admitted <= budget, "case {case}: {admitted} > {budget}");
        }
    }
}
