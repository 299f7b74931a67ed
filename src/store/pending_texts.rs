//! A run's completed steps ([`StepTexts`]) still being read on another
//! connection's thread (`store::Prefetch`), waited for where the run first
//! needs them.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use super::{ReadMeeting, Result, StepTexts, Store, StoreError};

pub struct PendingTexts {
    texts: Receiver<Result<StepTexts>>,
    /// Where the thread's read (from the first key up) meets one from the
    /// last key down.
    meeting: Arc<ReadMeeting>,
}

impl PendingTexts {
    pub(super) fn new(
        texts: Receiver<Result<StepTexts>>,
        meeting: Arc<ReadMeeting>,
    ) -> PendingTexts {
        PendingTexts { texts, meeting }
    }

    /// Run `run`'s rows, or why they could not be read. While the thread
    /// is still reading, `store` (the run's own connection, under the
    /// same lease) reads from the other end until the two reads meet: the
    /// caller has nothing else to do until it has the rows.
    pub fn wait(self, store: &Store, run: &str) -> Result<StepTexts> {
        let down = match self.texts.try_recv() {
            Ok(texts) => return texts,
            Err(TryRecvError::Disconnected) => return Err(stopped()),
            Err(TryRecvError::Empty) => {
                self.meeting.join();
                store.step_texts_down(run, &self.meeting)
            }
        };
        let mut texts = self.texts.recv().unwrap_or_else(|_| Err(stopped()))?;
        texts.append_down(down?);
        Ok(texts)
    }
}

fn stopped() -> StoreError {
    StoreError::Failed("the thread reading the run's steps stopped".into())
}
