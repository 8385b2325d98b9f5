//! [`super::each`]: how many jobs run at once, and the order of the results.

use super::*;
use crate::report::Collect;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[test]
fn jobs_run_at_most_parallel_at_a_time_and_results_keep_their_order() {
    let (running, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut events = Collect(Vec::new());
    let results = each((0..9).collect(), 3, &mut events, |job: usize, reporter| {
        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
        most.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        reporter.event(Event::Warning { message: format!("job {job}") });
        running.fetch_sub(1, Ordering::SeqCst);
        job * 10
    });
    assert_eq!(results, (0..9).map(|job| job * 10).collect::<Vec<_>>());
    assert_eq!(most.load(Ordering::SeqCst), 3, "3 at once, no more and no fewer");
    assert_eq!(events.0.len(), 9, "every job's event reached the caller's reporter");
}
