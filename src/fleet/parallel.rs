//! Work on many servers at once: a bounded number of threads take the servers in order, and
//! the events they report reach the caller's reporter, on the caller's thread, as they happen.

use std::sync::{mpsc, Mutex};

use crate::report::{Event, Reporter};
use crate::Error;

/// How many servers are worked on at once unless `--parallel` says otherwise: OpenSSH's sshd
/// drops unauthenticated connections beyond 10 (its `MaxStartups`), which a gateway shared by
/// every connection would otherwise do.
pub const DEFAULT_PARALLEL: usize = 10;

/// Runs `work` on each of `jobs`, at most `parallel` at a time, and returns the results in
/// the order of `jobs`. Each job reports through the reporter it is given; those events are
/// handed to `reporter` in the order they arrive.
pub(crate) fn each<J: Send, T: Send>(
    jobs: Vec<J>,
    parallel: usize,
    reporter: &mut dyn Reporter,
    work: impl Fn(J, &mut dyn Reporter) -> T + Sync,
) -> Vec<T> {
    let count = jobs.len();
    let queue = Mutex::new(jobs.into_iter().enumerate());
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..count).map(|_| None).collect());
    let (sender, events) = mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..parallel.clamp(1, count.max(1)) {
            let mut relay = Relay(sender.clone());
            let (queue, results, work) = (&queue, &results, &work);
            scope.spawn(move || loop {
                let next = queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).next();
                let Some((index, job)) = next else { break };
                let result = work(job, &mut relay);
                results.lock().unwrap_or_else(|poisoned| poisoned.into_inner())[index] = Some(result);
            });
        }
        // The loop ends when every worker has finished (and dropped its sender).
        drop(sender);
        for event in events {
            reporter.event(event);
        }
    });
    let results = results.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
    results.into_iter().map(|result| result.expect("every job ran: a worker that panicked re-raised it")).collect()
}

/// Splits the results of [`each`] into the successes and the first failure (in the order of
/// the jobs); the other failures are reported as warnings.
pub(crate) fn first_failure<T>(results: Vec<Result<T, Error>>, reporter: &mut dyn Reporter) -> (Vec<T>, Option<Error>) {
    let mut done = Vec::new();
    let mut first = None;
    for result in results {
        match (result, &first) {
            (Ok(value), _) => done.push(value),
            (Err(err), None) => first = Some(err),
            (Err(other), Some(_)) => reporter.event(Event::Warning { message: format!("also failed: {other}") }),
        }
    }
    (done, first)
}

/// For jobs that return nothing: `Ok` when every job succeeded, else the first failure (the
/// others reported as warnings, see [`first_failure`]).
pub(crate) fn all_done(results: Vec<Result<(), Error>>, reporter: &mut dyn Reporter) -> Result<(), Error> {
    first_failure(results, reporter).1.map_or(Ok(()), Err)
}

/// A worker's reporter: it sends each event to the caller's thread.
struct Relay(mpsc::Sender<Event>);

impl Reporter for Relay {
    fn event(&mut self, event: Event) {
        let _ = self.0.send(event);
    }
}

#[cfg(test)]
mod tests;
