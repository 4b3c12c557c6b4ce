//! A task worker process: reads tasks from standard input, answers on standard output. It may
//! block (stores, network); the master never does. It exits when the master's end closes.

pub mod subscriber;
mod tasks;

use crate::ipc::{self, IpcError, ToMaster, ToWorker};
use crate::store::StoreError;
use std::io::{self, BufReader, BufWriter, Write};

/// The largest frame buffer a worker keeps between tasks.
const FRAME_KEEP: usize = 2 * 1024 * 1024;

#[derive(Debug)]
pub enum WorkerError {
    Channel(IpcError),
    /// The master is another build: nothing it sends can be trusted to decode.
    OtherBuild(ipc::hello::HelloError),
    NoConfig,
    Store(StoreError),
}

impl std::fmt::Display for WorkerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerError::Channel(e) => write!(f, "{e}"),
            WorkerError::OtherBuild(e) => write!(f, "the master's hello: {e}"),
            WorkerError::NoConfig => {
                f.write_str("the first frame from the master was not the configuration")
            }
            WorkerError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for WorkerError {}

impl From<IpcError> for WorkerError {
    fn from(e: IpcError) -> Self {
        WorkerError::Channel(e)
    }
}

/// A child's start on its channel: its hello goes out first, then it reads the master's and
/// checks it (a master of another build is left before anything it sent is decoded), then the
/// resolved configuration (never re-read from a file that may have changed since the master
/// started).
pub fn handshake(
    input: &mut impl io::Read,
    output: &mut impl Write,
) -> Result<Box<crate::config::Config>, WorkerError> {
    let mut hello = Vec::new();
    ipc::hello::encode(&mut hello);
    output.write_all(&hello).map_err(IpcError::Io)?;
    output.flush().map_err(IpcError::Io)?;
    let mut frame = Vec::new();
    if !ipc::read_frame_blocking(input, &mut frame)? {
        return Err(WorkerError::NoConfig);
    }
    ipc::hello::check(&frame).map_err(WorkerError::OtherBuild)?;
    if !ipc::read_frame_blocking(input, &mut frame)? {
        return Err(WorkerError::NoConfig);
    }
    match ipc::decode::<ToWorker>(&frame)? {
        ToWorker::Config(c) => Ok(c),
        _ => Err(WorkerError::NoConfig),
    }
}

pub fn run() -> Result<(), WorkerError> {
    // If the master is killed outright, do not linger as an orphan.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
    let mut input = BufReader::with_capacity(256 * 1024, io::stdin().lock());
    let mut output = BufWriter::with_capacity(256 * 1024, io::stdout().lock());

    let config = handshake(&mut input, &mut output)?;
    if crate::logging::redirect_to(&config.server.log_file).is_err() {
        // Standard error still reaches the master's log.
    }
    crate::logging::init("worker", &config.server.log_level);

    let mut stores = match tasks::Stores::open(&config) {
        Ok(s) => s,
        Err(e) => {
            send(
                &mut output,
                &ToMaster::Fatal {
                    message: e.to_string(),
                },
            )?;
            return Err(WorkerError::Store(e));
        }
    };
    // Logged before the master hears of it, so that the master's own "ready" line comes after
    // every worker's: log rotation right after start-up then loses no line to the old file.
    log::debug!("task worker ready");
    send(
        &mut output,
        &ToMaster::Ready {
            pid: std::process::id(),
        },
    )?;

    let mut frame = Vec::new();
    let mut answer = Vec::new();
    while ipc::read_frame_blocking(&mut input, &mut frame)? {
        match ipc::decode::<ToWorker>(&frame)? {
            ToWorker::Task { id, body } => {
                let reply = match ipc::decode(body) {
                    Ok(task) => stores.handle(task),
                    Err(e) => {
                        log::error!("task {} is undecodable: {e}", id.0);
                        ipc::Reply::Failed(ipc::TaskFailure::StoreRefused)
                    }
                };
                answer.clear();
                ipc::encode(&ToMaster::Done { id, reply }, &mut answer)?;
                output.write_all(&answer).map_err(IpcError::Io)?;
            }
            ToWorker::ReopenLog => {
                if let Err(e) = crate::logging::redirect_to(&config.server.log_file) {
                    log::error!("cannot reopen {}: {e}", config.server.log_file.display());
                }
            }
            ToWorker::Config(_) => log::warn!("ignoring a second configuration frame"),
        }
        // Answer in batches: flush only once no further task is already waiting.
        if input.buffer().is_empty() {
            output.flush().map_err(IpcError::Io)?;
        }
        // A large task leaves a large buffer behind; an idle worker gives it back.
        if frame.capacity() > FRAME_KEEP {
            frame = Vec::new();
            crate::trim::trim_allocator();
        }
    }
    output.flush().map_err(IpcError::Io)?;
    log::debug!("master closed the channel; task worker exits");
    Ok(())
}

fn send(out: &mut impl Write, msg: &ToMaster) -> Result<(), IpcError> {
    let mut frame = Vec::new();
    ipc::encode(msg, &mut frame)?;
    out.write_all(&frame)?;
    out.flush()?;
    Ok(())
}
