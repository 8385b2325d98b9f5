//! The packs of one deploy to several servers, each made once and sent to every server that
//! needs it.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::pack::{send_pack, PackSpec};
use crate::transport::error::PushError;
use crate::transport::OnceByKey;
use super::{PackProgress, Sent};

/// The thin packs of one deploy to several servers. Servers in the same state advertise the same
/// tips and need the same pack: it is made by one `git pack-objects` run, spooled to a temporary
/// file (deleted when the last handle closes), and sent from there to each of them.
#[derive(Default)]
pub struct SharedPacks {
    /// By repository, commit, bases and delta format: each pack once made (or the error that
    /// made it fail), shared by every push that needs it.
    packs: OnceByKey<Result<Arc<Spooled>, Arc<PushError>>>,
}

/// A pack on disk: its bytes, and what it holds.
pub(super) struct Spooled {
    file: File,
    sent: Sent,
}

impl SharedPacks {
    /// How many packs were made so far.
    #[cfg(any(test, feature = "testkit"))]
    pub fn made(&self) -> usize {
        self.packs.made()
    }

    /// The pack of `spec`, made now unless an earlier push made it.
    pub(super) fn pack(&self, repo: &git2::Repository, spec: &PackSpec) -> Result<Arc<Spooled>, PushError> {
        let mut bases = spec.haves.clone();
        bases.sort_unstable();
        bases.dedup();
        let key = format!(
            "{}\n{}\n{}\n{}\n{}\n{}\n{}",
            repo.path().display(),
            spec.source,
            spec.build.unwrap_or("-"),
            spec.ofs_delta,
            bases.join(" "),
            spec.shallow.join(" "),
            spec.cut.join(" ")
        );
        self.packs
            .get_or_make(key, || {
                let mut file = tempfile::tempfile().map_err(PushError::SpoolFile)?;
                let sent = send_pack(repo, spec, &mut file, &mut |_| {})?;
                Ok(Arc::new(Spooled { file, sent }))
            })
            .map_err(PushError::SharedPack)
    }
}

impl Spooled {
    /// Writes the whole pack into `stream` (reading at offsets: several pushes read it at once).
    pub(super) fn send<W: Write>(&self, stream: &mut W, pack: &mut dyn FnMut(PackProgress)) -> Result<Sent, PushError> {
        let size = self.file.metadata().map_err(PushError::ReadSpool)?.len();
        pack(PackProgress::Starts { objects: self.sent.objects, bytes: Some(size) });
        let mut buffer = vec![0u8; 64 * 1024];
        let mut offset = 0;
        loop {
            let read = self.file.read_at(&mut buffer, offset).map_err(PushError::ReadSpool)?;
            if read == 0 {
                break;
            }
            stream.write_all(&buffer[..read]).map_err(PushError::Lost)?;
            offset += read as u64;
        }
        stream.flush().map_err(PushError::Lost)?;
        Ok(self.sent)
    }
}
