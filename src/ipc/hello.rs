//! The first frame each side of a child channel sends: its build id. Its shape never changes
//! (the channel's length prefix, a magic, the id as text), so that a master and a child of
//! different builds find out before either decodes a frame the other may encode differently.
//! The master sends it ahead of the configuration; a child sends it before anything else.
//!
//! The id is the crate version, `IPC_VERSION`, and a hash of the sources of every type that
//! crosses the channel (computed by `build.rs`): it changes whenever the channel's format could
//! have, and not for a fix elsewhere, so that a reload can still bring those in.

use std::fmt;

/// Raised by hand when the channel's meaning changes while its types' sources do not (say, a
/// worker that builds the frames it hands over in another shape, from code outside them).
pub const IPC_VERSION: u32 = 1;

/// Starts every hello frame; no frame of the channel's vocabulary starts with it (postcard
/// puts a small variant index first).
const MAGIC: &[u8] = b"wspush-hello\0";

/// This build's id: `<crate version>/ipc<IPC_VERSION>/<channel sources hash>`.
pub fn build_id() -> String {
    format!(
        "{}/ipc{IPC_VERSION}/{}",
        env!("CARGO_PKG_VERSION"),
        env!("WSPUSH_CHANNEL_HASH")
    )
}

/// Why a peer's first frame is not a hello of this build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloError {
    /// Its first frame was something else: a build from before the handshake.
    Missing,
    /// Another build, whose channel may differ.
    OtherBuild { ours: String, theirs: String },
}

impl fmt::Display for HelloError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HelloError::Missing => {
                f.write_str("it sent no build id (a build without the handshake)")
            }
            HelloError::OtherBuild { ours, theirs } => {
                write!(f, "it is build {theirs}, expected build {ours}")
            }
        }
    }
}

impl std::error::Error for HelloError {}

/// Appends this build's hello frame to `out`.
pub fn encode(out: &mut Vec<u8>) {
    encode_id(&build_id(), out);
}

/// Appends a hello frame for `id` (another build's, in the tests).
pub fn encode_id(id: &str, out: &mut Vec<u8>) {
    let len = (MAGIC.len() + id.len()) as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(id.as_bytes());
}

/// Whether a frame's body is a hello (of any build).
pub fn is_hello(body: &[u8]) -> bool {
    body.starts_with(MAGIC)
}

/// Checks a peer's first frame's body against this build.
pub fn check(body: &[u8]) -> Result<(), HelloError> {
    let Some(id) = body.strip_prefix(MAGIC) else {
        return Err(HelloError::Missing);
    };
    let ours = build_id();
    if id == ours.as_bytes() {
        Ok(())
    } else {
        Err(HelloError::OtherBuild {
            ours,
            theirs: String::from_utf8_lossy(id).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::{self, FrameReader, ToMaster};

    fn body_of(frame: &[u8]) -> Vec<u8> {
        let mut reader = FrameReader::default();
        assert!(!reader.fill(&mut &frame[..]).expect("read"));
        reader
            .next_frame()
            .expect("frame")
            .expect("a whole frame")
            .to_vec()
    }

    #[test]
    fn a_hello_of_this_build_passes_and_another_build_s_is_named() {
        let mut ours = Vec::new();
        encode(&mut ours);
        assert_eq!(check(&body_of(&ours)), Ok(()));
        let mut theirs = Vec::new();
        encode_id("0.0.9/ipc7/feed", &mut theirs);
        let err = check(&body_of(&theirs)).expect_err("another build");
        assert_eq!(
            err,
            HelloError::OtherBuild {
                ours: build_id(),
                theirs: "0.0.9/ipc7/feed".into()
            }
        );
        assert!(err.to_string().contains("0.0.9/ipc7/feed"), "{err}");
    }

    #[test]
    fn a_frame_of_the_vocabulary_is_not_a_hello() {
        let mut frame = Vec::new();
        ipc::encode(&ToMaster::Ready { pid: 7 }, &mut frame).expect("encode");
        let body = body_of(&frame);
        assert!(!is_hello(&body));
        assert_eq!(check(&body), Err(HelloError::Missing));
    }

    #[test]
    fn the_build_id_names_the_version_the_ipc_version_and_a_hash() {
        let id = build_id();
        let parts: Vec<&str> = id.split('/').collect();
        assert_eq!(parts[0], env!("CARGO_PKG_VERSION"));
        assert_eq!(parts[1], format!("ipc{IPC_VERSION}"));
        assert_eq!(parts[2].len(), 16, "{id}");
    }

    /// The hash covers the files of every type on the channel; those files may only use crate
    /// modules that are hashed too, or a change there could alter the channel unnoticed.
    #[test]
    fn every_crate_module_the_channel_sources_use_is_hashed_too() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let hashed: Vec<&str> = env!("WSPUSH_CHANNEL_SOURCES").split(':').collect();
        let module_of = |source: &str| {
            let s = source.trim_start_matches("src/").trim_end_matches(".rs");
            s.split('/').next().unwrap_or(s).to_owned()
        };
        let hashed_modules: Vec<String> = hashed.iter().map(|s| module_of(s)).collect();
        let mut files = Vec::new();
        for source in &hashed {
            let path = root.join(source);
            if path.is_file() {
                files.push(path);
            } else {
                let mut dirs = vec![path];
                while let Some(dir) = dirs.pop() {
                    for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
                        let p = entry.path();
                        if p.is_dir() {
                            dirs.push(p);
                        } else if p.extension().is_some_and(|e| e == "rs") {
                            files.push(p);
                        }
                    }
                }
            }
        }
        assert!(files.len() >= hashed.len(), "{files:?}");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read source");
            for (at, _) in text.match_indices("crate::") {
                let module: String = text[at + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                // Empty: this test's own text.
                assert!(
                    module.is_empty() || hashed_modules.contains(&module),
                    "{} uses the crate module `{module}`, which build.rs does not hash",
                    file.display()
                );
            }
        }
    }
}
