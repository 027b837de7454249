//! What a receiver is missing: each gap in the stream with its own NAK schedule, and the
//! repair round-trip estimate that paces the schedules.
//!
//! A gap is NAKed once when it opens (after the configured delay), then again only if
//! its repair has not come within a retransmission timeout — the smoothed repair round
//! trip plus four deviations, as TCP computes its RTO, learnt from gaps that were NAKed
//! exactly once (Karn's rule) — doubling per repeat. A receiver whose socket queue holds
//! a backlog sees repairs arrive behind it; the estimate learns that, so it does not NAK
//! what is already on its way.

use std::collections::BTreeMap;

/// One missing range `[start, end)` and its NAK schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gap {
    /// One past the last missing byte.
    pub end: u64,
    /// When its next NAK is due (ns).
    pub due_ns: u64,
    /// NAKs sent for it so far.
    pub naks: u32,
    /// End of what its NAKs asked for (a NAK asks for at most `MAX_NAK_BYTES`).
    pub asked_to: u64,
    /// When its only NAK went out: the repair's arrival is a round-trip sample.
    pub first_nak_ns: Option<u64>,
    /// Opened when the receiver joined (history it was not there for): any
    /// retransmission of it sent earlier did not reach this receiver, so its NAKs are
    /// flagged to be answered even if the sender just resent the range.
    pub before_join: bool,
}

/// The gaps of one stream, by start position; disjoint.
#[derive(Debug, Default)]
pub(crate) struct Gaps {
    missing: BTreeMap<u64, Gap>,
    /// No NAK is due before this (a lower bound, exact after [`Self::due`] finds none).
    earliest_due_ns: u64,
    /// While a NAKed gap's repair keeps arriving, its repeat waits this long after the
    /// latest piece (a large range takes a while to resend at the sender's rate cap).
    repair_timeout_ns: u64,
}

impl Gaps {
    /// A new gap `[start, end)`, its first NAK due at `due_ns`. Gaps open beyond the
    /// high-water mark, so beyond every gap already open.
    pub fn open(&mut self, start: u64, end: u64, due_ns: u64, before_join: bool) {
        if end <= start {
            return;
        }
        self.missing.insert(
            start,
            Gap {
                end,
                due_ns,
                naks: 0,
                asked_to: start,
                first_nak_ns: None,
                before_join,
            },
        );
        self.earliest_due_ns = self.earliest_due_ns.min(due_ns);
    }

    /// `[start, end)` arrived. Gaps it covers close, gaps it cuts keep their schedule —
    /// except a remainder no NAK asked for yet, whose NAK is due at once. Returns a
    /// repair round-trip sample if this filled part of a gap NAKed exactly once.
    pub fn fill(&mut self, start: u64, end: u64, now_ns: u64) -> Option<u64> {
        let mut sample = None;
        while let Some((&at, &gap)) = self.missing.range(..end).next_back() {
            if gap.end <= start {
                break;
            }
            self.missing.remove(&at);
            // repairs arriving make room in the NAK budget: look again
            self.earliest_due_ns = self.earliest_due_ns.min(now_ns);
            if gap.naks == 1
                && let Some(sent) = gap.first_nak_ns
            {
                sample = Some(now_ns.saturating_sub(sent).max(1));
            }
            // one sample per NAK: what remains of the gap no longer samples; its repair
            // is arriving, so its repeat waits for the rest
            let kept = Gap {
                first_nak_ns: None,
                due_ns: if gap.naks > 0 {
                    gap.due_ns
                        .max(now_ns.saturating_add(self.repair_timeout_ns))
                } else {
                    gap.due_ns
                },
                ..gap
            };
            if at < start {
                self.missing.insert(at, Gap { end: start, ..kept });
            }
            if gap.end > end {
                let rest = if gap.naks > 0 && end >= gap.asked_to {
                    // beyond what was asked for: ask now
                    self.earliest_due_ns = self.earliest_due_ns.min(now_ns);
                    Gap {
                        end: gap.end,
                        due_ns: now_ns,
                        naks: 0,
                        asked_to: end,
                        first_nak_ns: None,
                        before_join: gap.before_join,
                    }
                } else {
                    kept
                };
                self.missing.insert(end, rest);
            }
        }
        sample
    }

    /// See `repair_timeout_ns`.
    pub fn set_repair_timeout(&mut self, timeout_ns: u64) {
        self.repair_timeout_ns = timeout_ns;
    }

    /// Everything below `position` is settled (repaired or given up).
    pub fn settle_below(&mut self, position: u64, now_ns: u64) -> Option<u64> {
        self.fill(0, position, now_ns)
    }

    /// The first gap whose NAK is due at `now_ns`: (start, gap), to update with
    /// [`Self::nak_sent`]. With `hold_repeats_ns`, a gap NAKed before is due only that
    /// much later (its repair may be among datagrams not yet handled). While the
    /// repairs asked for and not yet arrived (nor overdue) come to `budget` bytes, no
    /// NAK is due: a receiver asks for no more than it can take in at once — repairs
    /// pour into the same socket buffer as live data, and asking for all of a large
    /// loss at once overflows it into more loss.
    pub fn due(
        &mut self,
        now_ns: u64,
        hold_repeats_ns: Option<u64>,
        budget: u64,
    ) -> Option<(u64, Gap)> {
        if now_ns < self.earliest_due_ns {
            return None;
        }
        let mut earliest = u64::MAX;
        let mut outstanding = 0u64;
        let mut first_due = None;
        for (&start, gap) in &self.missing {
            let due = match hold_repeats_ns {
                Some(hold) if gap.naks > 0 => gap.due_ns.saturating_add(hold),
                _ => gap.due_ns,
            };
            if due <= now_ns {
                first_due = first_due.or(Some((start, *gap)));
            } else {
                earliest = earliest.min(due);
                if gap.naks > 0 {
                    outstanding += gap.asked_to.min(gap.end).saturating_sub(start);
                }
            }
        }
        if outstanding >= budget {
            // a repair's arrival (see `fill`) or a timeout makes room
            self.earliest_due_ns = earliest;
            return None;
        }
        if first_due.is_none() {
            self.earliest_due_ns = earliest;
        }
        first_due
    }

    /// A NAK for the gap at `start` went out at `now_ns` asking up to `asked_to`; its next
    /// is due at `next_due_ns`.
    pub fn nak_sent(&mut self, start: u64, asked_to: u64, now_ns: u64, next_due_ns: u64) {
        if let Some(gap) = self.missing.get_mut(&start) {
            gap.naks = gap.naks.saturating_add(1);
            gap.asked_to = gap.asked_to.max(asked_to);
            gap.first_nak_ns = (gap.naks == 1).then_some(now_ns);
            gap.due_ns = next_due_ns;
        }
    }

    /// A new session of the same stream took over (the publisher restarted): what was
    /// asked of the old one will never come, so every gap is due at `now_ns` with nothing
    /// outstanding, as if just opened — a gap NAKed to a sender that died must not wait
    /// out its backed-off repeat, nor hold the NAK budget, while the new one lingers.
    pub fn ask_anew(&mut self, now_ns: u64) {
        for (&start, gap) in &mut self.missing {
            gap.due_ns = now_ns;
            gap.naks = 0;
            gap.asked_to = start;
            gap.first_nak_ns = None;
        }
        self.earliest_due_ns = now_ns;
    }

    /// Look again at every gap on the next [`Self::due`] (its hold changed).
    pub fn recheck(&mut self) {
        self.earliest_due_ns = 0;
    }

    /// When the next NAK may be due (a lower bound).
    pub fn next_due_ns(&self) -> Option<u64> {
        (!self.missing.is_empty()).then_some(self.earliest_due_ns)
    }

    /// Gaps open.
    pub fn len(&self) -> usize {
        self.missing.len()
    }

    /// The gaps, in order.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (u64, Gap)> + '_ {
        self.missing.iter().map(|(&s, &g)| (s, g))
    }
}

/// The repair round trip as a receiver sees it (NAK sent → first repaired byte
/// processed): smoothed, with its mean deviation, as RFC 6298 computes TCP's RTO.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RepairRtt {
    srtt_ns: u64,
    rttvar_ns: u64,
}

impl RepairRtt {
    pub fn sample(&mut self, sample_ns: u64) {
        if self.srtt_ns == 0 {
            self.srtt_ns = sample_ns;
            self.rttvar_ns = sample_ns / 2;
        } else {
            let deviation = self.srtt_ns.abs_diff(sample_ns);
            self.rttvar_ns = (3 * self.rttvar_ns + deviation) / 4;
            self.srtt_ns = (7 * self.srtt_ns + sample_ns) / 8;
        }
    }

    /// Smoothed round trip (0 until measured).
    pub fn smoothed_ns(&self) -> u64 {
        self.srtt_ns
    }

    /// How long to wait for a repair before asking again: srtt + 4 × rttvar within
    /// `[min, max]`, or `initial` before any sample.
    pub fn timeout_ns(&self, initial: u64, min: u64, max: u64) -> u64 {
        if self.srtt_ns == 0 {
            initial
        } else {
            (self.srtt_ns + 4 * self.rttvar_ns).clamp(min, max.max(min))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_cuts_gaps_and_keeps_their_schedule() {
        let mut gaps = Gaps::default();
        gaps.open(100, 200, 10, false);
        gaps.open(300, 400, 20, false);
        assert_eq!(gaps.due(5, None, u64::MAX), None);
        let (start, gap) = gaps.due(10, None, u64::MAX).unwrap();
        assert_eq!((start, gap.end), (100, 200));
        gaps.nak_sent(100, 200, 10, 1_000);
        // the middle of the first gap arrives: a round-trip sample, two pieces
        assert_eq!(gaps.fill(140, 160, 60), Some(50));
        let pieces: Vec<_> = gaps.iter().map(|(s, g)| (s, g.end, g.due_ns)).collect();
        assert_eq!(
            pieces,
            [(100, 140, 1_000), (160, 200, 1_000), (300, 400, 20)]
        );
        // the rest of it: no second sample from the same NAK
        assert_eq!(gaps.fill(100, 140, 70), None);
        // one frame over both a gap's tail and the next gap's head
        assert_eq!(gaps.fill(180, 320, 80), None);
        let pieces: Vec<_> = gaps.iter().map(|(s, g)| (s, g.end)).collect();
        assert_eq!(pieces, [(160, 180), (320, 400)]);
        gaps.settle_below(1_000, 90);
        assert_eq!(gaps.len(), 0);
        assert_eq!(gaps.next_due_ns(), None);
    }

    #[test]
    fn what_a_nak_did_not_ask_for_is_asked_for_as_soon_as_the_asked_part_arrives() {
        let mut gaps = Gaps::default();
        gaps.open(0, 3 << 20, 0, false);
        gaps.nak_sent(0, 1 << 20, 0, 5_000);
        gaps.fill(0, 1 << 20, 100);
        let (start, gap) = gaps.due(100, None, u64::MAX).unwrap();
        assert_eq!((start, gap.naks), (1 << 20, 0));
        // a gap not NAKed yet keeps its schedule when cut
        let mut gaps = Gaps::default();
        gaps.open(0, 100, 500, false);
        gaps.fill(0, 40, 10);
        assert_eq!(gaps.due(10, None, u64::MAX), None);
        assert_eq!(gaps.due(500, None, u64::MAX).unwrap().0, 40);
    }

    #[test]
    fn no_more_is_asked_for_than_the_budget_while_repairs_are_on_their_way() {
        let mut gaps = Gaps::default();
        gaps.open(0, 600, 0, false);
        gaps.open(1_000, 1_600, 0, false);
        let (start, _) = gaps.due(0, None, 1_000).unwrap();
        gaps.nak_sent(start, 600, 0, 100);
        let (start, _) = gaps.due(0, None, 1_000).unwrap();
        assert_eq!(start, 1_000, "600 outstanding: room for more");
        gaps.nak_sent(start, 1_600, 0, 100);
        gaps.open(2_000, 2_100, 0, false);
        assert_eq!(gaps.due(1, None, 1_000), None, "1200 outstanding");
        gaps.fill(0, 600, 2);
        assert_eq!(gaps.due(2, None, 1_000).unwrap().0, 2_000);
    }

    #[test]
    fn repeats_wait_while_datagrams_are_queued_and_first_naks_do_not() {
        let mut gaps = Gaps::default();
        gaps.open(0, 100, 10, false);
        gaps.open(200, 300, 10, false);
        gaps.nak_sent(0, 100, 10, 50);
        assert_eq!(gaps.due(60, Some(1_000), u64::MAX).unwrap().0, 200);
        gaps.nak_sent(200, 300, 60, 100);
        assert_eq!(gaps.due(500, Some(1_000), u64::MAX), None);
        assert_eq!(gaps.due(1_050, Some(1_000), u64::MAX).unwrap().0, 0);
        gaps.recheck();
        assert_eq!(gaps.due(60, None, u64::MAX).unwrap().0, 0);
    }

    #[test]
    fn the_timeout_follows_the_measured_round_trip() {
        let mut rtt = RepairRtt::default();
        assert_eq!(rtt.timeout_ns(2_000, 100, 1_000_000), 2_000);
        for _ in 0..50 {
            rtt.sample(10_000);
        }
        let t = rtt.timeout_ns(2_000, 100, 1_000_000);
        assert!((10_000..12_000).contains(&t), "{t}");
        // a backlog: repairs take 10x as long, the timeout follows within a few samples
        for _ in 0..10 {
            rtt.sample(100_000);
        }
        assert!(rtt.timeout_ns(2_000, 100, 1_000_000) > 100_000);
    }
}
