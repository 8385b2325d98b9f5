//! The libgit2 push ([`PackMethod::Libgit2`](super::PackMethod::Libgit2)): a `git2` push through
//! a custom transport. libgit2 builds transports from URLs, so the channel is handed to it
//! through a process-wide table keyed by a one-time token in the remote URL
//! (`xtask-deploy://<token>`).

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};

use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream, Transport};

use crate::ssh::TimedChannel;

use super::error::{PushError, Said};
use super::{PushProgress, PushStats, Refs, Stream};

/// The URL scheme of the tunnel transport.
const SCHEME: &str = "xtask-deploy";

/// A tunnel waiting to be picked up by libgit2: the channel and the git:// request to send first.
struct Pending {
    channel: TimedChannel,
    request: Vec<u8>,
    bytes_sent: Arc<AtomicU64>,
}

static REGISTER: Once = Once::new();
static PENDING: Mutex<Option<HashMap<u64, Pending>>> = Mutex::new(None);
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// The libgit2 push through the daemon at the other end of `channel`. Returns the bytes sent;
/// a ref the server rejects is an error. `progress` hears from libgit2 as it writes the pack.
pub(super) fn push_with_libgit2(
    repo: &git2::Repository,
    channel: TimedChannel,
    request: Vec<u8>,
    refs: Refs<'_>,
    progress: &mut dyn FnMut(PushProgress),
) -> Result<PushStats, PushError> {
    register();
    let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
    let bytes_sent = Arc::new(AtomicU64::new(0));
    let pending = Pending { channel, request, bytes_sent: bytes_sent.clone() };
    PENDING.lock().unwrap().get_or_insert_with(HashMap::new).insert(token, pending);
    let counted = bytes_sent.clone();
    let mut told = |written: u64, objects: u64| {
        let bytes = counted.load(Ordering::Relaxed);
        // Once every object is written, the pack is all sent.
        let total_bytes = (written == objects).then_some(bytes);
        progress(PushProgress { bytes, objects: Some(objects), total_bytes })
    };
    let result = libgit2_push(repo, &format!("{SCHEME}://{token}"), refs, &mut told);
    if let Some(table) = PENDING.lock().unwrap().as_mut() {
        table.remove(&token);
    }
    // Without build output there is nothing to count apart; with it, libgit2 makes one pack.
    let build_bytes = if refs.build.is_none() { Some(0) } else { None };
    result.map(|objects| PushStats { bytes_sent: bytes_sent.load(Ordering::Relaxed), objects, build_bytes })
}

/// Pushes through libgit2; returns the number of objects in the pack. `progress` is told the
/// objects written and the objects in the pack each time libgit2 reports its progress.
fn libgit2_push(
    repo: &git2::Repository,
    url: &str,
    refs: Refs<'_>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64, PushError> {
    let mut remote = repo.remote_anonymous(url).map_err(PushError::Libgit2)?;
    let rejected = Arc::new(Mutex::new(None::<PushError>));
    let mut callbacks = git2::RemoteCallbacks::new();
    let objects = Arc::new(AtomicU64::new(0));
    let counted = objects.clone();
    callbacks.pack_progress(move |_stage, _current, total| counted.store(total as u64, Ordering::Relaxed));
    callbacks.push_transfer_progress(|current, total, _bytes| progress(current as u64, total as u64));
    let record = rejected.clone();
    callbacks.push_update_reference(move |name, status| {
        if let Some(status) = status {
            let (refname, reason) = (name.to_string(), status.to_string());
            *record.lock().unwrap() = Some(PushError::Rejected { refname, reason, said: Said::default() });
        }
        Ok(())
    });
    let mut options = git2::PushOptions::new();
    options.remote_callbacks(callbacks);
    let refspecs: Vec<String> = [Some(refs.source), refs.build]
        .into_iter()
        .flatten()
        .map(|update| format!("+{}:{}", update.sha, update.refname))
        .collect();
    remote.push(&refspecs, Some(&mut options)).map_err(PushError::Libgit2)?;
    let rejection = rejected.lock().unwrap().take();
    match rejection {
        Some(rejection) => Err(rejection),
        None => Ok(objects.load(Ordering::Relaxed)),
    }
}

fn register() {
    REGISTER.call_once(|| {
        // SAFETY: registration happens once, before any push uses the scheme, and the factory
        // is `Send + Sync` and lives for the rest of the process, as libgit2 requires.
        let result =
            unsafe { git2::transport::register(SCHEME, |remote| Transport::smart(remote, false, Subtransport)) };
        result.expect("registering the xtask-deploy transport once cannot fail");
    });
}

struct Subtransport;

impl SmartSubtransport for Subtransport {
    fn action(&self, url: &str, action: Service) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        if action != Service::ReceivePackLs {
            return Err(git2::Error::from_str("the xtask-deploy tunnel only pushes"));
        }
        let token = url
            .strip_prefix(&format!("{SCHEME}://"))
            .and_then(|token| token.parse::<u64>().ok())
            .ok_or_else(|| git2::Error::from_str("malformed xtask-deploy tunnel URL"))?;
        let pending = PENDING
            .lock()
            .unwrap()
            .as_mut()
            .and_then(|table| table.remove(&token))
            .ok_or_else(|| git2::Error::from_str("no tunnel is open for this push"))?;
        // libgit2 reports its own progress (see `libgit2_push`).
        let mut stream = Stream { channel: pending.channel, bytes_sent: pending.bytes_sent, wrote: |_| {} };
        stream
            .write_all(&pending.request)
            .map_err(|err| git2::Error::from_str(&format!("cannot reach the git daemon: {err}")))?;
        Ok(Box::new(stream))
    }

    fn close(&self) -> Result<(), git2::Error> {
        Ok(())
    }
}
