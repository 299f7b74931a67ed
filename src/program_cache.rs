//! Sealed programs kept in the run store, so `flowc resume` (and a worker
//! that claims a submitted run again) runs the program without parsing,
//! lowering and checking its files again: for a large program that is most
//! of a resume's time.
//!
//! A kept program is the `exec::Program` that `check` sealed, in postcard's
//! binary form, behind a header that says what it was compiled from: the
//! flowc executable that compiled it, every file the compilation read (by
//! path, with a hash of its text) and the run fingerprint of the program.
//! It is found by [`key`]: the executable, the root file's path and the
//! hash of its text. It is used only when the executable is the same and
//! every file it lists still holds the same text, so it is the program a
//! compilation of those files would give; anything else (another flowc, a
//! changed file, a damaged or unreadable entry) is a [`Miss`], and the
//! caller compiles as if nothing were kept. The caller still compares the
//! kept fingerprint with the run's, so a resume refuses a changed program
//! exactly as it does after compiling.

use std::collections::BTreeMap;
use std::hash::Hasher as _;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::exec;

/// What a kept program was compiled from and by; read before the program,
/// which is decoded only when every part of it still holds.
#[derive(Serialize, Deserialize)]
struct Header {
    /// The executable that encoded it ([`build`]).
    build: String,
    /// Every file the compilation read: its path and the hash of its text.
    files: Vec<(String, u64)>,
    /// The program's run fingerprint, as JSON text.
    fingerprint: String,
    /// The hash of the fingerprint and of the encoded program that follows
    /// the header: a damaged entry is never read as some other program.
    checksum: u64,
}

/// A kept program that still holds.
#[derive(Debug)]
pub struct CachedProgram {
    pub program: exec::Program,
    /// The run fingerprint it was compiled with (`run::fingerprint`).
    pub fingerprint: Value,
}

/// Why a kept program is not used (the caller compiles instead).
#[derive(Debug, PartialEq, Eq)]
pub enum Miss {
    /// Another flowc executable encoded it.
    Build,
    /// A file it was compiled from is gone or holds other text now.
    Changed(String),
    /// The entry does not decode (damaged, or of a format this flowc does
    /// not read).
    Damaged(String),
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Miss::Build => f.write_str("another flowc compiled it"),
            Miss::Changed(path) => write!(f, "{path} changed"),
            Miss::Damaged(why) => write!(f, "it is damaged ({why})"),
        }
    }
}

/// The format of an entry; part of [`build`], so a change never reads an
/// older entry.
const FORMAT: u32 = 3;

/// Which executable this is: its version, its size and when it was built
/// (its file's modification time). A kept program is read only by the
/// executable that wrote it, so a rebuilt flowc, whose types may encode
/// differently, compiles again. `None` when the executable cannot be
/// looked at: then nothing is kept or read.
fn build() -> Option<&'static str> {
    static BUILD: OnceLock<Option<String>> = OnceLock::new();
    BUILD
        .get_or_init(|| {
            let exe = std::env::current_exe().ok()?;
            let meta = std::fs::metadata(exe).ok()?;
            let modified = meta
                .modified()
                .ok()?
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?;
            Some(format!(
                "flowc {} format {FORMAT} exe {} {}.{:09}",
                env!("CARGO_PKG_VERSION"),
                meta.len(),
                modified.as_secs(),
                modified.subsec_nanos()
            ))
        })
        .as_deref()
}

/// A fast hash, stable within one executable (all a kept program needs:
/// [`build`] ties every entry to one).
fn hash(bytes: &[u8]) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    h.write(bytes);
    h.write_usize(bytes.len());
    h.finish()
}

/// What [`Header::checksum`] holds.
fn checksum(fingerprint: &str, body: &[u8]) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    h.write_u64(hash(fingerprint.as_bytes()));
    h.write_u64(hash(body));
    h.finish()
}

/// Where the program compiled from `root` (the canonical path of the file
/// a run names, or a submitted program's root) holding `text` is kept;
/// `None` when nothing can be kept (see [`build`]).
pub fn key(root: &str, text: &str) -> Option<String> {
    let build = build()?;
    let mut h = rustc_hash::FxHasher::default();
    h.write(build.as_bytes());
    h.write_u8(0);
    h.write(root.as_bytes());
    h.write_u8(0);
    h.write_u64(hash(text.as_bytes()));
    Some(format!("{:016x}{:016x}", h.finish(), hash(root.as_bytes())))
}

/// The entry to keep for `program`, compiled from `files` (every file the
/// compilation read, by path, as `Loader::recorded` or a snapshot holds
/// them), whose run fingerprint is `fingerprint`; `None` when nothing can be
/// kept.
pub fn encode(
    program: &exec::Program,
    fingerprint: &Value,
    files: &BTreeMap<String, String>,
) -> Option<Vec<u8>> {
    let build = build()?.to_string();
    let body = postcard::to_allocvec(program).ok()?;
    let fingerprint = fingerprint.to_string();
    let header = Header {
        build,
        files: files
            .iter()
            .map(|(path, text)| (path.clone(), hash(text.as_bytes())))
            .collect(),
        checksum: checksum(&fingerprint, &body),
        fingerprint,
    };
    let mut bytes = postcard::to_allocvec(&header).ok()?;
    bytes.extend_from_slice(&body);
    Some(bytes)
}

/// The kept program in `bytes`, if it still holds: `read` gives the text
/// each file it lists holds now (`None`: unreadable or gone).
pub fn decode(
    bytes: &[u8],
    read: &mut dyn FnMut(&str) -> Option<String>,
) -> Result<CachedProgram, Miss> {
    let (header, body) = postcard::take_from_bytes::<Header>(bytes)
        .map_err(|e| Miss::Damaged(format!("its header: {e}")))?;
    if Some(header.build.as_str()) != build() {
        return Err(Miss::Build);
    }
    for (path, expected) in &header.files {
        match read(path) {
            Some(text) if hash(text.as_bytes()) == *expected => {}
            _ => return Err(Miss::Changed(path.clone())),
        }
    }
    if checksum(&header.fingerprint, body) != header.checksum {
        return Err(Miss::Damaged("its checksum differs".into()));
    }
    let fingerprint = serde_json::from_str(&header.fingerprint)
        .map_err(|e| Miss::Damaged(format!("its fingerprint: {e}")))?;
    let program =
        postcard::from_bytes(body).map_err(|e| Miss::Damaged(format!("its program: {e}")))?;
    Ok(CachedProgram {
        program,
        fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{compile, Input};

    const PROGRAM: &str = r#"
use std.models.{openai}

type Scored { name: string, score: int }

model fast = openai("gpt-4o-mini") { temperature: 0, max_tokens: 100 }

tool items(q: string) -> { items: [string] len ..8 } {
  http GET "{env.TOOLS_URL}/items?q={q}"
  effect read
  timeout 5s
}

flow rank(q: string) -> [Scored] {
  budget { tokens 10k, steps 50 }
  let found = items(q: q)
  let scored = for x in found.items parallel 4 {
    llm fast -> Scored { prompt "Score {x}" }
  }
  let ok = approve publish { show scored }
  return ok
}
"#;

    /// The entry of [`PROGRAM`] as `/p/rank.flow`, and the program's text
    /// as sealed (its `Debug` form).
    fn kept() -> (Vec<u8>, String, BTreeMap<String, String>) {
        let c = compile(&[Input::Text {
            name: "rank.flow".into(),
            bytes: PROGRAM.as_bytes().to_vec(),
        }])
        .expect("compiles");
        let checked = c.program.as_ref().expect("checks");
        let fingerprint = crate::run::fingerprint::fingerprint(&c.sources, &c.modules);
        let files = BTreeMap::from([("/p/rank.flow".to_string(), PROGRAM.to_string())]);
        let bytes = encode(checked.sealed(), &fingerprint, &files).expect("encodes");
        (bytes, format!("{:?}", checked.sealed()), files)
    }

    #[test]
    fn a_kept_program_reads_back_as_sealed_while_its_files_are_unchanged() {
        let (bytes, sealed, files) = kept();
        let back = decode(&bytes, &mut |p: &str| files.get(p).cloned()).expect("decodes");
        assert_eq!(format!("{:?}", back.program), sealed);
        let changed = PROGRAM.replace("Score {x}", "Rate {x}");
        assert_eq!(
            decode(&bytes, &mut |_: &str| Some(changed.clone())).map(|_| ()),
            Err(Miss::Changed("/p/rank.flow".into()))
        );
        assert_eq!(
            decode(&bytes, &mut |_: &str| None).map(|_| ()),
            Err(Miss::Changed("/p/rank.flow".into()))
        );
    }

    /// Every damaged entry (each byte flipped, each truncation) is a miss,
    /// never a panic and never some other program.
    #[test]
    fn a_damaged_entry_is_a_miss() {
        let (bytes, _, files) = kept();
        let mut read = |p: &str| files.get(p).cloned();
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x5a;
            assert!(decode(&damaged, &mut read).is_err(), "byte {i} flipped");
        }
        for len in (0..bytes.len()).step_by(7) {
            assert!(decode(&bytes[..len], &mut read).is_err(), "cut at {len}");
        }
    }

    /// An entry of another format (or another executable) is never decoded
    /// as this one's: its header names the build that wrote it, and the
    /// format is part of it.
    #[test]
    fn an_entry_of_another_format_is_a_miss() {
        let (bytes, _, files) = kept();
        let (mut header, body) = postcard::take_from_bytes::<Header>(&bytes).expect("a header");
        assert!(header.build.contains(&format!(" format {FORMAT} ")));
        header.build = header.build.replace(
            &format!(" format {FORMAT} "),
            &format!(" format {} ", FORMAT - 1),
        );
        let mut older = postcard::to_allocvec(&header).expect("encodes");
        older.extend_from_slice(body);
        assert_eq!(
            decode(&older, &mut |p: &str| files.get(p).cloned()).map(|_| ()),
            Err(Miss::Build)
        );
    }

    #[test]
    fn the_key_names_the_root_and_its_text() {
        let a = key("/p/rank.flow", PROGRAM).expect("a key");
        assert_eq!(Some(a.clone()), key("/p/rank.flow", PROGRAM));
        assert_ne!(Some(a.clone()), key("/q/rank.flow", PROGRAM));
        assert_ne!(Some(a), key("/p/rank.flow", &format!("{PROGRAM}\n")));
    }
}
