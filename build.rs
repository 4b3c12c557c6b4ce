//! Hashes the sources that define what crosses the master/child channel into the build id the
//! two sides exchange first (`src/ipc/hello.rs`): a reload refuses workers of another build.
//! Hashing these sources (not the whole binary) lets a reload bring in worker fixes while the
//! channel stays the same, and refuses one whose channel might not.

use std::fs;
use std::path::{Path, PathBuf};

/// Every type sent over the channel, and everything those files use from the crate (a test in
/// `src/ipc/hello.rs` checks that closure), plus the encoder's crates from Cargo.lock.
const CHANNEL_SOURCES: &[&str] = &[
    "src/ipc.rs",
    "src/ipc",
    "src/model.rs",
    "src/config",
    "src/net",
    "src/protocol",
    "src/secret.rs",
];
const ENCODER_CRATES: &[&str] = &["postcard", "serde", "serde_derive"];

fn main() {
    let mut files = Vec::new();
    for source in CHANNEL_SOURCES {
        println!("cargo:rerun-if-changed={source}");
        collect(Path::new(source), &mut files);
    }
    files.sort();
    let mut hash = Fnv::default();
    for file in &files {
        hash.write(file.to_string_lossy().as_bytes());
        // An unreadable file would be a build error anyway; hash what there is.
        hash.write(&fs::read(file).unwrap_or_default());
    }
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = fs::read_to_string("Cargo.lock").unwrap_or_default();
    for package in lock.split("[[package]]") {
        let name = package
            .lines()
            .find_map(|l| l.strip_prefix("name = "))
            .map(|n| n.trim_matches('"'));
        if name.is_some_and(|n| ENCODER_CRATES.contains(&n)) {
            hash.write(package.as_bytes());
        }
    }
    println!("cargo:rustc-env=WSPUSH_CHANNEL_HASH={:016x}", hash.0);
    println!(
        "cargo:rustc-env=WSPUSH_CHANNEL_SOURCES={}",
        CHANNEL_SOURCES.join(":")
    );
}

/// The `.rs` files at `path` (a file, or a directory searched recursively).
fn collect(path: &Path, files: &mut Vec<PathBuf>) {
    if path.is_file() {
        files.push(path.to_owned());
        return;
    }
    let Ok(entries) = fs::read_dir(path) else {
        return;
    };
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir() || p.extension().is_some_and(|e| e == "rs") {
            collect(&p, files);
        }
    }
}

/// FNV-1a, 64 bits: stable across toolchains (std's hasher is not promised to be).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }
}
