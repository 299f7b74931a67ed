//! Two connections reading one run's completed steps together: one from the
//! first key up, the other from the last key down, each taking a row only
//! if the other has not, until they meet.
//!
//! A resume's second connection starts reading the steps on a thread of its
//! own while the main thread decodes the kept program (`store::Prefetch`).
//! When the main thread is done first, it reads what is left from the other
//! end on the run's own connection (`PendingTexts::wait`), so the two cores
//! share the rest of the read instead of one waiting for the other.
//!
//! Keys are compared as bytes, which is how both backends order them
//! (SQLite's `BINARY` collation; the PostgreSQL backend reads its rows in
//! one go and takes no part).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

#[derive(Default)]
pub struct ReadMeeting {
    /// Set when the read from the last key down starts: until then the
    /// read up takes every row without the lock.
    joined: AtomicBool,
    reached: Mutex<Reached>,
}

/// The last key each read took: (up, down).
type Reached = (Option<Vec<u8>>, Option<Vec<u8>>);

impl ReadMeeting {
    fn reached(&self) -> MutexGuard<'_, Reached> {
        self.reached.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The read from the end starts.
    pub fn join(&self) {
        self.joined.store(true, Ordering::SeqCst);
    }

    /// Whether the read up (keys in ascending order) takes the row of
    /// `key`: not once the read down took it, or any key below it.
    pub fn take_up(&self, key: &[u8]) -> bool {
        if !self.joined.load(Ordering::SeqCst) {
            return true;
        }
        let mut reached = self.reached();
        if reached.1.as_deref().is_some_and(|down| key >= down) {
            return false;
        }
        put(&mut reached.0, key);
        true
    }

    /// The read up ended, its last row `last`: the read down stops there.
    /// (Until the read down joined, the read up did not say how far it
    /// got, and the two may both take the rows around where they met:
    /// `StepTexts::append_down` keeps one of each.)
    pub fn up_ended(&self, last: Option<&[u8]>) {
        if let Some(last) = last {
            put(&mut self.reached().0, last);
        }
    }

    /// Whether the read down (keys in descending order) takes the row of
    /// `key`: not once the read up took it, or any key above it.
    pub fn take_down(&self, key: &[u8]) -> bool {
        let mut reached = self.reached();
        if reached.0.as_deref().is_some_and(|up| key <= up) {
            return false;
        }
        put(&mut reached.1, key);
        true
    }
}

fn put(slot: &mut Option<Vec<u8>>, key: &[u8]) {
    let buffer = slot.get_or_insert_with(Vec::new);
    buffer.clear();
    buffer.extend_from_slice(key);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_is_taken_by_one_read() {
        let meeting = ReadMeeting::default();
        // Up alone, before the read down joins.
        assert!(meeting.take_up(b"a"));
        assert!(meeting.take_up(b"b"));
        meeting.join();
        assert!(meeting.take_down(b"f"));
        assert!(meeting.take_up(b"c"));
        assert!(meeting.take_down(b"e"));
        assert!(meeting.take_down(b"d"));
        // `d` is the read down's: the read up stops there, and the read
        // down stops at the read up's last key.
        assert!(!meeting.take_up(b"d"));
        assert!(!meeting.take_down(b"c"));
    }

    #[test]
    fn a_read_up_that_ended_stops_the_read_down_where_it_ended() {
        let meeting = ReadMeeting::default();
        assert!(meeting.take_up(b"a"));
        assert!(meeting.take_up(b"b"));
        meeting.up_ended(Some(b"b"));
        meeting.join();
        assert!(!meeting.take_down(b"b"));
        let meeting = ReadMeeting::default();
        meeting.up_ended(None);
        meeting.join();
        assert!(meeting.take_down(b"z"));
    }
}
