//! The anti-replay window of a session's receive side (as in WireGuard and
//! RFC 6479): the highest counter accepted so far and a bitmap of the
//! [`WINDOW`] counters at and below it. A counter above the highest is new;
//! one in the window is new if its bit is clear; anything older is
//! rejected.

/// Counters tracked below the highest one accepted.
pub(in crate::core) const WINDOW: u64 = 2048;

const WORD_BITS: u64 = u64::BITS as u64;
const WORDS: usize = (WINDOW / WORD_BITS) as usize;
const _: () = assert!(WINDOW.is_multiple_of(WORD_BITS));

/// Which counters a session has accepted.
#[derive(Debug, Clone)]
pub(in crate::core) struct ReplayWindow {
    /// The highest counter accepted, if any.
    top: Option<u64>,
    /// Bit `c % WINDOW` is set when counter `c` (within the window) was
    /// accepted.
    bits: [u64; WORDS],
}

impl ReplayWindow {
    /// A window that has accepted nothing.
    pub(in crate::core) const fn new() -> ReplayWindow {
        ReplayWindow {
            top: None,
            bits: [0; WORDS],
        }
    }

    /// Whether `counter` is neither a repeat nor older than the window.
    /// Call before decrypting; record with [`ReplayWindow::accept`] only
    /// after the message authenticated.
    pub(in crate::core) fn check(&self, counter: u64) -> bool {
        match self.top {
            None => true,
            Some(top) if counter > top => true,
            Some(top) => top - counter < WINDOW && !self.bit(counter),
        }
    }

    /// Records `counter`; returns false (and changes nothing) if
    /// [`ReplayWindow::check`] would refuse it.
    pub(in crate::core) fn accept(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        match self.top {
            Some(top) if counter <= top => {}
            Some(top) => {
                let advance = counter - top;
                if advance >= WINDOW {
                    self.bits = [0; WORDS];
                } else {
                    // At most WINDOW - 1 counters slide in.
                    for slot in top + 1..counter {
                        self.clear_bit(slot);
                    }
                }
                self.top = Some(counter);
            }
            None => {
                self.bits = [0; WORDS];
                self.top = Some(counter);
            }
        }
        self.set_bit(counter);
        true
    }

    fn position(counter: u64) -> (usize, u64) {
        let slot = counter % WINDOW;
        // slot < WINDOW, so the word index is below WORDS.
        ((slot / WORD_BITS) as usize, 1u64 << (slot % WORD_BITS))
    }

    fn bit(&self, counter: u64) -> bool {
        let (word, mask) = ReplayWindow::position(counter);
        self.bits[word] & mask != 0
    }

    fn set_bit(&mut self, counter: u64) {
        let (word, mask) = ReplayWindow::position(counter);
        self.bits[word] |= mask;
    }

    fn clear_bit(&mut self, counter: u64) {
        let (word, mask) = ReplayWindow::position(counter);
        self.bits[word] &= !mask;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn in_order_then_repeats() {
        let mut w = ReplayWindow::new();
        for c in 0..5000 {
            assert!(w.accept(c), "{c}");
            assert!(!w.accept(c), "{c} twice");
        }
        assert!(!w.check(4999 - WINDOW), "just outside the window");
        assert!(!w.check(4000), "inside, already seen");
    }

    #[test]
    fn reordering_within_the_window() {
        let mut w = ReplayWindow::new();
        let top = 3000;
        assert!(w.accept(top));
        assert!(w.accept(top - 50));
        assert!(w.accept(top - 1));
        assert!(!w.accept(top - 50));
        assert!(w.accept(top - WINDOW + 1), "oldest slot of the window");
        assert!(!w.accept(top - WINDOW), "one older");
        assert!(!w.accept(0));
    }

    #[test]
    fn big_jumps_forget_everything_older() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(3));
        assert!(w.accept(3 + 10 * WINDOW));
        assert!(!w.check(3));
        // Inside the window below the new top, never seen.
        assert!(w.accept(3 + 9 * WINDOW + 1));
        assert!(!w.accept(3 + 9 * WINDOW), "just outside");
        assert!(w.accept(u64::MAX));
        assert!(!w.accept(u64::MAX));
        assert!(!w.check(3 + 10 * WINDOW), "far below the new top");
    }

    proptest! {
        /// Against a model: a set of accepted counters and the rule "new,
        /// and not more than WINDOW - 1 below the highest accepted".
        #[test]
        fn matches_the_model(ops in proptest::collection::vec(0u64..6000, 1..400)) {
            let mut w = ReplayWindow::new();
            let mut seen = BTreeSet::new();
            for c in ops {
                let top = seen.iter().next_back().copied();
                let expected = !seen.contains(&c) && top.is_none_or(|t: u64| c > t || t - c < WINDOW);
                prop_assert_eq!(w.check(c), expected, "check {}", c);
                prop_assert_eq!(w.accept(c), expected, "accept {}", c);
                if expected {
                    seen.insert(c);
                }
            }
        }
    }
}
